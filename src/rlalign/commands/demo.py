"""``rlalign demo [--out DIR] [--quick] [key=value ...]``: the chapter's whole training flow."""

from __future__ import annotations

import argparse

HELP = "world -> pretrain -> SFT -> reward model -> RL on CPU, with a report card"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", metavar="DIR", help="output directory")
    parser.add_argument("--quick", action="store_true", help="a much smaller run (for tests)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="stage sizes, e.g. rl_steps=80 algorithm=rloo (see rlalign.demo.DemoConfig)",
    )


def run(args: argparse.Namespace) -> int:
    from rlalign.config import load_config
    from rlalign.demo import QUICK, DemoConfig, run_demo

    cfg = load_config(DemoConfig, None, args.overrides, defaults=QUICK if args.quick else None)
    run_demo(args.out, cfg)
    return 0
