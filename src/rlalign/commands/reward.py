"""``rlalign reward``: train a reward model on preference pairs (Bradley–Terry)."""

from __future__ import annotations

import argparse

from rlalign.commands import add_stage_arguments, load_stage_config, report_stage

HELP = "train a reward model on preference pairs {prompt, chosen, rejected} (Bradley-Terry)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, "rlalign.train.reward_model:RewardConfig")
    parser.epilog = (
        "example: rlalign reward model=runs/sft/final data=preferences.jsonl output_dir=runs/rm"
    )


def run(args: argparse.Namespace) -> int:
    from rlalign import api
    from rlalign.train.reward_model import RewardConfig

    cfg = load_stage_config(RewardConfig, args)
    result = api.reward(cfg, resume=args.resume)
    summary = f"trained the reward model {result.step} steps; saved in {result.final_dir}"
    if "eval_accuracy" in result.eval_metrics:
        summary += f"; held-out pairwise accuracy {result.eval_metrics['eval_accuracy']:.1%}"
    return report_stage(result, cfg.output_dir, summary)
