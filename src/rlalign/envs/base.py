"""The text environment: an environment that talks to the agent in words.

A language model acts in a :class:`TextEnv` the way the car's MLP acts in a Gymnasium env, one
step at a time, except that observations and actions are text::

    observation, info = env.reset(seed=3)
    observation, reward, terminated, truncated, info = env.step("brake")

``reset`` and ``step`` follow Gymnasium's signatures (``terminated``: the episode reached a
terminal state, no value after it; ``truncated``: it was cut off, e.g. by a time limit).
``actions`` is the finite action vocabulary when there is one (the car's six manoeuvres), else
``None`` (free text, e.g. a final answer). An action text that names no action is a defined
outcome chosen by the environment (see :class:`~rlalign.envs.gym_adapter.GymTextEnv`), reported
as ``info["invalid_action"] = True``, never an exception.

At the end of an episode, the numbers and flags in the last ``info`` (``collision``,
``arrived``, ...) are the environment's own counters: multi-turn RL averages them over episodes
into its metrics.

Held-out episodes: an env may define ``eval_seeds(n) -> list[int]``, the seeds of its first
``n`` evaluation episodes; every seed from the first of them on is then held out, and training
plays seeds below it only (the calculator keeps its held-out questions there). An env without
it is evaluated on seeds ``0 .. n-1`` (:func:`evaluation_seeds`).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

StepResult = tuple[str, float, bool, bool, dict[str, Any]]


@runtime_checkable
class TextEnv(Protocol):
    """What a text environment provides (duck-typed: any object with these members)."""

    actions: tuple[str, ...] | None

    def reset(self, *, seed: int | None = None) -> tuple[str, dict[str, Any]]: ...

    def step(self, action: str) -> StepResult: ...

    def close(self) -> None: ...


def evaluation_seeds(env: Any, n: int) -> list[int]:
    """The seeds of ``n`` held-out episodes of ``env``: its ``eval_seeds(n)`` when it defines
    one, else ``0 .. n-1``."""
    own = getattr(env, "eval_seeds", None)
    if callable(own):
        return [int(s) for s in own(n)]
    return list(range(n))


def info_counters(info: dict[str, Any]) -> dict[str, float]:
    """The numbers and flags of an ``info`` dict (bools as 0/1), the episode's counters;
    numpy scalars count too (a Gymnasium env's ``info`` is full of them)."""
    return {
        key: float(value)
        for key, value in info.items()
        if isinstance(value, bool | int | float | np.bool_ | np.integer | np.floating)
    }
