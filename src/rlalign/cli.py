"""The ``rlalign`` command line: one entry point, one subcommand per job.

Each subcommand lives in ``rlalign.commands.<name>`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import heavy libraries
(torch, transformers) inside ``run`` so that ``rlalign --help`` stays fast.

A :class:`rlalign.errors.UserError` raised anywhere becomes one line on stderr and exit status
2, as does a path that cannot be written (permissions, a read-only disk); a full disk is one
line and status 1. ``--debug`` shows the traceback instead. Under ``torchrun``
(``WORLD_SIZE > 1``) every process joins the default process group before its command runs,
and errors name the rank.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from rlalign import __version__
from rlalign.errors import UserError, file_system_problem

# Subcommand name -> module under rlalign.commands. Order is the order shown in --help.
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "world": "world",
    "pretrain": "pretrain",
    "sft": "sft",
    "reward": "reward",
    "rl": "rl",
    "eval": "eval",
    "show": "show",
    "report": "report",
    "next-token": "next_token",
    "generate": "generate",
    "chat": "chat",
    "compare": "compare",
    "average": "average",
    "control": "control",
    "tabular": "tabular",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlalign",
        description="Reinforcement learning for language models (and cars): "
        "pretraining, SFT, reward models and RL alignment on one RL core.",
    )
    parser.add_argument("--version", action="version", version=f"rlalign {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks for errors (for bug reports)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"rlalign.commands.{module_name}")
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def launched_distributed() -> bool:
    """torchrun started several processes (checked without importing torch)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def main(argv: Sequence[str] | None = None) -> int:
    # Hugging Face's per-file "Loading weights" bars would drown rlalign's own progress display;
    # transformers reads this when it is first imported (users can still set it to 0).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    parser = build_parser()
    # argparse stops filling a nargs="*" positional once an option follows it, so
    # `rlalign pretrain --resume seed=1 --config c.yaml lr=2` would leave `lr=2` over;
    # such key=value leftovers belong to the command's overrides.
    args, extras = parser.parse_known_args(argv)
    if extras:
        if isinstance(getattr(args, "overrides", None), list) and all(
            "=" in e and not e.startswith("-") for e in extras
        ):
            args.overrides.extend(extras)
        else:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    where = f"rlalign {args.command}"
    show_warning = warnings.showwarning

    def one_line_renames(message, category, *rest, **kwargs) -> None:
        # An old config key: one line that names the new key, not a warning's source location.
        if category.__name__ == "RenamedKeyWarning":
            print(f"{where}: warning: {message}", file=sys.stderr)
        else:
            show_warning(message, category, *rest, **kwargs)

    warnings.showwarning = one_line_renames
    try:
        if launched_distributed():  # under torchrun: join the process group first
            from rlalign.dist import init_distributed

            rank = init_distributed()
            where += f" [rank {rank.rank}/{rank.world_size}]"
        return int(args._run(args) or 0)
    except UserError as exc:
        if args.debug:
            raise
        print(f"{where}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a full disk, an unwritable output_dir: one line, not a bug
        problem = file_system_problem(exc)
        if args.debug or problem is None:
            raise
        print(f"{where}: error: {problem[0]}", file=sys.stderr)
        return problem[1]
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show_warning
        if launched_distributed():
            from rlalign.dist import shutdown_distributed

            shutdown_distributed()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
