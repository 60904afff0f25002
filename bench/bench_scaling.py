"""Data-parallel scaling on CPU: 1 process vs 2 (torchrun, gloo, one thread each).

Three measurements, each with the same *global* batch at every world size (what the loop
guarantees gives the same update):

- **SFT** (the shared loop on a chat-shaped batch, preset ``--preset``, default ``tiny``):
  training tokens/s over ``--steps`` timed optimizer steps after one warm-up step;
- **RL** (GRPO on the world's prompts, the whole iteration: sampling, scoring, reference
  log-probs, update): completions/s;
- **memory per rank, DDP vs FSDP2** on the ~25M ``small`` preset: bytes of parameters,
  gradients and AdamW state each rank holds (exact, summed from its local tensors/shards),
  and the peak RSS of the process (includes Python/PyTorch, ~0.4 GB, and the full model each
  rank builds before FSDP shards it).

Scaling efficiency = throughput(2) / (2 x throughput(1)). Each figure is printed with the CPU
use of the run (process-tree CPU seconds / wall seconds; ~1.0 for 1 process and ~2.0 for 2 on
an idle 2-core machine; clearly lower means another job shared the cores and the figure is void).

    .venv/bin/python bench/bench_scaling.py [--steps 8] [--preset tiny] [--skip-rl]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import machine_line

HERE = Path(__file__).resolve()


# --------------------------------------------------------------------------- worker (per rank)


def worker(args: argparse.Namespace) -> None:
    """Runs under torchrun (or alone): timed SFT-style steps of the shared loop."""
    from rlalign.dist import barrier, init_distributed, shutdown_distributed
    from rlalign.lm.models import create_model
    from rlalign.train.config import TrainingConfig
    from rlalign.train.loop import Trainer
    from rlalign.train.losses import causal_lm_loss, count_label_tokens

    torch.set_num_threads(1)
    rank = init_distributed()
    model = create_model(args.preset, 4096, seed=0, max_position_embeddings=512)
    cfg = TrainingConfig(
        data="-",
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=args.batch // rank.world_size,
        global_batch_size=args.batch,
        max_steps=args.steps + 1,
        learning_rate=1e-4,
        distributed=args.strategy,
        disable_tqdm=True,
        bf16=False,
    )

    class Blocks:  # random tokens: throughput does not depend on the text
        generator = torch.Generator().manual_seed(0)

        def __iter__(self):
            return self

        def __next__(self):
            ids = torch.randint(0, 4096, (cfg.per_device_train_batch_size, args.length),
                                generator=self.generator)  # fmt: skip
            return {"input_ids": ids, "labels": ids}

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    trainer = Trainer(model, causal_lm_loss, Blocks(), cfg, count_fn=count_label_tokens)
    trainer.model.train()
    trainer.train_step()  # warm-up (allocations, first collectives)
    barrier()
    cpu0, t0 = time.process_time(), time.perf_counter()
    tokens = 0.0
    for _ in range(args.steps):
        _, items, _, _ = trainer.train_step()
        tokens += float(items)
    barrier()
    wall = time.perf_counter() - t0
    local = trainer.module
    state_bytes = sum(_local_bytes(p) for p in local.parameters())
    state_bytes += sum(_local_bytes(p) for p in local.parameters())  # gradients, same shapes
    for state in trainer.optimizer.state.values():
        state_bytes += sum(_local_bytes(v) for v in state.values() if torch.is_tensor(v))
    report = {
        "rank": rank.rank,
        "tokens_per_s": tokens / wall,
        "cpu_use": (time.process_time() - cpu0) / wall,
        "state_mb": state_bytes / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    from rlalign.dist import all_gather_objects

    reports = all_gather_objects(report)
    if rank.is_main:
        print("RESULT " + json.dumps(reports), flush=True)
    shutdown_distributed()


def _local_bytes(tensor: torch.Tensor) -> int:
    from torch.distributed.tensor import DTensor

    if isinstance(tensor, DTensor):
        tensor = tensor.to_local()
    return tensor.numel() * tensor.element_size()


# ----------------------------------------------------------------------------------- driver


def launch(nproc: int, extra: list[str], module: bool = False) -> tuple[str, float, float]:
    """Run a worker (or ``rlalign`` with ``module``) on ``nproc`` ranks; (stdout, wall, cpu)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    target = ["-m", "rlalign", *extra] if module else [str(HERE), "--worker", *extra]
    if nproc == 1:
        cmd = [sys.executable, *target]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", *target]  # fmt: skip
    before = os.times()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return proc.stdout, wall, cpu / wall


