"""Rollout throughput: rlalign's sampler vs Hugging Face ``model.generate`` (sampling).

Same randomly initialised Qwen2 models (~5M and ~28M parameters), same batch (32 left-padded
prompts of 8-24 tokens x 64 new tokens, no eos so every row runs to the end), same sampling
settings (temperature 1, top-k 50, top-p 0.95), fp32 and bf16 weights, measured back to back in
one process. rlalign runs twice: with its hand-written decode step (the default) and with
``fast_decode=False`` (every step through the model's HF forward, the sampler before the fast
step existed). Each measurement prints new tokens/s and its CPU use (process CPU seconds / wall
seconds): about the number of cores (2.0 here) means the machine was idle; clearly lower means
another job shared the CPU and the figure is void.

    .venv/bin/python bench/bench_sampler.py [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import torch
from machine import machine_line
from transformers import Qwen2Config, Qwen2ForCausalLM

from rlalign.lm.sampling import sample

SIZES = {
    # name: (hidden, layers, heads, intermediate)
    "qwen2-5M": (256, 4, 4, 768),
    "qwen2-28M": (512, 8, 8, 1280),
}
VOCAB = 4096
BATCH = 32
NEW_TOKENS = 64
TOP_K = 50
TOP_P = 0.95


def build(hidden: int, layers: int, heads: int, inter: int) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=inter,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=None,  # never stop early: both samplers produce exactly 64 tokens a row
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).eval()


def prompts() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, 25, (BATCH,), generator=g)
    width = int(lengths.max())
    ids = torch.randint(2, VOCAB, (BATCH, width), generator=g)
    mask = (torch.arange(width).unsqueeze(0) >= (width - lengths).unsqueeze(1)).long()
    return ids.masked_fill(mask == 0, 0), mask


def measure(fns: dict[str, Callable[[], int]], repeats: int) -> dict[str, tuple[float, float]]:
    """Best-of-`repeats` tokens/s of each function and the CPU use (cores) of that best run.

    The functions are timed in alternation (A B A B ...) so that a change in machine load
    affects both sides alike.
    """
    for fn in fns.values():
        fn()  # warm-up: first-call allocations, oneDNN kernel selection
    best = dict.fromkeys(fns, (0.0, 0.0))
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, w0 = time.process_time(), time.perf_counter()
            n_tokens = fn()
            wall = time.perf_counter() - w0
            cpu = time.process_time() - c0
            if n_tokens / wall > best[name][0]:
                best[name] = (n_tokens / wall, cpu / wall)
    return best


def run_hf(model: Qwen2ForCausalLM, ids: torch.Tensor, mask: torch.Tensor) -> int:
    """HF ``generate`` with sampling; returns the number of new tokens."""
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=1.0,
            top_k=TOP_K,
            top_p=TOP_P,
            max_new_tokens=NEW_TOKENS,
            pad_token_id=0,
        )
    return (out.shape[1] - ids.shape[1]) * BATCH


def run_ours(
    model: Qwen2ForCausalLM,
    ids: torch.Tensor,
    mask: torch.Tensor,
    gen: torch.Generator,
    fast_decode: bool = True,
) -> int:
    """rlalign's sampler, same settings; returns the number of new tokens."""
    out = sample(
        model,
        ids,
        mask,
        max_new_tokens=NEW_TOKENS,
        temperature=1.0,
        top_k=TOP_K,
        top_p=TOP_P,
        eos_token_id=[],
        pad_token_id=0,
        generator=gen,
        fast_decode=fast_decode,
    )
    return out.completion_ids.numel()


def profile(fns: dict[str, Callable[[], int]]) -> None:
    """Print the top operators of one run of each function (self CPU time)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for name, fn in fns.items():
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        print(f"--- profile: {name}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--models", nargs="+", choices=list(SIZES), default=list(SIZES), help="model sizes to run"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print torch.profiler tables (one run of each sampler per model and dtype)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ids, mask = prompts()
    print(machine_line())
    print(f"batch {BATCH} x {NEW_TOKENS} new tokens, top_k={TOP_K} top_p={TOP_P}")
    print(
        f"{'model':<10} {'dtype':<5} {'HF tok/s':>9} {'cpu':>5} {'HF-fwd tok/s':>12} {'cpu':>5} "
        f"{'ratio':>6} {'ours tok/s':>10} {'cpu':>5} {'ratio':>6}"
    )
    for name in args.models:
        base = build(*SIZES[name])
        for dtype in (torch.float32, torch.bfloat16):
            model = base.to(dtype)

            gen = torch.Generator().manual_seed(0)
            fns = {
                "hf": functools.partial(run_hf, model, ids, mask),
                "hf-fwd": functools.partial(run_ours, model, ids, mask, gen, fast_decode=False),
                "ours": functools.partial(run_ours, model, ids, mask, gen),
            }
            res = measure(fns, args.repeats)
            (hf_tps, hf_cpu), (fwd_tps, fwd_cpu) = res["hf"], res["hf-fwd"]
            our_tps, our_cpu = res["ours"]
            short = "fp32" if dtype == torch.float32 else "bf16"
            if args.profile:
                print(f"=== {name} {short}")
                profile(fns)
            print(
                f"{name:<10} {short:<5} {hf_tps:>9.0f} {hf_cpu:>5.2f} {fwd_tps:>12.0f} "
                f"{fwd_cpu:>5.2f} {fwd_tps / hf_tps:>5.2f}x {our_tps:>10.0f} {our_cpu:>5.2f} "
                f"{our_tps / hf_tps:>5.2f}x"
            )


if __name__ == "__main__":
    main()
