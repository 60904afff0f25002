"""``rlalign demo [tool] [--out DIR] [--quick] [key=value ...]``: a whole training flow.

``rlalign demo`` runs the chapter's flow on the built-in world; ``rlalign demo tool`` the
calculator flow (expert transcripts -> SFT -> multi-turn RL with the tool).
"""

from __future__ import annotations

import argparse

HELP = (
    "world -> pretrain -> SFT -> reward model -> RL on CPU, with a report card; "
    "'demo tool': a model learns to use a calculator (SFT -> RL in the env)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default=None, metavar="DIR", help="output directory (runs/demo, runs/demo-tool)"
    )
    parser.add_argument("--quick", action="store_true", help="a much smaller run (for tests)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="'tool' first for the calculator flow; then stage sizes, e.g. rl_steps=80 "
        "algorithm=rloo (see rlalign.demo.DemoConfig, rlalign.demo_tool.ToolDemoConfig)",
    )


def run(args: argparse.Namespace) -> int:
    from rlalign.config import load_config

    overrides = list(args.overrides)
    if overrides[:1] == ["tool"]:
        from rlalign.demo_tool import QUICK_TOOL, ToolDemoConfig, run_tool_demo

        cfg = load_config(
            ToolDemoConfig, None, overrides[1:], defaults=QUICK_TOOL if args.quick else None
        )
        run_tool_demo(args.out or "runs/demo-tool", cfg)
        return 0
    from rlalign.demo import QUICK, DemoConfig, run_demo

    cfg = load_config(DemoConfig, None, overrides, defaults=QUICK if args.quick else None)
    run_demo(args.out or "runs/demo", cfg)
    return 0
