"""Masked reductions and normalisation."""

from __future__ import annotations

import torch

from rlalign.rl._checks import check_mask, check_tensor


def masked_sum(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of ``x`` over positions where ``mask`` is 1 (all positions when None)."""
    check_tensor("x", x)
    return (x * check_mask(mask, "x", x)).sum()


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is 1; 0 when the mask is empty."""
    m = check_mask(mask, "x", check_tensor("x", x))
    return (x * m).sum() / m.sum().clamp_min(1.0)


def whiten(
    x: torch.Tensor,
    mask: torch.Tensor | None = None,
    shift_mean: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    r"""Normalise ``x`` to zero mean and unit variance over the valid positions.

    .. math:: \hat{x} = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} \; (+ \mu \text{ if not shift\_mean})

    with :math:`\mu` and the unbiased variance :math:`\sigma^2` taken over the positions where
    ``mask`` is 1. ``shift_mean=False`` only rescales (the mean is added back), as used for
    rewards, whose sign carries meaning. Masked positions are returned as 0.
    """
    m = check_mask(mask, "x", check_tensor("x", x))
    n = m.sum()
    if n < 1:
        raise ValueError(f"whiten: mask selects no element of x (shape {tuple(x.shape)})")
    mean = (x * m).sum() / n
    var = (((x - mean) * m) ** 2).sum() / (n - 1).clamp_min(1.0)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m
