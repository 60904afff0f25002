"""``rlalign demo [drive|tool] [--out DIR] [--quick] [key=value ...]``: a whole training flow.

``rlalign demo`` runs the chapter's flow on the built-in world; ``rlalign demo drive`` a
language model learning to drive the car (transcripts -> SFT -> multi-turn RL -> every driver's
table); ``rlalign demo tool`` the calculator flow (expert transcripts -> SFT -> multi-turn RL
with the tool).
"""

from __future__ import annotations

import argparse
import sys

from rlalign.commands.keys_help import KeySection, add_keys_help

HELP = (
    "world -> pretrain -> SFT -> reward model -> RL on CPU, with a report card; 'demo drive': "
    "transcripts -> SFT -> RL of a language model driving the car, with every driver's table; "
    "'demo tool': a model learns to use a calculator (SFT -> RL in the env)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output directory (runs/demo, runs/drive, runs/demo-tool)",
    )
    parser.add_argument("--quick", action="store_true", help="a much smaller run (for tests)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="'drive' or 'tool' first for the car's or the calculator's flow; then stage sizes, "
        "e.g. rl_steps=80 algorithm=rloo (see rlalign.demo.DemoConfig, "
        "rlalign.demo_drive.DriveDemoConfig, rlalign.demo_tool.ToolDemoConfig)",
    )
    add_keys_help(
        parser,
        KeySection("rlalign.demo:DemoConfig", "keys of 'rlalign demo'", None),
        KeySection("rlalign.demo_drive:DriveDemoConfig", "keys of 'rlalign demo drive'", None),
        KeySection("rlalign.demo_tool:ToolDemoConfig", "keys of 'rlalign demo tool'", None),
    )


def run(args: argparse.Namespace) -> int:
    from rlalign.runtime import StageInterrupted

    try:
        return _run(args)
    except StageInterrupted as stop:
        print(f"rlalign demo: {stop}; run the demo again to start over", file=sys.stderr)
        return 128 + stop.signum


def _run(args: argparse.Namespace) -> int:
    from rlalign.config import load_config

    overrides = list(args.overrides)
    if overrides[:1] == ["drive"]:
        from rlalign.demo_drive import QUICK_DRIVE, DriveDemoConfig, run_drive_demo

        defaults = QUICK_DRIVE if args.quick else None
        cfg = load_config(DriveDemoConfig, None, overrides[1:], defaults=defaults)
        run_drive_demo(args.out or "runs/drive", cfg)
        return 0
    if overrides[:1] == ["tool"]:
        from rlalign.demo_tool import QUICK_TOOL, ToolDemoConfig, run_tool_demo

        defaults = QUICK_TOOL if args.quick else None
        cfg = load_config(ToolDemoConfig, None, overrides[1:], defaults=defaults)
        run_tool_demo(args.out or "runs/demo-tool", cfg)
        return 0
    from rlalign.demo import QUICK, DemoConfig, run_demo

    cfg = load_config(DemoConfig, None, overrides, defaults=QUICK if args.quick else None)
    run_demo(args.out or "runs/demo", cfg)
    return 0
