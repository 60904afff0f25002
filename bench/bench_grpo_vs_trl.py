"""Seconds per GRPO step: rlalign vs TRL's GRPOTrainer, same model, same batch, same machine.

Randomly initialised Qwen2 models (~5.4M and ~28M parameters, built here) and a tokenizer
trained on the built-in world; 8 prompts x 4 generations, 32 new tokens, beta = 0.04 (so both
keep a reference model), one optimizer step per generation batch, on CPU. Each library runs
``--steps`` steps; the time per step is measured between the end of step 1 and the end of the
last step (model loading, compilation of the first step and evaluation are excluded), with the
CPU use (process CPU time / wall time) of that window beside it: ~2.0 = an idle 2-core machine.

MFU (model-FLOPs utilisation) = a step's useful FLOPs / its seconds / the matmul peak of the
dtype, measured in the same run. Useful FLOPs: 2 N per token for sampling, for the reference
forward and for the policy's forward, 4 N for its backward, so 10 N S per step, with N the
parameters a forward multiplies by and S the tokens a step must process: each prompt's tokens
once (the samples of a prompt share them; rlalign computes a shared prompt once) and every
completion's tokens, padding left out (counted on rlalign's rollouts; TRL is given the same
count).
Attention's own FLOPs are left out (under 10% at these lengths), and so is any pass that
recomputes what an earlier one had: MFU measures the work a step needs, not the work it does.
``--breakdown`` splits rlalign's step into those four phases (wall seconds, and each phase's
MFU on its own FLOPs), plus the optimizer.

    pip install -e '.[bench]'
    python bench/bench_grpo_vs_trl.py [--steps 6] [--threads 2] [--sizes 5M,28M]
        [--dtypes fp32,bf16] [--breakdown]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from machine import bench_dtypes, machine_line, matmul_params, matmul_peak

PROMPTS = [f"Tell me about the country number {i}." for i in range(8)]


def reward_len(prompts, completions, **kwargs):
    """A cheap reward, the same for both: longer answers (in characters) score higher."""
    return [min(len(c), 200) / 200.0 for c in completions]


# (hidden, layers, heads, MLP width) of the Qwen2 models; the vocabulary is the tokenizer's, tied
SIZES = {"5M": (256, 6, 4, 768), "28M": (512, 8, 8, 1280)}


def build_model_dir(root: Path, size: str) -> tuple[Path, int]:
    """The model of ``size`` saved with its tokenizer, and its N (matmul parameters)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlalign.data.world import World
    from rlalign.lm.tokenizer import train_tokenizer

    world = World()
    texts = world.corpus() + [
        m["content"] for r in world.sft_conversations() for m in r["messages"]
    ]
    tok = train_tokenizer(texts, vocab_size=4096)
    hidden, layers, heads, inner = SIZES[size]
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=inner,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    path = root / f"model-{size}"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    n = sum(p.numel() for p in model.parameters())
    print(f"model {size}: Qwen2, {n / 1e6:.1f}M parameters, vocabulary {len(tok)}")
    return path, matmul_params(model)


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


