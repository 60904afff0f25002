"""Subcommands of the ``rlalign`` CLI (see :mod:`rlalign.cli`)."""

import argparse


def add_stage_arguments(parser: argparse.ArgumentParser) -> None:
    """The interface every training stage shares: ``[--config FILE] [--resume] [key=value ...]``."""
    parser.add_argument("--config", metavar="FILE", help="YAML config file")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest complete checkpoint"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. seed=1"
    )


def report_stage(result, output_dir: str, summary: str) -> int:
    """Write the run's plots and report.html, and print how a training stage ended (rank 0
    only under torchrun; also for a run stopped by a signal); the exit status (128 + signal
    when interrupted)."""
    import sys

    from rlalign.dist import RankInfo
    from rlalign.report.run_report import write_run_report

    if not RankInfo.detect().is_main:
        return 128 + result.interrupted_by if result.interrupted_by is not None else 0
    write_run_report(output_dir)
    if result.interrupted_by is not None:
        print(
            f"stopped by signal {result.interrupted_by} at step {result.step}; checkpoint saved "
            f"in {output_dir}/checkpoints; continue with --resume (report so far: "
            f"{output_dir}/report.html)",
            file=sys.stderr,
        )
        return 128 + result.interrupted_by
    print(f"{summary}\nreport: {output_dir}/report.html")
    return 0
