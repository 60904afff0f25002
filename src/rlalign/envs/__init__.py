"""Environments the language model acts in, in text (see :mod:`rlalign.envs.base`)."""

from rlalign.envs.base import StepResult, TextEnv, info_counters

__all__ = ["StepResult", "TextEnv", "info_counters"]
