"""Per-token estimators of KL(pi || pi_ref) from samples of pi (Schulman, 2020)."""

from __future__ import annotations

from typing import Literal

import torch

from rlalign.rl._checks import check_mask, check_same_shape

KLKind = Literal["k1", "k2", "k3"]


def kl_estimate(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    kind: KLKind = "k3",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Estimate :math:`\mathrm{KL}(\pi\,\|\,\pi_{ref})` per sampled token, with :math:`a \sim \pi`.

    With :math:`\log r = \log \pi_{ref}(a|s) - \log \pi(a|s)`:

    - ``k1`` :math:`= -\log r` -- unbiased, high variance, can be negative per token;
    - ``k2`` :math:`= \tfrac12 (\log r)^2` -- biased, low variance, always >= 0;
    - ``k3`` :math:`= (r - 1) - \log r` -- unbiased, low variance, always >= 0 (GRPO's choice).

    Gradients flow through both arguments; detach ``ref_logp`` (and ``logp`` for a reward
    penalty) as the use requires. Masked positions are 0, and so is their gradient: their
    log-ratio is zeroed before ``exp`` (padding's log-probs can be anything; ``exp`` of a large
    one is inf, and inf times the mask's 0 is a NaN gradient).
    """
    check_same_shape("ref_logp", ref_logp, "logp", logp)
    log_ratio = ref_logp - logp
    valid = None
    if mask is not None:
        valid = check_mask(mask, "logp", logp)
        log_ratio = torch.where(valid > 0, log_ratio, 0.0)
    if kind == "k1":
        kl = -log_ratio
    elif kind == "k2":
        kl = 0.5 * log_ratio**2
    elif kind == "k3":
        kl = torch.expm1(log_ratio) - log_ratio
    else:
        raise ValueError(f"kind must be 'k1', 'k2' or 'k3', got {kind!r}")
    if valid is not None:
        kl = kl * valid
    return kl
