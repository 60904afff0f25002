"""A two-step text MDP where only credit across turns finds the optimum (used as
``tests/train/text_mdp.py:make_env``; its words are the word model's vocabulary).

Step 0, after "say a word": "cat" pays 0.3 at once and leads to "dog", where nothing more is
paid; "sun" pays nothing but leads to "moon", where any word pays 1; any other first word
leads to "red", where nothing is paid. With gamma = 0.9 the optimum is "sun" (discounted
return 0.9 against 0.3 for "cat"): a learner that credited each turn with its own reward only
would settle on "cat".
"""

from __future__ import annotations

from typing import Any

GAMMA = 0.9
OPTIMAL_RETURN = 1.0  # undiscounted sum of the optimal episode's rewards


class TwoStepWords:
    actions = None

    def __init__(self, cat_reward: float = 0.3) -> None:
        self.cat_reward = cat_reward
        self.state = "start"
        self.steps = 0

    def reset(self, *, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        self.state, self.steps = "start", 0
        return "say a word", {}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        word = action.split()[0] if action.split() else ""
        self.steps += 1
        if self.state == "start":
            if word == "cat":
                self.state = "dog"
                return "dog", self.cat_reward, False, False, {"took_cat": True}
            if word == "sun":
                self.state = "moon"
                return "moon", 0.0, False, False, {"took_cat": False}
            self.state = "red"
            return "red", 0.0, False, False, {"took_cat": False}
        won = self.state == "moon"
        return "green", 1.0 if won else 0.0, True, False, {"reached_moon": won}

    def close(self) -> None:
        pass


def make_env(**kwargs: Any) -> TwoStepWords:
    return TwoStepWords(**kwargs)