def result_of(stdout: str) -> list[dict]:
    line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def bench_sft(args: argparse.Namespace) -> None:
    print(f"\nSFT-style steps, preset {args.preset}, global batch {args.batch} x {args.length} "
          "tokens, fp32")  # fmt: skip
    rates = {}
    for nproc in (1, 2):
        common = ["--preset", args.preset, "--batch", str(args.batch), "--length", str(args.length),
                  "--steps", str(args.steps), "--strategy", "ddp"]  # fmt: skip
        reports = result_of(launch(nproc, common)[0])
        rates[nproc] = reports[0]["tokens_per_s"]
        cpu = sum(r["cpu_use"] for r in reports)
        print(f"  {nproc} process(es): {rates[nproc]:8.0f} tokens/s   (CPU use {cpu:.2f})")
    print(f"  scaling efficiency 2 vs 1: {rates[2] / (2 * rates[1]):.0%}")


def bench_memory(args: argparse.Namespace) -> None:
    print("\nmemory per rank, preset small (~25M), 2 ranks, fp32 + AdamW")
    for strategy in ("ddp", "fsdp"):
        common = ["--preset", "small", "--batch", "4", "--length", "128", "--steps", "1",
                  "--strategy", strategy]  # fmt: skip
        reports = result_of(launch(2, common)[0])
        state = max(r["state_mb"] for r in reports)
        rss = max(r["peak_rss_mb"] for r in reports)
        print(f"  {strategy:4s}: params+grads+Adam state {state:7.1f} MB/rank, "
              f"peak RSS {rss:7.1f} MB/rank")  # fmt: skip


def bench_rl(args: argparse.Namespace) -> None:
    print("\nRL (GRPO, world prompts, 8 prompts x 8 completions x 32 tokens per step), preset "
          "tiny, random init, fp32")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        _tiny_model_dir(model)
        rates = {}
        for nproc in (1, 2):
            out = Path(tmp) / f"rl{nproc}"
            extra = ["rl", f"model={model}", f"output_dir={out}", "prompts_per_iteration=8",
                     "num_generations=8", "max_completion_length=32", "global_batch_size=64",
                     f"per_device_train_batch_size={64 // nproc}", f"max_steps={args.steps + 1}",
                     "eval_prompts=0", "save_steps=1000", "logging_steps=1", "disable_tqdm=true",
                     "rollout_bf16=false", "bf16=false", "loss_type=grpo"]  # fmt: skip
            _, _, cpu = launch(nproc, extra, module=True)
            rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
            timed = rows[1:]  # the first step includes start-up
            rates[nproc] = sum(r["items_per_s"] for r in timed) / len(timed)
            print(f"  {nproc} process(es): {rates[nproc]:8.1f} completions/s   (CPU use {cpu:.2f}"
                  ", whole run incl. start-up)")  # fmt: skip
        print(f"  scaling efficiency 2 vs 1: {rates[2] / (2 * rates[1]):.0%}")


def _tiny_model_dir(path: Path) -> None:
    from rlalign.data.world import World, WorldConfig
    from rlalign.lm.models import create_model
    from rlalign.lm.tokenizer import train_tokenizer

    world = World(WorldConfig())
    texts = world.corpus() + [
        m["content"] for r in world.sft_conversations() for m in r["messages"]
    ]
    tokenizer = train_tokenizer(texts, 1024)
    model = create_model("tiny", len(tokenizer), seed=0, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--strategy", default="ddp")
    parser.add_argument("--skip-rl", action="store_true")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    print(machine_line(1))
    print(f"{os.cpu_count()} CPUs, gloo, 1 thread per process")
    bench_sft(args)
    if not args.skip_rl:
        bench_rl(args)
    bench_memory(args)


if __name__ == "__main__":
    main()
