"""``rlalign average RUN_DIR RUN_DIR... --out DIR``: the weight average of models fine-tuned
from one start (:mod:`rlalign.train.average`), e.g. RL runs from one SFT model with different
seeds."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "the weight average of models fine-tuned from one start (e.g. RL runs with other seeds)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="two or more model directories or runs (their final/), fine-tuned from one start",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="where the averaged model goes"
    )


def run(args: argparse.Namespace) -> int:
    from rlalign.control.lm_driver import lm_model_dir
    from rlalign.errors import UserError
    from rlalign.train.average import average_models

    dirs = []
    for text in args.runs:
        found = lm_model_dir(text)
        if found is None:
            raise UserError(
                f"{text}: not a model (no config.json, *.safetensors and tokenizer in it or in "
                "its final/)"
            )
        dirs.append(found)
    out = average_models(dirs, args.out)
    print(f"wrote the average of {len(dirs)} models to {out}")
    return 0
