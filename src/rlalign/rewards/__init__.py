"""Rewards: load user reward functions, run them under a time limit, compose them with weights."""

from rlalign.rewards.compose import RewardComposer, RewardError, RewardTerm
from rlalign.rewards.loading import load_reward_function

__all__ = ["RewardComposer", "RewardError", "RewardTerm", "load_reward_function"]
