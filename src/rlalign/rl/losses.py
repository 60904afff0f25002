"""Policy-gradient objectives, the value loss and the entropy, for token or step sequences.

All losses are *sums divided by a normaliser*, never a mean over whatever rows happen to be in
the tensor. That is what makes gradient accumulation exact: split a batch into micro-batches,
compute each micro-batch's loss with the normaliser of the **whole** batch
(:func:`policy_loss_normalizer`), and the summed gradients equal the gradient of the full batch.
Letting each micro-batch divide by its own token count is the classic bug this API avoids.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch

from rlalign.rl._checks import check_mask, check_same_shape, check_tensor
from rlalign.rl.kl import KLKind, kl_estimate

PolicyKind = Literal["reinforce", "ppo"]
LossType = Literal["grpo", "dapo", "dr_grpo", "sum", "sequence", "token", "constant"]

_LOSS_TYPE_ALIASES = {"sequence": "grpo", "token": "dapo", "constant": "dr_grpo"}


def _canonical_loss_type(loss_type: str) -> str:
    canonical = _LOSS_TYPE_ALIASES.get(loss_type, loss_type)
    if canonical not in ("grpo", "dapo", "dr_grpo", "sum"):
        raise ValueError(
            f"loss_type must be one of 'grpo' ('sequence'), 'dapo' ('token'), "
            f"'dr_grpo' ('constant') or 'sum', got {loss_type!r}"
        )
    return canonical


def policy_loss_normalizer(
    mask: torch.Tensor, loss_type: LossType = "grpo", max_length: int | None = None
) -> float:
    """The normaliser :func:`policy_loss` uses for a batch with this ``(B, T)`` mask.

    Compute it once on the whole (global) batch and pass it to every micro-batch:

    - ``grpo`` / ``sequence``: ``B`` -- the number of sequences;
    - ``dapo`` / ``token``: the number of valid tokens in the batch;
    - ``dr_grpo`` / ``constant``: ``B * max_length`` (``max_length`` defaults to ``T``);
      a constant, so long and short responses are weighted per token alike (Dr. GRPO);
    - ``sum``: ``B`` -- sequence sums averaged over sequences, the textbook REINFORCE estimator
      of the policy-gradient theorem.
    """
    check_tensor("mask", mask)
    if mask.dim() != 2:
        raise ValueError(f"mask must be (B, T), got shape {tuple(mask.shape)}")
    kind = _canonical_loss_type(loss_type)
    if kind == "dapo":
        return float(mask.sum().clamp_min(1))
    if kind == "dr_grpo":
        length = mask.shape[1] if max_length is None else int(max_length)
        return float(mask.shape[0] * length)
    return float(mask.shape[0])


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    kind: PolicyKind = "ppo",
    loss_type: LossType = "grpo",
    normalizer: float | None = None,
    clip_eps: float = 0.2,
    clip_eps_low: float | None = None,
    clip_eps_high: float | None = None,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    kl_kind: KLKind = "k3",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""Policy-gradient loss (to *minimise*) over ``(B, T)`` per-action log-probs.

    Per action, with :math:`\rho_t = \pi_\theta(a_t|s_t) / \pi_{old}(a_t|s_t)`:

    - ``reinforce``: :math:`\ell_t = -A_t \log \pi_\theta(a_t|s_t)`, whose gradient is the
      policy-gradient theorem's :math:`-A_t \nabla_\theta \log\pi_\theta(a_t|s_t)`
      (REINFORCE; with a baseline when ``A`` = return - baseline). ``old_logp`` is unused.
    - ``ppo``: the clipped surrogate
      :math:`\ell_t = -\min(\rho_t A_t,\ \operatorname{clip}(\rho_t, 1-\epsilon_{low}, 1+\epsilon_{high}) A_t)`.

    With ``beta > 0`` either kind adds the KL penalty to the reference policy in the loss (as
    GRPO does), :math:`\ell_t \mathrel{+}= \beta\,\mathrm{KL}_t(\pi_\theta\|\pi_{ref})`
    (estimator ``kl_kind``); it needs ``ref_logp``. (``kind="grpo"``, the same clipped
    surrogate, is accepted as ``ppo`` until the next release.)

    Aggregation over actions (``loss_type``), with ``N`` the ``normalizer``:

    - ``grpo`` / ``sequence``: :math:`\frac1N \sum_i \frac{1}{|o_i|}\sum_t \ell_{i,t}` (GRPO paper);
    - ``dapo`` / ``token``: :math:`\frac1N \sum_{i,t} \ell_{i,t}` with N = tokens in the batch (DAPO);
    - ``dr_grpo`` / ``constant``: the same sum with N = B x max length (Dr. GRPO);
    - ``sum``: the same sum with N = number of sequences (textbook REINFORCE).

    Args:
        logp: ``(B, T)`` log-probs of the taken actions under the current policy (with grad).
        old_logp: ``(B, T)`` log-probs under the behaviour policy (treated as constants);
            required for ``ppo``/``grpo``.
        advantages: ``(B, T)`` per action, or ``(B,)`` per sequence (broadcast over T); taken
            in ``logp``'s dtype, the precision the policy's gradient is computed in.
        mask: ``(B, T)``, 1 for actions (response tokens), 0 for padding/prompt.
        normalizer: ``N`` above; default :func:`policy_loss_normalizer` of this batch. Pass
            the whole batch's value when this call sees only a micro-batch.
        clip_eps: symmetric clip range; ``clip_eps_low`` / ``clip_eps_high`` override either
            side (DAPO's clip-higher uses a larger ``clip_eps_high``).
        ref_logp: ``(B, T)`` log-probs under the reference policy, for the in-loss KL penalty.
        beta: weight of the KL penalty (0: none).
        kl_kind: the KL estimator, ``k1``, ``k2`` or ``k3`` (see :func:`kl_estimate`).

    Returns:
        ``(loss, stats)`` where ``stats`` holds detached token means over valid actions:
        ``clip_fraction`` (share of actions whose clipped branch is active, i.e. gets no
        gradient), ``approx_kl`` (k3 estimate of KL(old || new)), ``ratio_mean`` and, with a
        reference, ``ref_kl``.
    """
    check_tensor("logp", logp)
    if logp.dim() != 2:
        raise ValueError(f"logp must be (B, T), got shape {tuple(logp.shape)}")
    m = check_mask(mask, "logp", logp)
    if advantages.shape == logp.shape[:1]:
        advantages = advantages[:, None].expand_as(logp)
    else:
        check_same_shape("advantages", advantages, "logp", logp)
    advantages = advantages.detach().to(logp.dtype)
    agg = _canonical_loss_type(loss_type)
    if normalizer is None:
        normalizer = policy_loss_normalizer(m, agg)
    if not normalizer > 0:
        raise ValueError(f"normalizer must be > 0, got {normalizer}")
    if kind == "grpo":  # GRPO is an algorithm (its advantages), not an objective of its own
        warnings.warn(
            "policy_loss(kind='grpo') is kind='ppo' (the clipped surrogate GRPO uses); "
            "'grpo' is accepted until the next release",
            FutureWarning,
            stacklevel=2,
        )
        kind = "ppo"
    if kind not in ("reinforce", "ppo"):
        raise ValueError(f"kind must be 'reinforce' or 'ppo', got {kind!r}")

    stats: dict[str, torch.Tensor] = {}
    n_valid = m.sum().clamp_min(1.0)
    if kind == "reinforce":
        per_token = -advantages * logp
        if old_logp is not None:
            check_same_shape("old_logp", old_logp, "logp", logp)
    else:
        if old_logp is None:
            raise ValueError(f"old_logp is required for kind={kind!r}")
        check_same_shape("old_logp", old_logp, "logp", logp)
        low = clip_eps if clip_eps_low is None else clip_eps_low
        high = clip_eps if clip_eps_high is None else clip_eps_high
        if low < 0 or high < 0 or low >= 1:
            raise ValueError(
                f"clip ranges must satisfy 0 <= clip_eps_low < 1 and clip_eps_high >= 0, "
                f"got low={low}, high={high}"
            )
        # Masked positions (padding after a completion) get log-ratio 0 *before* exp: their
        # log-probs can be anything, and exp of a large one is inf, whose gradient times the
        # mask's 0 is NaN.
        log_ratio = torch.where(m > 0, logp - old_logp.detach(), 0.0)
        ratio = torch.exp(log_ratio)
        unclipped = ratio * advantages
        clipped = torch.clamp(ratio, 1.0 - low, 1.0 + high) * advantages
        per_token = -torch.minimum(unclipped, clipped)
        with torch.no_grad():
            active = ((advantages > 0) & (ratio > 1.0 + high)) | (
                (advantages < 0) & (ratio < 1.0 - low)
            )
            stats["clip_fraction"] = (active.to(m.dtype) * m).sum() / n_valid
            stats["approx_kl"] = ((torch.expm1(log_ratio) - log_ratio) * m).sum() / n_valid
            stats["ratio_mean"] = (ratio * m).sum() / n_valid

    if ref_logp is not None:
        check_same_shape("ref_logp", ref_logp, "logp", logp)
        kl = kl_estimate(logp, ref_logp.detach(), kind=kl_kind, mask=m)
        stats["ref_kl"] = (kl.detach() * m).sum() / n_valid
        if beta:
            per_token = per_token + beta * kl
    elif beta:
        raise ValueError("beta > 0 needs ref_logp (the reference policy's log-probs)")

    per_token = per_token * m
    if agg == "grpo":
        lengths = m.sum(dim=1).clamp_min(1.0)
        total = (per_token.sum(dim=1) / lengths).sum()
    else:
        total = per_token.sum()
    return total / normalizer, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor | None,
    returns: torch.Tensor,
    mask: torch.Tensor | None = None,
    clip_eps: float | None = None,
    normalizer: float | None = None,
) -> torch.Tensor:
    r"""Squared-error value loss, optionally clipped around the old values (PPO).

    .. math::
        L^V = \frac{1}{N}\sum_t \tfrac12 \max\big((V_t - R_t)^2,\
              (V^{old}_t + \operatorname{clip}(V_t - V^{old}_t, -\epsilon, \epsilon) - R_t)^2\big)

    (without ``clip_eps``, just :math:`\frac1N \sum_t \tfrac12 (V_t - R_t)^2`). ``N`` is the
    ``normalizer``: by default the number of valid positions of this batch; pass the whole
    batch's count when this call sees a micro-batch.
    """
    check_same_shape("returns", returns, "values", values)
    m = check_mask(mask, "values", values)
    returns = returns.detach()
    loss = (values - returns) ** 2
    if clip_eps is not None:
        if old_values is None:
            raise ValueError("value clipping (clip_eps) needs old_values")
        check_same_shape("old_values", old_values, "values", values)
        old_values = old_values.detach()
        v_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        loss = torch.maximum(loss, (v_clipped - returns) ** 2)
    n = float(m.sum().clamp_min(1.0)) if normalizer is None else normalizer
    return 0.5 * (loss * m).sum() / n


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    r"""Entropy of the categorical distribution at each position: :math:`H = -\sum_a \pi(a)\log\pi(a)`.

    ``logits`` is ``(..., V)``; returns ``(...)``. Computed as ``logsumexp(z) - sum softmax(z) z``,
    stable for large logits. The precision is the caller's: float64 logits give a float64
    entropy, float32 a float32 one; lower precisions (bf16, fp16) are computed, and returned,
    in float32, since a sum over the vocabulary in bf16 loses most of its digits.
    """
    check_tensor("logits", logits)
    if logits.dtype != torch.float64:
        logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def entropy(
    logits: torch.Tensor, mask: torch.Tensor | None = None, normalizer: float | None = None
) -> torch.Tensor:
    r"""Mean policy entropy over valid positions: :math:`\frac1N \sum_t H(\pi(\cdot|s_t))`.

    ``logits`` is ``(..., V)`` and ``mask`` ``(...)``. Used as an exploration bonus (subtract
    ``c * entropy`` from the loss) and as a metric.
    """
    h = token_entropy(logits)
    m = check_mask(mask, "logits[..., 0]", h)
    n = float(m.sum().clamp_min(1.0)) if normalizer is None else normalizer
    return (h * m).sum() / n
