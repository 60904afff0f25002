"""Group (GRPO), leave-one-out (RLOO) baselines and whitening against hand computations."""

from __future__ import annotations

import statistics

import pytest
import torch

from rlalign.rl import group_advantages, rloo_advantages, whiten


def test_group_advantages_hand_computed():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0])  # two prompts, three responses each
    # group 1: mean 1/3, unbiased std sqrt(1/3); group 2: mean 5/3, std sqrt(1/3)
    std = (1 / 3) ** 0.5
    want = torch.tensor([2 / 3, -1 / 3, -1 / 3, -2 / 3, 1 / 3, 1 / 3]) / (std + 1e-4)
    torch.testing.assert_close(group_advantages(scores, 3), want)


def test_group_advantages_no_scaling_is_dr_grpo():
    scores = torch.tensor([3.0, 1.0, 10.0, 14.0])
    torch.testing.assert_close(
        group_advantages(scores, 2, scale="none"), torch.tensor([1.0, -1.0, -2.0, 2.0])
    )


def test_group_advantages_batch_scale_uses_the_batch_std():
    scores = torch.tensor([3.0, 1.0, 10.0, 14.0])
    sd = statistics.stdev([3.0, 1.0, 10.0, 14.0])
    torch.testing.assert_close(
        group_advantages(scores, 2, scale="batch", eps=0.0),
        torch.tensor([1.0, -1.0, -2.0, 2.0]) / sd,
    )


def test_equal_scores_give_zero_advantage():
    assert group_advantages(torch.ones(8), 4).abs().max() == 0
    assert group_advantages(torch.tensor([0.5, 2.0]), 1).abs().max() == 0


def test_rloo_hand_computed():
    scores = torch.tensor([1.0, 2.0, 6.0])
    # baseline of each is the mean of the other two: 4, 3.5, 1.5
    torch.testing.assert_close(rloo_advantages(scores, 3), torch.tensor([-3.0, -1.5, 4.5]))


def test_rloo_baseline_does_not_depend_on_own_score():
    scores = torch.tensor([1.0, 2.0, 6.0, 0.0], requires_grad=True)
    adv = rloo_advantages(scores, 4)
    (grad,) = torch.autograd.grad(adv[0], scores)
    # d A_0 / d s_0 = 1 (own score), d A_0 / d s_j = -1/(G-1) (others)
    torch.testing.assert_close(grad, torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]))


def test_whiten_matches_torch_mean_and_std():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, generator=g, dtype=torch.float64)
    mask = torch.rand(5, 7, generator=g) > 0.4
    got = whiten(x, mask)
    vals = x[mask]
    want = (vals - vals.mean()) / torch.sqrt(vals.var() + 1e-8)
    torch.testing.assert_close(got[mask], want)
    assert got[~mask].abs().sum() == 0


def test_whiten_without_mean_shift_keeps_the_mean():
    x = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)
    got = whiten(x, shift_mean=False)
    torch.testing.assert_close(got, (x - 3.0) / torch.sqrt(x.var() + 1e-8) + 3.0)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: group_advantages(torch.zeros(7), 3), "group_size=3 does not divide"),
        (lambda: group_advantages(torch.zeros(7), 3), "shape (7,)"),
        (lambda: rloo_advantages(torch.zeros(6), 4), "group_size=4 does not divide"),
        (lambda: rloo_advantages(torch.zeros(6), 1), "group_size >= 2"),
        (lambda: group_advantages(torch.zeros(2, 3), 3), "scores must be 1-D"),
        (lambda: group_advantages(torch.zeros(6), 0), "group_size must be a positive int"),
        (lambda: group_advantages(torch.zeros(6), 3, scale="max"), "scale must be"),
        (lambda: whiten(torch.zeros(3), torch.zeros(3)), "mask selects no element"),
    ],
)
def test_bad_input(call, fragment):
    with pytest.raises(ValueError) as info:
        call()
    assert fragment in str(info.value)
