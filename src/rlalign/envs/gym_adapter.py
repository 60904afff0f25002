"""A Gymnasium env with a ``Discrete`` action space, spoken to in words.

The observation array becomes a sentence (``describe``), and the model's reply becomes an action
index by matching its first line against the action words::

    env = GymTextEnv(gym.make("CartPole-v1"), describe, ["left", "right"], fallback_action="left")
    text, info = env.reset(seed=0)
    text, reward, terminated, truncated, info = env.step("Right.")

A reply that names no action is not an error: the env plays ``fallback_action``, adds
``invalid_penalty`` to that step's reward and sets ``info["invalid_action"] = True``, so the
model learns from the penalty that it must answer with an action word.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from rlalign.errors import UserError

# Stripped from the end of a reply: "Brake." and "brake!" both mean "brake".
_TRAILING = string.punctuation + string.whitespace


def normalize_action_text(text: str) -> str:
    """The part of a reply that is matched against the action words: the first non-blank line,
    lower-cased, without surrounding whitespace and trailing punctuation."""
    first = text.strip().lower().split("\n", 1)[0]
    return first.rstrip(_TRAILING).strip()


class GymTextEnv:
    """A :class:`~rlalign.envs.base.TextEnv` over a Gymnasium env with ``Discrete(n)`` actions.

    Args:
        env: the Gymnasium env (``.env`` keeps it; ``.last_obs`` is its last observation array).
        describe: ``observation array -> str``, the text the model reads each step.
        action_words: one word per action index, in the env's order (``actions`` is this
            tuple).
        fallback_action: the action word played when a reply names no action.
        invalid_penalty: added to the reward of a step whose reply named no action.
        aliases: other words for an action, ``{"lane_left": "left"}``.
    """

    def __init__(
        self,
        env: gym.Env,
        describe: Callable[[np.ndarray], str],
        action_words: Sequence[str],
        *,
        fallback_action: str,
        invalid_penalty: float = -1.0,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        space = env.action_space
        if not isinstance(space, gym.spaces.Discrete):
            raise UserError(
                f"GymTextEnv needs a Discrete action space, got {space}; a continuous env "
                "cannot be driven by words"
            )
        words = tuple(action_words)
        if len(words) != int(space.n):
            raise UserError(
                f"GymTextEnv: {len(words)} action words {list(words)} for {int(space.n)} actions; "
                "give one word per action, in the env's order"
            )
        self._index: dict[str, int] = {}
        for i, word in enumerate(words):
            key = normalize_action_text(word)
            if not key or key != word.strip().lower():
                raise UserError(
                    f"GymTextEnv: action word {word!r} is not one line without trailing "
                    "punctuation; a reply could never match it"
                )
            if key in self._index:
                raise UserError(f"GymTextEnv: action word {word!r} appears twice")
            self._index[key] = i
        for alias, word in (aliases or {}).items():
            target = normalize_action_text(word)
            if target not in self._index:
                raise UserError(
                    f"GymTextEnv: alias {alias!r} names {word!r}, which is not an action word "
                    f"({', '.join(words)})"
                )
            self._index.setdefault(normalize_action_text(alias), self._index[target])
        fallback = normalize_action_text(fallback_action)
        if fallback not in self._index:
            raise UserError(
                f"GymTextEnv: fallback_action {fallback_action!r} is not an action word "
                f"({', '.join(words)})"
            )
        self.env = env
        self.describe = describe
        self.actions: tuple[str, ...] | None = words
        self.fallback_action = fallback_action
        self.invalid_penalty = float(invalid_penalty)
        self._fallback_index = self._index[fallback]
        self.last_obs: np.ndarray | None = None

    def action_index(self, text: str) -> int | None:
        """The action index ``text`` names (a word or an alias), or ``None``."""
        return self._index.get(normalize_action_text(text))

    def _text(self, obs: np.ndarray) -> str:
        text = self.describe(obs)
        if not isinstance(text, str):
            name = getattr(self.describe, "__qualname__", repr(self.describe))
            shown = repr(text)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise UserError(
                f"describe function '{name}' returned {type(text).__name__} {shown}; it must "
                "return the observation as a str"
            )
        return text

    def reset(self, *, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed)
        self.last_obs = obs
        return self._text(obs), dict(info)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        index = self.action_index(action)
        invalid = index is None
        if index is None:
            index = self._fallback_index
        obs, reward, terminated, truncated, info = self.env.step(index)
        self.last_obs = obs
        reward = float(reward) + (self.invalid_penalty if invalid else 0.0)
        info = {**info, "invalid_action": invalid}
        return self._text(obs), reward, bool(terminated), bool(truncated), info

    def close(self) -> None:
        self.env.close()
