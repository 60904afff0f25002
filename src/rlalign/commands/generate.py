"""``rlalign generate MODEL_DIR PROMPT``: sample completions with the rollout sampler."""

from __future__ import annotations

import argparse
import json

from rlalign.commands import seed_type

HELP = "sample completions of a prompt from a model (the RL rollout sampler)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model_dir", metavar="MODEL_DIR", help="a run's final/ directory or any local HF causal LM"
    )
    parser.add_argument("prompt", metavar="PROMPT", help="the text to continue")
    parser.add_argument("--n", type=int, default=1, help="number of completions (1)")
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature; 0 = greedy (1.0)"
    )
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens per sample (64)")
    parser.add_argument("--seed", type=seed_type, default=0, help="random seed (0)")
    parser.add_argument(
        "--stop", action="append", default=None, metavar="TEXT", help="stop string (repeatable)"
    )
    parser.add_argument(
        "--chat", action="store_true", help="wrap the prompt as a user turn in the chat template"
    )
    parser.add_argument(
        "--bf16", action="store_true", help="run the model under bf16 autocast (faster on CPU)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per sample")


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers.utils import logging as hf_logging

    from rlalign.errors import UserError
    from rlalign.lm.generate import generate_text
    from rlalign.lm.loading import load_model_and_tokenizer
    from rlalign.lm.sampling import check_sampling_args

    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    check_sampling_args(args.temperature, args.top_k, args.top_p, args.max_new_tokens)
    hf_logging.disable_progress_bar()
    model, tokenizer = load_model_and_tokenizer(args.model_dir)
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(args.seed)
    samples = generate_text(
        model,
        tokenizer,
        [args.prompt],
        chat=args.chat,
        num_samples=args.n,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        stop_strings=args.stop,
        generator=generator,
        autocast_dtype=torch.bfloat16 if args.bf16 else None,
    )
    for i, s in enumerate(samples):
        if args.json:
            print(
                json.dumps(
                    {
                        "prompt": s.prompt,
                        "completion": s.completion,
                        "finish_reason": s.finish_reason,
                        "num_tokens": s.num_tokens,
                        "logprob": s.logprob,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            if len(samples) > 1:
                print(
                    f"--- sample {i + 1}/{len(samples)} ({s.num_tokens} tokens, {s.finish_reason})"
                )
            print(s.prompt + s.completion if not args.chat else s.completion)
    return 0