class Phases:
    """Wall seconds per phase of rlalign's step (the sampler, the reference forward, the
    policy's loss forward, ``backward`` and the optimizer; with ``--breakdown``) and the tokens
    of every rollout's sequences (S of the FLOP count; always)."""

    FLOPS_PER_TOKEN = {  # in units of N
        "sample (rollout)": 2,
        "reference forward": 2,
        "policy forward + loss": 2,
        "backward": 4,
    }

    def __init__(self, breakdown: bool) -> None:
        self.breakdown = breakdown
        # phase -> rollout number (1 = the first step's) -> wall seconds
        self.seconds: dict[str, dict[int, float]] = {}
        self.tokens: list[int] = []
        self._undo: list[tuple[object, str, object]] = []

    def timed(self, fn, name: str):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                by_step = self.seconds.setdefault(name, {})
                step = len(self.tokens)  # the sampler counts its rollout before this runs
                by_step[step] = by_step.get(step, 0.0) + time.perf_counter() - start

        return wrapper

    def patch(self, owner: object, attr: str, name: str) -> None:
        original = getattr(owner, attr)
        self._undo.append((owner, attr, original))
        setattr(owner, attr, self.timed(original, name))

    def __enter__(self) -> Phases:
        from rlalign.train import rl, rollout

        sample = rollout.sample

        def counted(*args, **kwargs):
            out = sample(*args, **kwargs)
            # a prompt's tokens once (its samples share them), every completion's tokens
            prompts = int(out.attention_mask[:, : out.prompt_length].sum())
            completions = int(out.completion_mask.sum())
            self.tokens.append(prompts // kwargs.get("num_samples", 1) + completions)
            return out

        self._undo.append((rollout, "sample", sample))
        rollout.sample = counted
        if not self.breakdown:
            return self
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

    def tokens_per_step(self) -> float:
        """S: tokens of a rollout's sequences, the first rollout left out (as its step is)."""
        counts = self.tokens[1:] or self.tokens
        return sum(counts) / len(counts)

    def report(self, n: int, peak: float) -> None:
        s = self.tokens_per_step()
        print(
            f"rlalign, N = {n / 1e6:.2f}M, S = {s:.0f} tokens a step; wall seconds per step "
            "(first step excluded), and MFU of each phase:"
        )
        for name, by_step in self.seconds.items():
            values = [v for step, v in by_step.items() if step > 1] or list(by_step.values())
            per_step = sum(values) / len(values)
            flops = self.FLOPS_PER_TOKEN.get(name, 0) * n * s
            mfu = f"{flops / per_step / peak:>8.1%}" if flops else ""
            print(f"  {name:<24}{per_step:>8.3f}{mfu}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="5M,28M", help=f"model sizes: {', '.join(SIZES)}")
    parser.add_argument(
        "--dtypes",
        default=None,
        help="fp32 and/or bf16 (autocast, fp32 master weights; default: bf16 too where "
        "bf16: auto would choose it here)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also print rlalign's seconds and MFU per phase (sample, reference, forward, "
        "backward, optimizer)",
    )
    args = parser.parse_args()
    unknown = [size for size in args.sizes.split(",") if size not in SIZES]
    if unknown:
        parser.error(f"unknown --sizes {', '.join(unknown)}; choose from {', '.join(SIZES)}")
    torch.set_num_threads(args.threads)
    import transformers
    import trl

    print(machine_line(args.threads))
    print(
        f"transformers {transformers.__version__}, trl {trl.__version__}; "
        "8 prompts x 4 generations x 32 new tokens, beta 0.04"
    )
    dtypes = bench_dtypes(args.dtypes)
    peaks = {}
    for dtype in dtypes:
        peaks[dtype], cpu = matmul_peak(torch.bfloat16 if dtype == "bf16" else torch.float32)
        print(f"matmul peak {dtype}: {peaks[dtype] / 1e12:.3f} TFLOP/s  (CPU use {cpu:.2f})")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        reward_file = root / "reward.py"
        reward_file.write_text(
            "def reward_len(prompts, completions, **kwargs):\n"
            "    return [min(len(c), 200) / 200.0 for c in completions]\n"
        )
        for size in args.sizes.split(","):
            model_dir, n = build_model_dir(root, size)
            for dtype in dtypes:
                bf16 = dtype == "bf16"
                with Phases(args.breakdown) as phases:
                    ours = run_rlalign(
                        model_dir, root / f"rlalign-{size}-{dtype}", args.steps, reward_file, bf16
                    )
                if args.breakdown:
                    print(f"--- {size} {dtype}")
                    phases.report(n, peaks[dtype])
                theirs = run_trl(model_dir, root / f"trl-{size}-{dtype}", args.steps, bf16)
                flops = 10 * n * phases.tokens_per_step()
                rows.append((size, dtype, flops / peaks[dtype], theirs.per_step(), ours.per_step()))
    print(
        f"{'model':<6}{'dtype':<6}{'TRL s/step':>12}{'CPU':>6}{'MFU':>7}"
        f"{'rlalign s/step':>16}{'CPU':>6}{'MFU':>7}{'ratio':>8}"
    )
    for size, dtype, ideal, (trl_wall, trl_cpu), (ours_wall, ours_cpu) in rows:
        print(
            f"{size:<6}{dtype:<6}{trl_wall:>12.3f}{trl_cpu:>6.2f}{ideal / trl_wall:>7.1%}"
            f"{ours_wall:>16.3f}{ours_cpu:>6.2f}{ideal / ours_wall:>7.1%}"
            f"{trl_wall / ours_wall:>7.2f}x"
        )


if __name__ == "__main__":
    main()
