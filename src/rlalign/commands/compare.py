"""``rlalign compare RUN_DIR...``: the built-in world's held-out questions answered by several
models side by side, on one HTML page (:mod:`rlalign.report.compare`)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "held-out questions answered by several models side by side (one HTML page)"
FLOW_STAGES = ("pretrain", "sft", "rl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="model directories or runs (their final/), in order; a demo's directory stands for "
        "its pretrain, sft and rl models",
    )
    parser.add_argument("--names", default=None, help="a column title per model, comma-separated")
    parser.add_argument(
        "--world-seed",
        type=int,
        default=None,
        help="the world whose held-out questions are asked (default: a demo's own world/, else 0)",
    )
    parser.add_argument(
        "--data", default=None, metavar="DIR", help="an exported world directory (its eval/)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=48, help="tokens per answer (48)")
    parser.add_argument(
        "--out", type=Path, default=Path("compare.html"), help="the page (compare.html)"
    )


def models_of(paths: list[str]) -> tuple[list[Path], list[str], int | None, Path | None]:
    """The model directories, their default names, and a demo directory's world seed and
    exported world (its world/, whose sizes may not be the defaults)."""
    import json

    from rlalign.control.lm_driver import lm_model_dir
    from rlalign.errors import UserError

    dirs: list[Path] = []
    names: list[str] = []
    seed = world = None
    for text in paths:
        path = Path(text)
        if all(lm_model_dir(path / s) is not None for s in FLOW_STAGES):  # a demo's directory
            dirs += [lm_model_dir(path / s) for s in FLOW_STAGES]
            names += ["pretrained" if s == "pretrain" else s for s in FLOW_STAGES]
            report = path / "report.json"
            if report.is_file():
                seed = json.loads(report.read_text(encoding="utf-8"))["config"].get("seed")
            if (path / "world" / "eval").is_dir():
                world = path / "world"
            continue
        found = lm_model_dir(path)
        if found is None:
            raise UserError(
                f"{path}: not a model (no config.json, *.safetensors and tokenizer in it or in "
                "its final/), nor a demo directory with pretrain/, sft/ and rl/"
            )
        dirs.append(found)
        names.append(path.name if path.name != "final" else path.parent.name)
    return dirs, names, seed, world


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from rlalign.errors import UserError
    from rlalign.lm.loading import load_model_and_tokenizer
    from rlalign.report.compare import write_compare_page
    from rlalign.report_card import eval_rows, evaluate_model

    dirs, names, demo_seed, demo_world = models_of(args.runs)
    if args.names is not None:
        names = [n.strip() for n in args.names.split(",")]
        if len(names) != len(dirs):
            raise UserError(f"--names gives {len(names)} names for {len(dirs)} models")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:  # a page's columns are keyed by name: one would replace the other
        raise UserError(
            f"two models are named {', '.join(repr(n) for n in repeated)}; give each its own "
            "name with --names (e.g. --names a-sft,b-sft)"
        )
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    seed = args.world_seed if args.world_seed is not None else (demo_seed or 0)
    data = args.data
    if data is None and args.world_seed is None and demo_world is not None:
        data = str(demo_world)  # the demo's own questions, at its world's sizes
    rows = eval_rows(data, seed)
    hf_logging.disable_progress_bar()
    answers = {}
    for name, path in zip(names, dirs, strict=True):
        print(f"answering {len(rows)} held-out questions with {name} ({path})", flush=True)
        model, tokenizer = load_model_and_tokenizer(path)
        _, answers[name] = evaluate_model(
            model, tokenizer, rows, max_new_tokens=args.max_new_tokens
        )
    where = f"world {data}" if data else f"world seed {seed}"
    page = write_compare_page(args.out, rows, answers, title=f"Held-out questions, {where}")
    print(f"wrote {page}")
    return 0
