"""Baselines from a group of responses to the same prompt (GRPO, Dr. GRPO, RLOO).

Scores are 1-D, ``(num_prompts * group_size,)``, with each prompt's ``group_size`` responses
next to each other (``[p0 g0, p0 g1, ..., p1 g0, ...]``), the layout TRL and rlalign's sampler
use. The advantage of a response is its score minus a baseline that does not depend on it
(RLOO) or on the group (GRPO), so the policy gradient stays unbiased (RLOO) or nearly so.
"""

from __future__ import annotations

from typing import Literal

import torch

from rlalign.rl._checks import check_tensor


def _grouped(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    check_tensor("scores", scores)
    if scores.dim() != 1:
        raise ValueError(
            f"scores must be 1-D (num_prompts * group_size,), got shape {tuple(scores.shape)}"
        )
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if scores.numel() % group_size:
        raise ValueError(
            f"group_size={group_size} does not divide the number of scores "
            f"(scores has shape {tuple(scores.shape)})"
        )
    return scores.reshape(-1, group_size)


def group_advantages(
    scores: torch.Tensor,
    group_size: int,
    scale: Literal["std", "group", "batch", "none"] = "std",
    eps: float = 1e-4,
) -> torch.Tensor:
    r"""GRPO advantages: each score relative to its group.

    .. math:: A_i = \frac{s_i - \operatorname{mean}(s_{g(i)})}{\operatorname{std}(s_{g(i)}) + \epsilon}

    Args:
        scores: ``(num_prompts * group_size,)`` response scores.
        group_size: responses per prompt (TRL's ``num_generations``).
        scale: ``"std"`` (alias ``"group"``): divide by the group's (unbiased) standard
            deviation, as in the GRPO paper; ``"batch"``: divide by the whole batch's standard
            deviation; ``"none"``: no division (Dr. GRPO, which removes the difficulty bias).
        eps: added to the standard deviation (a group of equal scores gets advantage 0).

    Returns:
        ``(num_prompts * group_size,)`` advantages.
    """
    g = _grouped(scores, group_size)
    centred = g - g.mean(dim=1, keepdim=True)
    if scale in ("std", "group"):
        std = g.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(g[:, :1])
        centred = centred / (std + eps)
    elif scale == "batch":
        std = scores.std() if scores.numel() > 1 else scores.new_zeros(())
        centred = centred / (std + eps)
    elif scale != "none":
        raise ValueError(f"scale must be 'std', 'group', 'batch' or 'none', got {scale!r}")
    return centred.reshape(-1)


def rloo_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    r"""REINFORCE leave-one-out advantages (Kool et al., 2019; Ahmadian et al., 2024).

    .. math:: A_i = s_i - \frac{1}{G-1} \sum_{j \ne i} s_j = \frac{G}{G-1}\,(s_i - \bar{s})

    The baseline of each response is the mean of the *other* responses to the same prompt, so
    it is independent of the response and the gradient estimate stays unbiased.
    """
    g = _grouped(scores, group_size)
    if group_size < 2:
        raise ValueError(f"rloo_advantages needs group_size >= 2, got {group_size}")
    others = (g.sum(dim=1, keepdim=True) - g) / (group_size - 1)
    return (g - others).reshape(-1)
