"""``rlalign rl``: RL alignment of a language model (PPO, GRPO, RLOO, REINFORCE)."""

from __future__ import annotations

import argparse

from rlalign.commands import add_stage_arguments, load_stage_config, report_stage

HELP = "RL alignment with a reward (world verifiers, your functions, a reward model)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, "rlalign.train.rl_config:RLConfig")
    parser.epilog = (
        "example: rlalign rl model=runs/sft/final algorithm=grpo num_generations=4 beta=0.04 "
        "reward_funcs=my_rewards.py:score output_dir=runs/rl"
    )


def run(args: argparse.Namespace) -> int:
    from rlalign import api
    from rlalign.train.rl_config import RLConfig

    cfg = load_stage_config(RLConfig, args)
    result = api.align(cfg, resume=args.resume)
    summary = (
        f"RL ({cfg.algorithm}) ran {result.step} steps; policy and tokenizer in {result.final_dir}"
    )
    return report_stage(result, cfg.output_dir, summary)
