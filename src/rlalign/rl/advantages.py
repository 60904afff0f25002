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


def turn_advantages(
    step_returns: torch.Tensor,
    step_mask: torch.Tensor,
    group_size: int,
    baseline: Literal["group", "leave_one_out", "batch"] = "group",
    scale: Literal["std", "group", "batch", "none"] = "none",
    eps: float = 1e-4,
) -> torch.Tensor:
    r"""Advantages of every step of multi-turn episodes, from their step returns.

    Episode ``i`` took ``K_i`` steps (``step_mask[i, k] = 1`` for ``k < K_i``) and
    ``step_returns[i, k]`` is its return from step ``k``, :math:`G_{i,k}`. The baseline of step
    ``k`` is a mean of the *same step index* over other episodes that reached it: those of the
    group that played the same environment seed (``group``: GRPO; ``leave_one_out``: RLOO,
    without the episode itself) or all the batch's (``batch``: REINFORCE)::

        A_{i,k} = (G_{i,k} - mean_{j in B(i), K_j > k} G_{j,k}) / (std_{j in B(i), K_j > k} G_{j,k} + eps)

    the division only with ``scale="std"`` (per group and step) or ``"batch"`` (the standard
    deviation of every step return of the batch). With one step per episode this is
    :func:`group_advantages` (``group``) or :func:`rloo_advantages` (``leave_one_out``) of the
    scores. A step that no other episode of its set reached gets advantage 0.

    Args:
        step_returns: ``(num_groups * group_size, K)``, groups of ``group_size`` rows side by
            side as in :func:`group_advantages`.
        step_mask: ``(num_groups * group_size, K)``; 1 where the episode took that step.
        group_size: episodes per environment seed (``num_generations``).

    Returns:
        ``(num_groups * group_size, K)`` advantages, 0 where ``step_mask`` is 0.
    """
    check_tensor("step_returns", step_returns)
    if step_returns.dim() != 2:
        raise ValueError(f"step_returns must be (episodes, K), got {tuple(step_returns.shape)}")
    if step_mask.shape != step_returns.shape:
        raise ValueError(
            f"step_mask has shape {tuple(step_mask.shape)} but step_returns has shape "
            f"{tuple(step_returns.shape)}"
        )
    _grouped(step_returns[:, 0], group_size)  # checks group_size divides the episodes
    n, k = step_returns.shape
    m = step_mask.to(step_returns.dtype)
    g = step_returns * m
    if baseline == "batch":
        g, m = g.reshape(1, n, k), m.reshape(1, n, k)
    elif baseline in ("group", "leave_one_out"):
        g, m = g.reshape(-1, group_size, k), m.reshape(-1, group_size, k)
    else:
        raise ValueError(f"baseline must be 'group', 'leave_one_out' or 'batch', got {baseline!r}")
    count, total = m.sum(dim=1, keepdim=True), g.sum(dim=1, keepdim=True)
    if baseline == "leave_one_out":
        others = (count - 1).clamp(min=1)
        adv = (g - (total - g) / others) * (count > 1) * m
    else:
        mean = total / count.clamp(min=1)
        adv = (g - mean) * m
    if scale in ("std", "group"):
        var = ((g - total / count.clamp(min=1)) ** 2 * m).sum(dim=1, keepdim=True)
        std = (var / (count - 1).clamp(min=1)).sqrt()
        adv = adv / (std + eps)
    elif scale == "batch":
        valid = step_returns[step_mask.bool()]
        std = valid.std() if valid.numel() > 1 else valid.new_zeros(())
        adv = adv / (std + eps)
    elif scale != "none":
        raise ValueError(f"scale must be 'std', 'group', 'batch' or 'none', got {scale!r}")
    return adv.reshape(n, k)
