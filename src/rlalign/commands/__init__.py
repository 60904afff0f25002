"""Subcommands of the ``rlalign`` CLI (see :mod:`rlalign.cli`)."""

import argparse
import contextlib


def seed_type(text: str) -> int:
    """``argparse`` type of a ``--seed`` option (0 to 2**32 - 1, argparse's own message)."""
    from rlalign.config import seed_argument  # here, not at the top: --help stays fast

    return seed_argument(text)


def add_stage_arguments(parser: argparse.ArgumentParser, config: str) -> None:
    """The interface every training stage shares: ``[--config FILE] [--resume] [key=value ...]``,
    and a ``--help`` that lists every key of ``config`` (``"module:ClassName"``)."""
    from rlalign.commands.keys_help import add_keys_help

    parser.add_argument("--config", metavar="FILE", help="YAML config file")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest complete checkpoint"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. seed=1"
    )
    add_keys_help(parser, config)


def load_stage_config(cls, args: argparse.Namespace):
    """The stage's config from ``--config`` and ``key=value``; with ``--resume`` on a run that
    has a checkpoint, on top of the run's own ``config.yaml``, so that the command needs only
    what it changes (which the stage then accepts or refuses, see :mod:`rlalign.train.run`)."""
    from pathlib import Path

    from rlalign.checkpoint import latest_checkpoint
    from rlalign.config import load_config

    if args.resume:
        out = Path(_output_dir(cls, args.config, args.overrides))
        saved = out / "config.yaml"
        if saved.is_file() and latest_checkpoint(out) is not None:
            base = load_config(cls, saved).model_dump(mode="json")
            base["output_dir"] = str(out)  # where the run is now
            return load_config(cls, args.config, args.overrides, defaults=base)
    return load_config(cls, args.config, args.overrides)


def _output_dir(cls, path: str | None, overrides: list[str]) -> str:
    """``output_dir`` as :func:`rlalign.config.load_config` will resolve it (last override,
    else the config file's, else the default)."""
    import yaml

    from rlalign.config import ConfigError, parse_overrides

    with contextlib.suppress(ConfigError):  # a malformed override is reported by load_config
        given = [value for key, value, _ in parse_overrides(overrides) if key == ("output_dir",)]
        if given:
            return str(given[-1])
    if path is not None:
        with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
            with open(path, encoding="utf-8") as f:
                value = (yaml.safe_load(f) or {}).get("output_dir")
            if value is not None:
                return str(value)
    return str(cls.model_fields["output_dir"].default)


def report_stage(result, output_dir: str, summary: str) -> int:
    """Print how a training stage ended (rank 0 only under torchrun; also for a run stopped by
    a signal, whose report so far :mod:`rlalign.api` has written); the exit status (128 +
    signal when interrupted)."""
    import sys

    from rlalign.dist import RankInfo

    if not RankInfo.detect().is_main:
        return 128 + result.interrupted_by if result.interrupted_by is not None else 0
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
