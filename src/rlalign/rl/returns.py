"""Returns and advantages along a time axis: the chapter's G_t and GAE.

Conventions (shared by the car and the language model):

- Tensors are shaped ``(..., T)``: any batch dimensions, then time last.
- ``rewards[..., t]`` is the reward received *after* action ``t`` -- the chapter's ``r_{t+1}``.
  So ``G_t = sum_k gamma^k r_{t+k+1} = sum_k gamma^k rewards[..., t+k]``.
- ``mask[..., t] == 0`` marks a position that is not an action of the agent (padding, a prompt
  token, a tool output): it neither contributes nor receives -- the recursion skips it as if it
  were removed from the sequence, and its output is 0.
- ``dones[..., t] == 1`` means the episode ended after action ``t`` (several episodes may be laid
  end to end in one row, as in a vectorised rollout): nothing flows back across it.
- ``gamma`` is one number, or a ``(..., T)`` tensor of per-position discounts: ``gamma[..., t]``
  is applied between step ``t`` and the next unmasked step. A multi-turn episode laid out
  token by token discounts once per environment step with ``gamma`` at each turn's last token
  and 1 inside a turn, so every token of turn ``k`` gets the step return ``G_k``.
- Precision is the caller's: the outputs take the promoted dtype of the float inputs (rewards,
  values, the bootstrap value), so one float64 input makes the whole computation float64;
  integer rewards are computed in the default float dtype.
"""

from __future__ import annotations

import torch

from rlalign.rl._checks import (
    check_discount,
    check_has_time_axis,
    check_leading,
    check_mask,
    check_same_shape,
    check_unit_interval,
    float_dtype,
)


def _check_dones(dones: torch.Tensor | None, rewards: torch.Tensor) -> torch.Tensor:
    if dones is None:
        return torch.zeros_like(rewards)
    check_same_shape("dones", dones, "rewards", rewards)
    return dones.to(rewards.dtype)


def discounted_returns(
    rewards: torch.Tensor,
    gamma: float | torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    dones: torch.Tensor | None = None,
    bootstrap: torch.Tensor | float | None = None,
) -> torch.Tensor:
    r"""Discounted return of every step: :math:`G_t = \sum_{k\ge 0} \gamma^k r_{t+k+1}`.

    With ``rewards[..., t]`` the reward received after action ``t`` (the chapter's
    :math:`r_{t+1}`), this is the recursion ``G_t = rewards[t] + gamma * G_{t+1}``, run
    backwards from the end. ``gamma = 0`` gives ``G_t = rewards[t]``; ``gamma = 1`` the plain
    sum of the rewards still to come.

    Args:
        rewards: ``(..., T)`` float tensor.
        gamma: discount factor in ``[0, 1]``, or ``(..., T)`` per-position discounts (see the
            module doc).
        mask: optional ``(..., T)``; 0 marks positions that are skipped (see module doc).
        dones: optional ``(..., T)``; 1 where an episode ended after that action.
        bootstrap: optional value of the state after the last step, per row (shape ``(...)``),
            for rollouts cut off before the episode ended: ``G_{T} = bootstrap``.

    Returns:
        ``(..., T)`` tensor of returns, 0 at masked positions.
    """
    check_has_time_axis("rewards", rewards)
    rewards = rewards.to(float_dtype(rewards, bootstrap))
    gamma = check_discount("gamma", gamma, "rewards", rewards)
    m = check_mask(mask, "rewards", rewards)
    d = _check_dones(dones, rewards)
    running = check_leading("bootstrap", bootstrap, "rewards", rewards).clone()
    out = torch.zeros_like(rewards)
    for t in range(rewards.shape[-1] - 1, -1, -1):
        m_t = m[..., t]
        g_t = gamma[..., t] if isinstance(gamma, torch.Tensor) else gamma
        g = rewards[..., t] + g_t * (1.0 - d[..., t]) * running
        out[..., t] = m_t * g
        running = m_t * g + (1.0 - m_t) * running
    return out


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    gamma: float | torch.Tensor,
    lam: float,
    mask: torch.Tensor | None = None,
    last_value: torch.Tensor | float | None = None,
    *,
    dones: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Generalised advantage estimation (Schulman et al., 2016).

    .. math::
        \delta_t = r_{t+1} + \gamma V(s_{t+1}) - V(s_t), \qquad
        A_t = \sum_{k\ge 0} (\gamma\lambda)^k \delta_{t+k}, \qquad R_t = A_t + V(s_t)

    computed backwards as ``A_t = delta_t + gamma * lam * A_{t+1}``. ``lam = 1`` gives
    ``A_t = G_t - V(s_t)`` (Monte-Carlo advantage, :func:`discounted_returns` minus values);
    ``lam = 0`` the one-step TD error.

    Args:
        rewards: ``(..., T)``; ``rewards[..., t]`` follows action ``t``.
        values: ``(..., T)``; ``values[..., t] = V(s_t)``, the state in which action ``t`` was taken.
        gamma: discount factor in ``[0, 1]``, or ``(..., T)`` per-position discounts
            (``gamma[..., t]`` between step ``t`` and the next; see the module doc).
        lam: GAE's lambda in ``[0, 1]`` (0: the one-step TD error; 1: ``G_t - V(s_t)``).
        mask: optional ``(..., T)``; masked positions are skipped and get 0.
        last_value: ``V`` of the state after the last valid step, per row (shape ``(...)``);
            None means the sequence ended there (terminal, value 0).
        dones: optional ``(..., T)``; 1 where an episode ended after that action (no bootstrap
            across it).

    Returns:
        ``(advantages, returns)``, both ``(..., T)`` and 0 at masked positions.
    """
    check_has_time_axis("rewards", rewards)
    check_same_shape("values", values, "rewards", rewards)
    dtype = float_dtype(rewards, values, last_value)
    rewards, values = rewards.to(dtype), values.to(dtype)
    gamma = check_discount("gamma", gamma, "rewards", rewards)
    lam = check_unit_interval("lam", lam)
    m = check_mask(mask, "rewards", rewards)
    d = _check_dones(dones, rewards)
    next_value = check_leading("last_value", last_value, "rewards", rewards).clone()
    next_adv = torch.zeros_like(next_value)
    adv = torch.zeros_like(rewards)
    for t in range(rewards.shape[-1] - 1, -1, -1):
        m_t, cont = m[..., t], 1.0 - d[..., t]
        g_t = gamma[..., t] if isinstance(gamma, torch.Tensor) else gamma
        delta = rewards[..., t] + g_t * cont * next_value - values[..., t]
        a = delta + g_t * lam * cont * next_adv
        adv[..., t] = m_t * a
        next_adv = m_t * a + (1.0 - m_t) * next_adv
        next_value = m_t * values[..., t] + (1.0 - m_t) * next_value
    returns = (adv + values) * m
    return adv, returns
