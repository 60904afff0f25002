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


def episodes(mask, dones):
    """The valid steps of one row, split into episodes: each ends at a step with done = 1.

    Masked positions are removed from the sequence first (their dones with them).
    """
    out, current = [], []
    for t in range(len(mask)):
        if not mask[t]:
            continue
        current.append(t)
        if dones[t]:
            out.append((current, True))
            current = []
    if current:
        out.append((current, False))  # the last episode runs on past the row
    return out


def brute_gae(rewards, values, gamma, lam, mask=None, last_value=0.0, dones=None):
    """Schulman's GAE written out, one episode at a time.

    In an episode of steps s_0..s_n: delta_i = r_i + gamma V(s_{i+1}) - V(s_i), with V after
    the last step 0 if the episode ended (done) and ``last_value`` if it runs on past the row;
    A_i = sum_k (gamma*lam)^k delta_{i+k}, summed inside the episode only.
    """
    T = len(rewards)
    mask = mask or [1] * T
    dones = dones or [0] * T
    adv = [0.0] * T
    for steps, ended in episodes(mask, dones):
        after = 0.0 if ended else last_value
        deltas = []
        for i, t in enumerate(steps):
            v_next = values[steps[i + 1]] if i + 1 < len(steps) else after
            deltas.append(rewards[t] + gamma * v_next - values[t])
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


@settings(max_examples=100, deadline=None)
@given(batches(), st.sampled_from(GAMMAS), st.sampled_from([0.0, 0.5, 0.95, 1.0]))
def test_gae_matches_loop_with_masks_and_dones(batch, gamma, lam):
    rewards, values, mask, dones, boot = batch
    adv, ret = gae(
        torch.tensor(rewards, dtype=torch.float64),
        torch.tensor(values, dtype=torch.float64),
        gamma,
        lam,
        torch.tensor(mask),
        last_value=torch.tensor(boot, dtype=torch.float64),
        dones=torch.tensor(dones),
    )
    want = [
        brute_gae(r, v, gamma, lam, m, b, d)
        for r, v, m, b, d in zip(rewards, values, mask, boot, dones, strict=True)
    ]
    want_t = torch.tensor(want, dtype=torch.float64)
    torch.testing.assert_close(adv, want_t, atol=1e-8, rtol=1e-8)
    m = torch.tensor(mask, dtype=torch.float64)
    torch.testing.assert_close(ret, (want_t + torch.tensor(values, dtype=torch.float64)) * m)


