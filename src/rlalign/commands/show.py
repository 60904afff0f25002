"""``rlalign show RUN_DIR [--iteration K] [--out FILE]``: the per-token trajectory viewer."""

from __future__ import annotations

import argparse

HELP = (
    "write an HTML viewer of an RL run's rollouts: each token's probability, KL, return, advantage"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="an `rlalign rl` output directory")
    parser.add_argument("--iteration", type=int, help="which rollout iteration (default: last)")
    parser.add_argument(
        "--out", metavar="FILE", help="output HTML (default RUN_DIR/viewer_iter_K.html)"
    )


def run(args: argparse.Namespace) -> int:
    from rlalign.report.viewer import write_viewer

    path = write_viewer(args.run_dir, args.out, args.iteration)
    print(f"wrote {path}")
    return 0
