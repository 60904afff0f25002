"""``rlalign report RUN_DIR``: (re)write a stage run's plots and self-contained report.html."""

from __future__ import annotations

import argparse

HELP = "write the plots and report.html of a pretrain/sft/reward/rl run directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a stage's output_dir")


def run(args: argparse.Namespace) -> int:
    from rlalign.report.run_report import write_run_report

    print(f"wrote {write_run_report(args.run_dir)}")
    return 0
