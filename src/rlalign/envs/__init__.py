"""Environments the language model acts in, in text (see :mod:`rlalign.envs.base`)."""

from rlalign.envs.base import StepResult, TextEnv, evaluation_seeds, info_counters
from rlalign.envs.gym_adapter import GymTextEnv
from rlalign.envs.registry import BUILTIN_TEXT_ENVS, checked, make_text_env

__all__ = [
    "BUILTIN_TEXT_ENVS",
    "GymTextEnv",
    "StepResult",
    "TextEnv",
    "checked",
    "evaluation_seeds",
    "info_counters",
    "make_text_env",
]