@settings(max_examples=60, deadline=None)
@given(batches(), st.sampled_from(GAMMAS), st.sampled_from([0.0, 0.5, 0.95, 1.0]), st.data())
def test_a_done_splits_the_row_into_independent_episodes(batch, gamma, lam, data):
    """GAE and G_t of a row with a done at step k equal those of its two halves computed
    apart: the first as a finished episode, the second with the row's bootstrap."""
    rewards, values, _, _, boot = batch
    r = torch.tensor(rewards[0], dtype=torch.float64)
    v = torch.tensor(values[0], dtype=torch.float64)
    b = torch.tensor(boot[0], dtype=torch.float64)
    k = data.draw(st.integers(0, len(r) - 1))
    dones = torch.zeros(len(r))
    dones[k] = 1
    adv, ret = gae(r, v, gamma, lam, last_value=b, dones=dones)
    first_adv, first_ret = gae(r[: k + 1], v[: k + 1], gamma, lam)
    rest_adv, rest_ret = gae(r[k + 1 :], v[k + 1 :], gamma, lam, last_value=b)
    torch.testing.assert_close(adv, torch.cat([first_adv, rest_adv]), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(ret, torch.cat([first_ret, rest_ret]), atol=1e-9, rtol=1e-9)
    g = discounted_returns(r, gamma, dones=dones, bootstrap=b)
    halves = [
        discounted_returns(r[: k + 1], gamma),
        discounted_returns(r[k + 1 :], gamma, bootstrap=b),
    ]
    torch.testing.assert_close(g, torch.cat(halves), atol=1e-9, rtol=1e-9)


def test_gae_with_an_episode_end_hand_computed():
    # Two episodes in one row: steps 0-1 end with done at step 1, steps 2-3 run on (V after = 4).
    # gamma = lam = 0.5, so gamma * lam = 0.25.
    #   episode 1: delta_1 = 2 + 0 - 1 = 1 (no bootstrap across the end), A_1 = 1
    #              delta_0 = 1 + 0.5 * 1 - 0.5 = 1,                         A_0 = 1 + 0.25 * 1 = 1.25
    #   episode 2: delta_3 = 4 + 0.5 * 4 - 2 = 4,                            A_3 = 4
    #              delta_2 = 3 + 0.5 * 2 - 1.5 = 2.5,                        A_2 = 2.5 + 0.25 * 4 = 3.5
    r = torch.tensor([1.0, 2.0, 3.0, 4.0])
    v = torch.tensor([0.5, 1.0, 1.5, 2.0])
    adv, ret = gae(r, v, 0.5, 0.5, last_value=4.0, dones=torch.tensor([0, 1, 0, 0]))
    assert adv.tolist() == [1.25, 1.0, 3.5, 4.0]
    assert ret.tolist() == [1.75, 2.0, 5.0, 6.0]


def test_discounted_returns_with_an_episode_end_hand_computed():
    # done after step 0: G_0 = 1 alone; G_2 = 3 + 0.5 * 10 = 8, G_1 = 2 + 0.5 * 8 = 6
    got = discounted_returns(
        torch.tensor([1.0, 2.0, 3.0]), 0.5, dones=torch.tensor([1, 0, 0]), bootstrap=10.0
    )
    assert got.tolist() == [1.0, 6.0, 8.0]


def test_a_done_at_a_masked_position_is_ignored():
    # A masked position is removed from the sequence, its done flag with it.
    r = torch.tensor([1.0, 0.0, 2.0])
    v = torch.tensor([0.5, 0.0, 1.0])
    mask = torch.tensor([1, 0, 1])
    dones = torch.tensor([0, 1, 0])
    adv, _ = gae(r, v, 0.5, 1.0, mask, dones=dones)
    want, _ = gae(r[[0, 2]], v[[0, 2]], 0.5, 1.0)
    torch.testing.assert_close(adv[[0, 2]], want)
    g = discounted_returns(r, 0.5, mask, dones=dones)
    torch.testing.assert_close(g[[0, 2]], discounted_returns(r[[0, 2]], 0.5))


def test_worked_example_from_the_readme():
    # rewards after actions 0, 1, 2 are r_1 = 1, r_2 = 0, r_3 = 2; gamma = 0.5
    # G_0 = 1 + 0.5*0 + 0.25*2 = 1.5, G_1 = 0 + 0.5*2 = 1, G_2 = 2
    got = discounted_returns(torch.tensor([1.0, 0.0, 2.0]), gamma=0.5)
    assert got.tolist() == [1.5, 1.0, 2.0]


def test_gamma_zero_is_the_immediate_reward():
    r = torch.randn(3, 7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(discounted_returns(r, 0.0), r)


def test_gamma_one_is_the_reward_to_go():
    r = torch.randn(2, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
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
    g = torch.Generator().manual_seed(0)
    r = torch.randn(2, 5, generator=g)
    v = torch.randn(2, 5, generator=g, requires_grad=True)
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


# --- precision: the caller's, never silently lowered -------------------------------------------


def test_a_float64_input_makes_gae_float64():
    g = torch.Generator().manual_seed(2)
    r = torch.randn(2, 6, generator=g).double()  # float32 values, held exactly in float64
    v = torch.randn(2, 6, generator=g, dtype=torch.float64)
    last = torch.randn(2, generator=g, dtype=torch.float64)
    want_adv, want_ret = gae(r, v, 0.99, 0.95, last_value=last)
    # float32 rewards beside float64 values and bootstrap: computed in float64, not rounded to
    # float32, so the answer is the all-float64 one to the last digits
    adv, ret = gae(r.float(), v, 0.99, 0.95, last_value=last)
    assert adv.dtype == ret.dtype == torch.float64
    torch.testing.assert_close(adv, want_adv, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(ret, want_ret, rtol=1e-13, atol=1e-13)
    # any one float64 input is enough
    assert gae(r.float(), v.float(), 0.99, 0.95, last_value=last)[0].dtype == torch.float64
    assert gae(r.float(), v, 0.99, 0.95)[0].dtype == torch.float64
    assert gae(r, v.float(), 0.99, 0.95)[0].dtype == torch.float64
    assert gae(r.float(), v.float(), 0.99, 0.95)[0].dtype == torch.float32


def test_a_float64_bootstrap_makes_discounted_returns_float64():
    r = torch.tensor([[1.0, 0.0, 2.0]])
    boot = torch.tensor([1 / 3], dtype=torch.float64)
    got = discounted_returns(r, 0.9, bootstrap=boot)
    assert got.dtype == torch.float64
    want = [[1 + 0.9**2 * 2 + 0.9**3 / 3, 0.9 * 2 + 0.9**2 / 3, 2 + 0.9 / 3]]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-14, atol=1e-14)
    # a Python float bootstrap is taken at the rewards' precision
    got = discounted_returns(torch.zeros(1, 1, dtype=torch.float64), 0.5, bootstrap=1 / 3)
    assert got.item() == 0.5 * (1 / 3)


def test_integer_rewards_are_not_truncated():
    got = discounted_returns(torch.tensor([1, 0, 2]), gamma=0.5)
    assert got.dtype == torch.get_default_dtype()
    assert got.tolist() == [1.5, 1.0, 2.0]
    adv, ret = gae(torch.tensor([1, 0, 2]), torch.zeros(3), 0.5, 1.0)
    assert adv.tolist() == ret.tolist() == [1.5, 1.0, 2.0]
