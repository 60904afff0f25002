"""Resolve a reward function's ``package.module:function`` or ``path/to/file.py:function``."""

from __future__ import annotations

from collections.abc import Callable

from rlalign.plugins import load_callable


def load_reward_function(spec: str) -> Callable[..., list[float]]:
    """Import the reward function named by ``spec`` (the module's top level code runs; an
    exception or ``sys.exit`` there is a :class:`UserError` naming the file).

    The function must accept ``(prompts, completions, **fields)`` and return one float per
    completion.
    """
    return load_callable(spec, "reward function")
