"""``rlalign demo [drive] [--out DIR] [--quick] [key=value ...]``: the chapter's whole training
flow, or (``drive``) a language model learning to drive the car."""

from __future__ import annotations

import argparse

HELP = (
    "world -> pretrain -> SFT -> reward model -> RL on CPU, with a report card; 'demo drive': "
    "transcripts -> SFT -> RL of a language model driving the car, with every driver's table"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default=None, metavar="DIR", help="output directory (runs/demo, runs/drive)"
    )
    parser.add_argument("--quick", action="store_true", help="a much smaller run (for tests)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="'drive' first for the car's flow; stage sizes, e.g. rl_steps=80 algorithm=rloo "
        "(see rlalign.demo.DemoConfig, rlalign.drive_demo.DriveDemoConfig)",
    )


def run(args: argparse.Namespace) -> int:
    from rlalign.config import load_config

    if args.overrides[:1] == ["drive"]:
        from rlalign.drive_demo import QUICK_DRIVE, DriveDemoConfig, run_drive_demo

        defaults = QUICK_DRIVE if args.quick else None
        cfg = load_config(DriveDemoConfig, None, args.overrides[1:], defaults=defaults)
        run_drive_demo(args.out or "runs/drive", cfg)
        return 0
    from rlalign.demo import QUICK, DemoConfig, run_demo

    cfg = load_config(DemoConfig, None, args.overrides, defaults=QUICK if args.quick else None)
    run_demo(args.out or "runs/demo", cfg)
    return 0
