"""``rlalign pretrain``: train a causal LM from scratch (or continue one) on a text corpus."""

from __future__ import annotations

import argparse

from rlalign.commands import add_stage_arguments, load_stage_config, report_stage

HELP = "pretrain a causal language model on a text corpus (.txt or JSONL {'text': ...})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, "rlalign.train.pretrain:PretrainConfig")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "example:\n  rlalign pretrain data=corpus.jsonl output_dir=runs/pt model=tiny "
        "max_steps=500\n"
        '  (a .txt corpus holds one document per line; JSONL holds {"text": ...} objects)'
    )


def run(args: argparse.Namespace) -> int:
    from rlalign import api
    from rlalign.train.pretrain import PretrainConfig, perplexity

    cfg = load_stage_config(PretrainConfig, args)
    result = api.pretrain(cfg, resume=args.resume)
    summary = f"pretrained {result.step} steps; model and tokenizer in {result.final_dir}"
    if "eval_loss" in result.eval_metrics:
        loss = result.eval_metrics["eval_loss"]
        summary += f"; held-out loss {loss:.4f}, perplexity {perplexity(loss):.2f}"
    return report_stage(result, cfg.output_dir, summary)
