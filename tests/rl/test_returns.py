"""discounted_returns and gae against plain Python loops (the seed's G_t, Schulman's GAE)."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from rlalign.rl import discounted_returns, gae

GAMMAS = [0.0, 0.5, 0.99, 1.0]


def brute_returns(rewards, gamma, mask=None, dones=None, bootstrap=0.0):
    """G_t = sum_k gamma^k r_{t+k+1} over the valid steps of one row, written as the sum itself."""
    T = len(rewards)
    mask = mask or [1] * T
    dones = dones or [0] * T
    steps = [t for t in range(T) if mask[t]]  # masked positions are removed from the sequence
    out = [0.0] * T
    for i, t in enumerate(steps):
        total, k = 0.0, 0
        ended = False
        for s in steps[i:]:
            total += gamma**k * rewards[s]
            k += 1
            if dones[s]:
                ended = True
                break
        if not ended:
            total += gamma**k * bootstrap
        out[t] = total
    return out


def brute_gae(rewards, values, gamma, lam, mask=None, last_value=0.0):
    """A_t = sum_k (gamma*lam)^k delta_{t+k}, delta_t = r_t + gamma V_{t+1} - V_t, on valid steps."""
    T = len(rewards)
    mask = mask or [1] * T
    steps = [t for t in range(T) if mask[t]]
    deltas = []
    for i, t in enumerate(steps):
        v_next = values[steps[i + 1]] if i + 1 < len(steps) else last_value
        deltas.append(rewards[t] + gamma * v_next - values[t])
    adv = [0.0] * T
    for i, t in enumerate(steps):
        adv[t] = sum((gamma * lam) ** k * d for k, d in enumerate(deltas[i:]))
    return adv


rows = st.integers(min_value=1, max_value=4)
lengths = st.integers(min_value=1, max_value=9)
floats = st.floats(min_value=-5, max_value=5, allow_nan=False, width=32)


@st.composite
def batches(draw):
    b, t = draw(rows), draw(lengths)
    rewards = [[draw(floats) for _ in range(t)] for _ in range(b)]
    values = [[draw(floats) for _ in range(t)] for _ in range(b)]
    mask = [[draw(st.integers(0, 1)) for _ in range(t)] for _ in range(b)]
    dones = [
        [draw(st.integers(0, 1)) if draw(st.booleans()) else 0 for _ in range(t)] for _ in range(b)
    ]
    boot = [draw(floats) for _ in range(b)]
    return rewards, values, mask, dones, boot


@settings(max_examples=60, deadline=None)
@given(batches(), st.sampled_from(GAMMAS))
def test_discounted_returns_matches_loop_with_masks_and_dones(batch, gamma):
    rewards, _, mask, dones, boot = batch
    dones = [
        [d * m for d, m in zip(dr, mr, strict=True)] for dr, mr in zip(dones, mask, strict=True)
    ]
    got = discounted_returns(
        torch.tensor(rewards, dtype=torch.float64),
        gamma,
        torch.tensor(mask),
        dones=torch.tensor(dones),
        bootstrap=torch.tensor(boot, dtype=torch.float64),
    )
    want = [
        brute_returns(r, gamma, m, d, b)
        for r, m, d, b in zip(rewards, mask, dones, boot, strict=True)
    ]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), atol=1e-9, rtol=1e-9)


@settings(max_examples=60, deadline=None)
@given(batches(), st.sampled_from(GAMMAS), st.sampled_from([0.0, 0.5, 0.95, 1.0]))
def test_gae_matches_loop_with_masks(batch, gamma, lam):
    rewards, values, mask, _, boot = batch
    adv, ret = gae(
        torch.tensor(rewards, dtype=torch.float64),
        torch.tensor(values, dtype=torch.float64),
        gamma,
        lam,
        torch.tensor(mask),
        last_value=torch.tensor(boot, dtype=torch.float64),
    )
    want = [
        brute_gae(r, v, gamma, lam, m, b)
        for r, v, m, b in zip(rewards, values, mask, boot, strict=True)
    ]
    want_t = torch.tensor(want, dtype=torch.float64)
    torch.testing.assert_close(adv, want_t, atol=1e-8, rtol=1e-8)
    m = torch.tensor(mask, dtype=torch.float64)
    torch.testing.assert_close(ret, (want_t + torch.tensor(values, dtype=torch.float64)) * m)


def test_worked_example_from_the_readme():
    # rewards after actions 0, 1, 2 are r_1 = 1, r_2 = 0, r_3 = 2; gamma = 0.5
    # G_0 = 1 + 0.5*0 + 0.25*2 = 1.5, G_1 = 0 + 0.5*2 = 1, G_2 = 2
    got = discounted_returns(torch.tensor([1.0, 0.0, 2.0]), gamma=0.5)
    assert got.tolist() == [1.5, 1.0, 2.0]


def test_gamma_zero_is_the_immediate_reward():
    r = torch.randn(3, 7)
    torch.testing.assert_close(discounted_returns(r, 0.0), r)


def test_gamma_one_is_the_reward_to_go():
    r = torch.randn(2, 6, dtype=torch.float64)
    want = r.flip(-1).cumsum(-1).flip(-1)
    torch.testing.assert_close(discounted_returns(r, 1.0), want)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_lam_one_gives_returns_minus_values(gamma):
    g = torch.Generator().manual_seed(0)
    r = torch.randn(4, 10, generator=g, dtype=torch.float64)
    v = torch.randn(4, 10, generator=g, dtype=torch.float64)
    mask = (torch.rand(4, 10, generator=g) > 0.3).double()
    adv, ret = gae(r, v, gamma, 1.0, mask)
    torch.testing.assert_close(adv, (discounted_returns(r, gamma, mask) - v) * mask)
    torch.testing.assert_close(ret, discounted_returns(r, gamma, mask))


def test_lam_zero_gives_one_step_td_error():
    r = torch.tensor([[1.0, 2.0, 3.0]])
    v = torch.tensor([[0.5, 0.25, 1.0]])
    adv, _ = gae(r, v, 0.9, 0.0, last_value=torch.tensor([2.0]))
    want = torch.tensor([[1 + 0.9 * 0.25 - 0.5, 2 + 0.9 * 1.0 - 0.25, 3 + 0.9 * 2.0 - 1.0]])
    torch.testing.assert_close(adv, want)


def test_left_padding_is_equivalent_to_the_unpadded_sequence():
    r = torch.tensor([[0.0, 0.0, 1.0, -1.0, 2.0]])
    mask = torch.tensor([[0, 0, 1, 1, 1]])
    got = discounted_returns(r, 0.9, mask)
    alone = discounted_returns(torch.tensor([[1.0, -1.0, 2.0]]), 0.9)
    torch.testing.assert_close(got[:, 2:], alone)
    assert got[:, :2].abs().sum() == 0


def test_gradients_flow_through_values():
    r = torch.randn(2, 5)
    v = torch.randn(2, 5, requires_grad=True)
    adv, _ = gae(r, v, 0.9, 0.95)
    adv.sum().backward()
    assert v.grad is not None and torch.isfinite(v.grad).all()


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: discounted_returns(torch.zeros(3), 1.5), "gamma must be in [0, 1]"),
        (lambda: discounted_returns(torch.zeros(3), -0.1), "gamma must be in [0, 1]"),
        (lambda: gae(torch.zeros(2, 3), torch.zeros(2, 3), 0.9, 2.0), "lam must be in [0, 1]"),
        (
            lambda: discounted_returns(torch.zeros(2, 3), 0.9, torch.ones(2, 4)),
            "mask has shape (2, 4)",
        ),
        (lambda: gae(torch.zeros(2, 3), torch.zeros(3, 2), 0.9, 0.9), "values has shape (3, 2)"),
        (
            lambda: gae(torch.zeros(2, 3), torch.zeros(2, 3), 0.9, 0.9, last_value=torch.zeros(3)),
            "last_value has shape (3,)",
        ),
        (lambda: discounted_returns(torch.tensor(1.0), 0.9), "rewards must have a time axis"),
    ],
)
def test_bad_input_names_the_argument_and_shapes(call, fragment):
    with pytest.raises(ValueError) as info:
        call()
    assert fragment in str(info.value)
