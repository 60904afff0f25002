"""GRPO and RLOO baselines, whitening and masked means, against hand computations."""

from __future__ import annotations

import statistics

import pytest
import torch

from rlalign.rl import group_advantages, masked_mean, masked_sum, rloo_advantages, whiten


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


def test_scale_group_is_an_alias_of_std():
    scores = torch.tensor([1.0, 4.0, 2.0, 0.0, 5.0, 5.0])
    torch.testing.assert_close(
        group_advantages(scores, 3, scale="group"), group_advantages(scores, 3, scale="std")
    )


def test_groups_of_two_hand_computed():
    # each pair's std (unbiased) is |a - b| / sqrt(2): here sqrt(2) and 0
    got = group_advantages(torch.tensor([1.0, 3.0, 2.0, 2.0]), 2)
    s = 2**0.5 + 1e-4
    torch.testing.assert_close(got, torch.tensor([-1 / s, 1 / s, 0.0, 0.0]))


def test_batch_scale_hand_computed_with_eps():
    got = group_advantages(torch.tensor([1.0, 3.0]), 2, scale="batch", eps=0.5)
    s = 2**0.5 + 0.5  # the std of the two scores, plus eps
    torch.testing.assert_close(got, torch.tensor([-1 / s, 1 / s]))
    # a batch of one score has no spread: advantage 0, not NaN
    assert group_advantages(torch.tensor([0.5]), 1, scale="batch").tolist() == [0.0]


def test_rloo_with_several_groups_and_pairs():
    # pairs: the baseline of each is the other score
    assert rloo_advantages(torch.tensor([1.0, 3.0]), 2).tolist() == [-2.0, 2.0]
    # two groups of three: each baseline is the mean of the other two in its own group
    got = rloo_advantages(torch.tensor([1.0, 2.0, 6.0, 0.0, 3.0, 3.0]), 3)
    assert got.tolist() == [-3.0, -1.5, 4.5, -3.0, 1.5, 1.5]


def test_masked_sum_and_mean_against_indexing():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 6, generator=g) > 0.5
    torch.testing.assert_close(masked_sum(x, mask), x[mask].sum())
    torch.testing.assert_close(masked_mean(x, mask), x[mask].mean())
    torch.testing.assert_close(masked_sum(x), x.sum())
    torch.testing.assert_close(masked_mean(x), x.mean())
    one = torch.zeros(4, 6, dtype=torch.bool)
    one[2, 3] = True
    assert masked_mean(x, one) == x[2, 3]  # one valid element: its value
    assert masked_mean(x, torch.zeros_like(one)) == 0  # none: 0


def test_whiten_with_one_and_two_valid_elements():
    # one valid element: no spread, it is its own mean: 0 (not an error)
    assert whiten(torch.tensor([5.0, 7.0]), torch.tensor([1, 0])).tolist() == [0.0, 0.0]
    # two: mean 2, unbiased variance ((1-2)^2 + (3-2)^2) / 1 = 2
    got = whiten(torch.tensor([1.0, 3.0, 9.0]), torch.tensor([1, 1, 0]), eps=0.25)
    torch.testing.assert_close(got, torch.tensor([-1 / 2.25**0.5, 1 / 2.25**0.5, 0.0]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_whiten_keeps_the_dtype(dtype):
    x = torch.tensor([1.0, 3.0, 2.0], dtype=dtype)
    assert whiten(x).dtype == dtype
    assert whiten(x, torch.tensor([True, True, False])).dtype == dtype
