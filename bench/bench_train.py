"""Training throughput of the shared loop: tokens/s and model-FLOPs utilisation (MFU).

For each model preset (``tiny``, ``small`` ~25M) and precision (fp32; bf16 autocast with fp32
master weights) it runs real optimizer steps of :class:`rlalign.train.loop.Trainer` (forward,
backward, clipping, fused AdamW, schedule) on random tokens, and reports

- training tokens/s;
- MFU = 6 * N * tokens/s / peak, with N the parameters that take part in matmuls (the input
  embedding is a lookup, counted only when it is tied to the output layer) and the peak the
  throughput of a large matmul loop in the same dtype (the faster of ``torch.matmul`` and
  oneDNN's linear kernel on CPU), measured in this run;
- the CPU use of each measurement (process CPU seconds / wall seconds): about the number of
  cores (2.0 here) means the machine was idle; clearly lower means another job shared it and
  the figure is void.

    .venv/bin/python bench/bench_train.py [--presets tiny,small] [--steps 6] [--threads N]
        [--attn auto,sdpa,eager] [--device cuda] [--compile off,on]

``--attn auto`` is what training uses by default: eager attention for bf16 autocast on CPU,
the model's own (sdpa) otherwise. ``--compile on`` sets ``torch_compile=True`` (its compilation
happens in the untimed warm-up steps).

Goals (idle machine): >= 50% of the fp32 peak in fp32, >= 30% of the bf16 peak with bf16
autocast, for the ~25M preset.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from machine import bench_dtypes, machine_line, matmul_params, matmul_peak, timed

from rlalign.lm.models import create_model
from rlalign.train.config import TrainingConfig
from rlalign.train.loop import Trainer, attention_kernels, training_attention
from rlalign.train.losses import causal_lm_loss, count_label_tokens

VOCAB = 4096


class RandomBlocks:
    """Endless batches of random tokens (throughput does not depend on the text)."""

    def __init__(self, batch: int, length: int) -> None:
        self.shape = (batch, length)
        self.generator = torch.Generator().manual_seed(0)

    def __iter__(self) -> RandomBlocks:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, VOCAB, self.shape, generator=self.generator)
        return {"input_ids": ids, "labels": ids}

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def bench_training(
    preset: str,
    bf16: bool,
    *,
    batch: int,
    length: int,
    steps: int,
    warmup: int,
    device: str,
    attn: str,
    torch_compile: bool = False,
) -> tuple[float, int, float]:
    """(tokens/s, N, CPU use) of ``steps`` optimizer steps after ``warmup`` untimed ones."""
    model = create_model(preset, VOCAB, max_position_embeddings=length, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainingConfig(
            data="random",
            output_dir=str(Path(tmp)),
            max_steps=warmup + steps,
            per_device_train_batch_size=batch,
            bf16=bf16,
            device=device,
            attn_implementation=attn,
            torch_compile=torch_compile,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model, causal_lm_loss, RandomBlocks(batch, length), cfg, count_fn=count_label_tokens
        )
        trainer.model.train()
        kernels = training_attention(cfg, trainer.device, trainer.bf16)  # as fit() picks them
        with attention_kernels(trainer.model, kernels):
            for _ in range(warmup):
                trainer.train_step()
            per_step, cpu = timed(trainer.train_step, steps)
    return batch * length / per_step, matmul_params(model), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--dtypes",
        default=None,
        help="fp32 and/or bf16 (default: bf16 too where bf16: auto would choose it here)",
    )
    parser.add_argument(
        "--attn", default="auto", help="attn_implementation values to try, e.g. auto,sdpa,eager"
    )
    parser.add_argument("--compile", default="off", help="torch_compile values to try: off,on")
    args = parser.parse_args()
    if not set(args.compile.split(",")) <= {"off", "on"}:
        parser.error(f"--compile takes off and/or on, got {args.compile!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{machine_line()}; batch {args.batch} x {args.length} tokens")
    dtypes = bench_dtypes(args.dtypes, args.device)
    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if name not in dtypes:
            continue
        n = 8192 if args.device == "cuda" else 2048
        peaks[name], cpu = matmul_peak(dtype, args.device, n=n)
        print(f"matmul peak {name}: {peaks[name] / 1e12:.3f} TFLOP/s  (CPU use {cpu:.2f})")
    print(
        f"{'preset':<8}{'attn':<7}{'compile':<8}{'precision':<16}{'params N':>10}{'tokens/s':>11}"
        f"{'TFLOP/s':>9}{'MFU':>7}{'CPU use':>9}"
    )
    runs = [
        (preset, attn, compiled, name, bf16)
        for preset in args.presets.split(",")
        for attn in args.attn.split(",")
        for compiled in args.compile.split(",")
        for name, bf16 in (("fp32", False), ("bf16", True))
        if name in dtypes
    ]
    for preset, attn, compiled, name, bf16 in runs:
        tps, n, cpu = bench_training(
            preset,
            bf16,
            batch=args.batch,
            length=args.length,
            steps=args.steps,
            warmup=args.warmup,
            device=args.device,
            attn=attn,
            torch_compile=compiled == "on",
        )
        flops = 6 * n * tps
        label = "fp32" if not bf16 else "bf16 autocast"
        print(
            f"{preset:<8}{attn:<7}{compiled:<8}{label:<16}{n / 1e6:>9.1f}M{tps:>11,.0f}{flops / 1e12:>9.3f}"
            f"{flops / peaks[name]:>7.1%}{cpu:>9.2f}"
        )


if __name__ == "__main__":
    main()
