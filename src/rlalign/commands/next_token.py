"""``rlalign next-token MODEL_DIR PROMPT``: the policy's next-token distribution after a prompt."""

from __future__ import annotations

import argparse
import json

HELP = "show the most likely next tokens after a prompt, with their probabilities"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model_dir", metavar="MODEL_DIR", help="a run's final/ directory or any local HF causal LM"
    )
    parser.add_argument("prompt", metavar="PROMPT", help='e.g. "The president of Valdoria is"')
    parser.add_argument("--top-k", type=int, default=10, help="how many tokens to show (10)")
    parser.add_argument(
        "--chat", action="store_true", help="wrap the prompt as a user turn in the chat template"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"prompt": ..., "top": [{"token", "id", "prob"}, ...]} instead of a table',
    )


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from rlalign.errors import UserError
    from rlalign.lm.inspect import format_table, next_token_distribution
    from rlalign.lm.loading import load_model_and_tokenizer

    if args.top_k <= 0:  # checked before loading anything: a typo should fail fast
        raise UserError(f"--top-k must be a positive integer, got {args.top_k}")
    hf_logging.disable_progress_bar()
    model, tokenizer = load_model_and_tokenizer(args.model_dir)
    top = next_token_distribution(model, tokenizer, args.prompt, args.top_k, chat=args.chat)
    if args.json:
        payload = {
            "prompt": args.prompt,
            "top": [{"token": t.token, "id": t.id, "prob": t.prob} for t in top],
        }
        print(json.dumps(payload, ensure_ascii=False))
    else:
        print(format_table(args.prompt, top))
    return 0
