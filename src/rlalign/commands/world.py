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
        "--force",
        action="store_true",
        help="write into a DIR that is not empty (the world's files replace any of the same name)",
    )
    export.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="world settings, e.g. num_countries=12 sft_hallucination_rate=0.5",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlalign.config import load_config
    from rlalign.data.world import World, WorldConfig
    from rlalign.errors import UserError

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    config = load_config(WorldConfig, None, overrides)
    directory = Path(args.directory)
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory}: exists and is not a directory")
    if directory.is_dir() and not args.force:
        found = sorted(p.name for p in directory.iterdir())
        if found:
            shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
            raise UserError(
                f"{directory} is not empty ({shown}); the export would replace files there: "
                "choose a new or empty directory, or pass --force to write over them"
            )
    counts = World(config).export(args.directory)
    width = max(len(k) for k in counts)
    print(f"wrote the world (seed {config.seed}) to {args.directory}:")
    for rel, n in counts.items():
        print(f"  {rel:<{width}}  {n:>5} lines")
    return 0
