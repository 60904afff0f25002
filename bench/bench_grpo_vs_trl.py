"""Seconds per GRPO step: rlalign vs TRL's GRPOTrainer, same model, same batch, same machine.

A randomly initialised Qwen2 (~5.4M parameters, built here) and a tokenizer trained on the
built-in world; 8 prompts x 4 generations, 32 new tokens, beta = 0.04 (so both keep a
reference model), one optimizer step per generation batch, fp32 on CPU. Each library runs
``--steps`` steps; the time per step is measured between the end of step 1 and the end of the
last step (model loading, compilation of the first step and evaluation are excluded), with the
CPU use (process CPU time / wall time) of that window beside it: ~2.0 = an idle 2-core machine.

    pip install -e '.[bench]'
    python bench/bench_grpo_vs_trl.py [--steps 6] [--threads 2] [--breakdown]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import torch

PROMPTS = [f"Tell me about the country number {i}." for i in range(8)]


def reward_len(prompts, completions, **kwargs):
    """A cheap reward, the same for both: longer answers (in characters) score higher."""
    return [min(len(c), 200) / 200.0 for c in completions]


def build_model_dir(root: Path) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlalign.data.world import World
    from rlalign.lm.tokenizer import train_tokenizer

    world = World()
    texts = world.corpus() + [
        m["content"] for r in world.sft_conversations() for m in r["messages"]
    ]
    tok = train_tokenizer(texts, vocab_size=4096)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=256,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=768,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    path = root / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    n = sum(p.numel() for p in model.parameters())
    print(f"model: Qwen2, {n / 1e6:.1f}M parameters, vocabulary {len(tok)}")
    return path


class StepClock:
    """End-of-step timestamps (wall and process CPU)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def tick(self) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def per_step(self) -> tuple[float, float]:
        steps = len(self.wall) - 1
        wall = (self.wall[-1] - self.wall[0]) / steps
        cpu = (self.cpu[-1] - self.cpu[0]) / (self.wall[-1] - self.wall[0])
        return wall, cpu


def run_trl(model_dir: Path, out: Path, steps: int, bf16: bool) -> StepClock:
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    clock = StepClock()

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.tick()

    args = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=32,
        gradient_accumulation_steps=1,
        num_generations=4,
        max_completion_length=32,
        beta=0.04,
        learning_rate=1e-5,
        max_steps=steps,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=bf16,
        seed=0,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=reward_len,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS * 64}),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        callbacks=[Clock()],
    )
    trainer.train()
    return clock


def run_rlalign(model_dir: Path, out: Path, steps: int, reward_file: Path, bf16: bool) -> StepClock:
    from rlalign.train import loop
    from rlalign.train.rl import run_rl
    from rlalign.train.rl_config import RLConfig

    prompts = out / "prompts.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    clock = StepClock()
    original = loop.Trainer.train_step

    def timed(self):
        result = original(self)
        clock.tick()
        return result

    loop.Trainer.train_step = timed
    try:
        run_rl(
            RLConfig(
                model=str(model_dir),
                data=str(prompts),
                output_dir=str(out / "run"),
                algorithm="grpo",
                prompts_per_iteration=8,
                num_generations=4,
                per_device_train_batch_size=32,
                max_completion_length=32,
                beta=0.04,
                learning_rate=1e-5,
                max_steps=steps,
                reward_funcs=[f"{reward_file}:reward_len"],
                reward_timeout=60,
                eval_prompts=0,
                save_steps=10_000,
                save_rollouts=0,
                disable_tqdm=True,
                bf16=bf16,
                device="cpu",
            )
        )
    finally:
        loop.Trainer.train_step = original
    return clock


class Breakdown:
    """Process CPU seconds per phase of rlalign's step (``--breakdown``): the sampler, the
    reference forward, the policy's loss forward, ``backward`` and the optimizer."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}
        self._undo: list[tuple[object, str, object]] = []

    def timed(self, fn, name: str):
        def wrapper(*args, **kwargs):
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds.setdefault(name, []).append(time.process_time() - start)

        return wrapper

    def patch(self, owner: object, attr: str, name: str) -> None:
        original = getattr(owner, attr)
        self._undo.append((owner, attr, original))
        setattr(owner, attr, self.timed(original, name))

    def __enter__(self) -> Breakdown:
        from rlalign.train import rl, rollout

        make_loss_fn = rl.make_loss_fn
        self._undo.append((rl, "make_loss_fn", make_loss_fn))
        rl.make_loss_fn = lambda cfg, has_ref: self.timed(
            make_loss_fn(cfg, has_ref), "policy forward + loss"
        )
        self.patch(rollout, "sample", "sample (rollout)")
        self.patch(rollout, "completion_forward", "reference forward")
        self.patch(torch.Tensor, "backward", "backward")
        self.patch(torch.optim.AdamW, "step", "optimizer")
        return self

    def __exit__(self, *exc) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)

    def report(self) -> None:
        print("rlalign, CPU seconds per step (first step excluded):")
        for name, values in self.seconds.items():
            values = values[1:] if len(values) > 1 else values
            print(f"  {name:<24}{sum(values) / len(values):>8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--dtypes", default="fp32,bf16", help="fp32 and/or bf16 (autocast, fp32 master weights)"
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also print rlalign's CPU seconds per phase (sample, reference, forward, backward)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers
    import trl

    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, "
        f"{args.threads} threads; 8 prompts x 4 generations x 32 new tokens, beta 0.04"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_model_dir(root)
        reward_file = root / "reward.py"
        reward_file.write_text(
            "def reward_len(prompts, completions, **kwargs):\n"
            "    return [min(len(c), 200) / 200.0 for c in completions]\n"
        )
        rows = []
        for dtype in args.dtypes.split(","):
            bf16 = dtype == "bf16"
            breakdown = Breakdown() if args.breakdown else None
            with breakdown or contextlib.nullcontext():
                ours = run_rlalign(
                    model_dir, root / f"rlalign-{dtype}", args.steps, reward_file, bf16
                )
            if breakdown is not None:
                print(f"--- {dtype}")
                breakdown.report()
            theirs = run_trl(model_dir, root / f"trl-{dtype}", args.steps, bf16)
            rows.append((dtype, theirs.per_step(), ours.per_step()))
    print(f"{'dtype':<6}{'TRL s/step':>12}{'CPU':>6}{'rlalign s/step':>16}{'CPU':>6}{'ratio':>8}")
    for dtype, (trl_wall, trl_cpu), (ours_wall, ours_cpu) in rows:
        ratio = trl_wall / ours_wall
        print(
            f"{dtype:<6}{trl_wall:>12.3f}{trl_cpu:>6.2f}{ours_wall:>16.3f}{ours_cpu:>6.2f}{ratio:>7.2f}x"
        )


if __name__ == "__main__":
    main()
