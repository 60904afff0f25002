"""``rlalign world export DIR [--seed S] [key=value ...]``: write the built-in world as JSONL."""

from __future__ import annotations

import argparse

HELP = "the built-in world (facts, arithmetic, harmful/benign requests): export it as JSONL"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="world_command", metavar="ACTION", required=True)
    export = sub.add_parser(
        "export",
        help="write corpus, SFT, preference, RL-prompt and held-out files to DIR",
        description="Write corpus.jsonl, sft.jsonl, preferences.jsonl, rl_prompts.jsonl and "
        "eval/{facts,unknown,arithmetic,harmful,benign}.jsonl to DIR.",
    )
    export.add_argument("directory", metavar="DIR", help="output directory (created if missing)")
    export.add_argument("--seed", type=int, default=None, help="world seed (default 0)")
    export.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="world settings, e.g. num_countries=12 sft_hallucination_rate=0.5",
    )


def run(args: argparse.Namespace) -> int:
    from rlalign.config import load_config
    from rlalign.data.world import World, WorldConfig

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    config = load_config(WorldConfig, None, overrides)
    counts = World(config).export(args.directory)
    width = max(len(k) for k in counts)
    print(f"wrote the world (seed {config.seed}) to {args.directory}:")
    for rel, n in counts.items():
        print(f"  {rel:<{width}}  {n:>5} lines")
    return 0
