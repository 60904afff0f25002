"""Multi-turn rollouts: environment steps per second of the language-model driver, every live
episode's turn in one batched sampler call, against the same episodes played one at a time.

The car's text environment (``rlalign/Driving-v0``, one short sentence per step), a randomly
initialised model of the ``tiny`` preset (~1.4M parameters) with a tokenizer trained on the
rule-based driver's sentences, ``history=last``, 3 tokens per action, sampling at temperature
1. Both sides play the same seeds with the same random numbers (so the same episodes, step for
step; the benchmark checks it), timed back to back in one process. Each figure is printed with
its CPU use (process CPU seconds / wall seconds): about the number of threads means the
machine was idle; clearly lower means another job shared the CPU and the figure is void.

    .venv/bin/python bench/bench_multiturn.py [--episodes 16] [--max-turns 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from machine import machine_line

from rlalign.control.transcripts import write_transcripts
from rlalign.envs import make_text_env
from rlalign.io import read_jsonl
from rlalign.lm.models import create_model
from rlalign.lm.tokenizer import train_tokenizer
from rlalign.train.episodes import PlaySettings, play_episodes


def driver(tmp: str):
    """A random ``tiny`` model with a tokenizer fitted to the car's sentences."""
    path = f"{tmp}/transcripts.jsonl"
    write_transcripts(path, policy="rule_based", episodes=20, seed=100_000)
    texts = [m["content"] for _, row in read_jsonl(path) for m in row["messages"]]
    tokenizer = train_tokenizer(texts, vocab_size=512)
    model = create_model("tiny", len(tokenizer), seed=0, max_position_embeddings=128,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return model.eval(), tokenizer


def timed(fn) -> tuple[float, float, object]:
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - w0
    return wall, (time.process_time() - c0) / wall, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--max-turns", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line(args.threads))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = driver(tmp)
    settings = PlaySettings(history="last", max_turns=args.max_turns, max_new_tokens=3)
    seeds = list(range(args.episodes))
    uniforms = torch.rand(
        (len(seeds), args.max_turns, 3), generator=torch.Generator().manual_seed(0)
    )

    def envs(n: int):
        return [make_text_env("rlalign/Driving-v0") for _ in range(n)]

    def batched():
        return play_episodes(
            model, tokenizer, envs(len(seeds)), seeds, settings, uniforms=uniforms
        )[0]

    def one_at_a_time():
        out = []
        for i, seed in enumerate(seeds):
            out += play_episodes(model, tokenizer, envs(1), [seed], settings,
                                 uniforms=uniforms[i : i + 1])[0]  # fmt: skip
        return out

    batched()  # warm-up
    print(f"{args.episodes} episodes of the car, history=last, up to {args.max_turns} turns, "
          f"{args.threads} threads")  # fmt: skip
    results = {}
    for name, fn in (("batched", batched), ("one at a time", one_at_a_time)):
        wall, cpu, episodes = timed(fn)
        steps = sum(len(e.turns) for e in episodes)
        results[name] = (steps / wall, episodes)
        print(f"  {name:14s} {steps / wall:8.1f} env steps/s  ({steps} steps, {wall:.2f} s, "
              f"CPU use {cpu:.2f})")  # fmt: skip
    same = [[t.action for t in e.turns] for e in results["batched"][1]] == [
        [t.action for t in e.turns] for e in results["one at a time"][1]
    ]
    ratio = results["batched"][0] / results["one at a time"][0]
    print(f"  batched / one at a time: {ratio:.1f}x; same episodes: {same}")


if __name__ == "__main__":
    main()
