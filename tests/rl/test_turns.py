"""Multi-turn credit in the RL core: per-position discounts and per-step baselines, each
checked against a brute-force loop over the episodes' steps."""

from __future__ import annotations

import itertools

import pytest
import torch

from rlalign.rl import (
    discounted_returns,
    gae,
    group_advantages,
    rloo_advantages,
    turn_advantages,
)


def _turn_layout(turn_lengths: list[int], env_lengths: list[int], gamma: float):
    """One episode laid out token by token: each turn's action tokens, then (masked) env
    tokens; returns (rewards, mask, per-position gamma, turn of each position)."""
    rewards, mask, disc, turn_of = [], [], [], []
    step_rewards = torch.arange(1, len(turn_lengths) + 1, dtype=torch.float64) * 0.7 - 1.0
    for k, (n, e) in enumerate(zip(turn_lengths, env_lengths, strict=True)):
        for j in range(n):
            last = j == n - 1
            rewards.append(float(step_rewards[k]) if last else 0.0)
            mask.append(1.0)
            disc.append(gamma if last else 1.0)
            turn_of.append(k)
        for _ in range(e):  # environment tokens: not actions, skipped
            rewards.append(0.0)
            mask.append(0.0)
            disc.append(0.5)  # any value: a masked position's discount is never used
            turn_of.append(-1)
    t = lambda xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
    return t(rewards), t(mask), t(disc), turn_of, step_rewards


@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.5, 0.0])
def test_token_returns_are_the_step_returns_of_their_turn(gamma):
    rewards, mask, disc, turn_of, step_rewards = _turn_layout([3, 1, 4], [2, 5, 0], gamma)
    token_returns = discounted_returns(rewards, disc, mask)
    step_returns = discounted_returns(step_rewards, gamma)  # the chapter's G_k on steps
    for pos, k in enumerate(turn_of):
        expected = 0.0 if k < 0 else float(step_returns[k])
        assert float(token_returns[pos]) == pytest.approx(expected, abs=1e-12)


def test_per_position_gamma_in_gae_is_the_loop():
    torch.manual_seed(0)
    rewards, mask, disc, _, _ = _turn_layout([2, 3, 1], [1, 2, 0], 0.8)
    values = torch.randn(rewards.shape, dtype=torch.float64)
    lam = 0.7
    adv, ret = gae(rewards, values, disc, lam, mask=mask)
    # brute force: the valid positions as one compact sequence, the loop of the GAE paper
    idx = [i for i in range(len(mask)) if mask[i] == 1]
    expected, running = {}, 0.0
    for j in reversed(range(len(idx))):
        i = idx[j]
        next_v = float(values[idx[j + 1]]) if j + 1 < len(idx) else 0.0
        delta = float(rewards[i]) + float(disc[i]) * next_v - float(values[i])
        running = delta + float(disc[i]) * lam * running
        expected[i] = running
    for i in range(len(mask)):
        want = expected.get(i, 0.0)
        assert float(adv[i]) == pytest.approx(want, abs=1e-12)
        assert float(ret[i]) == pytest.approx(want + float(values[i]) if i in expected else 0.0)


def test_a_constant_gamma_tensor_equals_the_float():
    torch.manual_seed(1)
    rewards, values = torch.randn(3, 7).double(), torch.randn(3, 7).double()
    mask = (torch.rand(3, 7) > 0.3).double()
    full = torch.full_like(rewards, 0.9)
    assert torch.equal(
        discounted_returns(rewards, full, mask), discounted_returns(rewards, 0.9, mask)
    )
    assert torch.equal(
        gae(rewards, values, full, 0.8, mask)[0], gae(rewards, values, 0.9, 0.8, mask)[0]
    )
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        discounted_returns(rewards, full * 2, mask)


def _brute_turn_advantages(returns, mask, group_size, baseline, scale):
    n, k = returns.shape
    out = torch.zeros_like(returns)
    valid_all = [float(returns[i, s]) for i in range(n) for s in range(k) if mask[i, s]]
    batch_std = (
        torch.tensor(valid_all, dtype=torch.float64).std().item() if len(valid_all) > 1 else 0.0
    )
    for i, s in itertools.product(range(n), range(k)):
        if not mask[i, s]:
            continue
        if baseline == "batch":
            members = list(range(n))
        else:
            first = i // group_size * group_size
            members = list(range(first, first + group_size))
        peers = [j for j in members if mask[j, s]]
        vals = [float(returns[j, s]) for j in peers]
        if baseline == "leave_one_out":
            others = [float(returns[j, s]) for j in peers if j != i]
            a = float(returns[i, s]) - sum(others) / len(others) if others else 0.0
        else:
            a = float(returns[i, s]) - sum(vals) / len(vals)
        if scale == "std":
            std = torch.tensor(vals, dtype=torch.float64).std().item() if len(vals) > 1 else 0.0
            a /= std + 1e-4
        elif scale == "batch":
            a /= batch_std + 1e-4
        out[i, s] = a
    return out


@pytest.mark.parametrize("baseline", ["group", "leave_one_out", "batch"])
@pytest.mark.parametrize("scale", ["none", "std", "batch"])
def test_turn_advantages_match_the_loop(baseline, scale):
    gen = torch.Generator().manual_seed(3)
    returns = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, 6, (12,), generator=gen)
    mask = (torch.arange(5)[None, :] < lengths[:, None]).to(torch.float64)
    got = turn_advantages(returns, mask, 4, baseline=baseline, scale=scale)
    want = _brute_turn_advantages(returns, mask, 4, baseline, scale)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_one_step_episodes_are_grpo_and_rloo():
    scores = torch.randn(12, generator=torch.Generator().manual_seed(4))
    ones = torch.ones(12, 1)
    torch.testing.assert_close(
        turn_advantages(scores[:, None], ones, 4, "group", "std")[:, 0],
        group_advantages(scores, 4, scale="std"),
    )
    torch.testing.assert_close(
        turn_advantages(scores[:, None], ones, 4, "leave_one_out", "none")[:, 0],
        rloo_advantages(scores, 4),
    )
    torch.testing.assert_close(
        turn_advantages(scores[:, None], ones, 4, "batch", "none")[:, 0], scores - scores.mean()
    )
