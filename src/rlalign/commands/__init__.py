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
