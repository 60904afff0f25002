"""``rlalign eval MODEL_DIR [--json]``: the report card on the world's held-out questions."""

from __future__ import annotations

import argparse
import json

HELP = "report card of a model on the built-in world's held-out questions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model_dir", metavar="MODEL_DIR", help="a final/ dir or any HF causal LM dir"
    )
    parser.add_argument(
        "--data", metavar="DIR", help="an exported world (default: generate it with --seed)"
    )
    parser.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="answer length cap")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for generation")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--show", type=int, default=0, metavar="N", help="also print N answers of each kind"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from rlalign.lm.models import load_model
    from rlalign.lm.tokenizer import load_tokenizer
    from rlalign.report_card import eval_rows, evaluate_model, format_card

    rows = eval_rows(args.data, args.seed)
    tokenizer = load_tokenizer(args.model_dir)
    model = load_model(args.model_dir)
    card, completions = evaluate_model(
        model,
        tokenizer,
        rows,
        max_new_tokens=args.max_new_tokens,
        autocast_dtype=torch.bfloat16 if args.bf16 else None,
    )
    if args.json:
        print(json.dumps(card))
        return 0
    print(format_card({"model": card}))
    if args.show:
        shown: dict[str, int] = {}
        for row, completion in zip(rows, completions, strict=True):
            if shown.get(row["kind"], 0) < args.show:
                shown[row["kind"]] = shown.get(row["kind"], 0) + 1
                print(f"[{row['kind']}] {row['prompt']}\n    -> {completion}")
    return 0
