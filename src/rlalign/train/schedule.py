"""Learning-rate schedule: linear warmup, then cosine decay to ``min_lr_ratio * lr``.

With ``s`` the 1-based number of the update being taken and ``W`` the warmup steps:

- ``s <= W``: ``lr * s / W`` (the first update already moves: no wasted step at lr 0);
- ``s > W``: ``lr * (r + (1 - r) * (1 + cos(pi * p)) / 2)`` with ``p = (s - W) / (S - W)``,
  so the last update (``s = S = max_steps``) runs at the floor ``r * lr``.

It is a :class:`torch.optim.lr_scheduler.LambdaLR` whose factor is a plain object, so the
scheduler's ``state_dict`` holds only numbers and loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class WarmupCosine:
    """Multiplier of the base learning rate after ``completed`` optimizer steps."""

    warmup_steps: int
    max_steps: int
    min_lr_ratio: float = 0.0

    def __call__(self, completed: int) -> float:
        s = completed + 1  # LambdaLR asks for the factor of the update about to be taken
        if s <= self.warmup_steps:
            return s / self.warmup_steps
        decay_steps = self.max_steps - self.warmup_steps
        progress = min(1.0, (s - self.warmup_steps) / max(1, decay_steps))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    max_steps: int,
    min_lr_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler to ``step()`` once after each ``optimizer.step()``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(warmup_steps, max_steps, min_lr_ratio)
    )
