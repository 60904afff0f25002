"""``rlalign sft``: supervised fine-tuning on chat data (loss on assistant tokens only)."""

from __future__ import annotations

import argparse

from rlalign.commands import add_stage_arguments, load_stage_config, report_stage

HELP = "supervised fine-tuning on chat data (messages or prompt/completion JSONL)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, "rlalign.train.sft:SFTConfig")
    parser.epilog = (
        "example: rlalign sft model=runs/pretrain/final data=sft.jsonl output_dir=runs/sft"
    )


def run(args: argparse.Namespace) -> int:
    from rlalign import api
    from rlalign.train.sft import SFTConfig

    cfg = load_stage_config(SFTConfig, args)
    result = api.sft(cfg, resume=args.resume)
    summary = f"fine-tuned {result.step} steps; model and tokenizer in {result.final_dir}"
    if "eval_loss" in result.eval_metrics:
        summary += f"; held-out loss {result.eval_metrics['eval_loss']:.4f}"
    return report_stage(result, cfg.output_dir, summary)
