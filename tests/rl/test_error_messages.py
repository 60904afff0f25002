"""Every argument check of the RL core, at every place it is made, word for word.

A message names the argument, what is wrong with it and the shapes involved, so that a caller
can fix the call without reading the source; the exact text is the contract.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from rlalign.rl import (
    discounted_returns,
    entropy,
    gae,
    group_advantages,
    kl_estimate,
    masked_mean,
    masked_sum,
    policy_loss,
    policy_loss_normalizer,
    rloo_advantages,
    token_entropy,
    value_loss,
    whiten,
)

z = torch.zeros
MUST_MATCH = "{} has shape {} but {} has shape {}; they must match"

CASES = {
    # policy_loss and its normaliser
    "logp not a tensor": (
        lambda: policy_loss([[0.0]], None, z(1, 1)),
        "logp must be a torch.Tensor, got list",
    ),
    "logp 1-D": (
        lambda: policy_loss(z(3), None, z(3), kind="reinforce"),
        "logp must be (B, T), got shape (3,)",
    ),
    "policy_loss mask": (
        lambda: policy_loss(z(2, 3), None, z(2, 3), z(2, 4), kind="reinforce"),
        MUST_MATCH.format("mask", (2, 4), "logp", (2, 3)),
    ),
    "advantages": (
        lambda: policy_loss(z(2, 3), None, z(3, 3), kind="reinforce"),
        MUST_MATCH.format("advantages", (3, 3), "logp", (2, 3)),
    ),
    "old_logp of reinforce": (
        lambda: policy_loss(z(2, 3), z(2, 4), z(2, 3), kind="reinforce"),
        MUST_MATCH.format("old_logp", (2, 4), "logp", (2, 3)),
    ),
    "old_logp of ppo": (
        lambda: policy_loss(z(2, 3), z(2, 4), z(2, 3), kind="ppo"),
        MUST_MATCH.format("old_logp", (2, 4), "logp", (2, 3)),
    ),
    "old_logp missing": (
        lambda: policy_loss(z(2, 3), None, z(2, 3), kind="ppo"),
        "old_logp is required for kind='ppo'",
    ),
    "ref_logp": (
        lambda: policy_loss(z(2, 3), z(2, 3), z(2, 3), ref_logp=z(2, 4)),
        MUST_MATCH.format("ref_logp", (2, 4), "logp", (2, 3)),
    ),
    "beta without ref_logp": (
        lambda: policy_loss(z(2, 3), z(2, 3), z(2, 3), beta=0.1),
        "beta > 0 needs ref_logp (the reference policy's log-probs)",
    ),
    "normalizer 0": (
        lambda: policy_loss(z(2, 3), z(2, 3), z(2, 3), normalizer=0.0),
        "normalizer must be > 0, got 0.0",
    ),
    "clip range": (
        lambda: policy_loss(z(2, 3), z(2, 3), z(2, 3), clip_eps_low=-0.1),
        "clip ranges must satisfy 0 <= clip_eps_low < 1 and clip_eps_high >= 0, "
        "got low=-0.1, high=0.2",
    ),
    "kind": (
        lambda: policy_loss(z(2, 3), z(2, 3), z(2, 3), kind="a2c"),
        "kind must be 'reinforce' or 'ppo', got 'a2c'",
    ),
    "loss_type": (
        lambda: policy_loss(z(2, 3), z(2, 3), z(2, 3), loss_type="mean"),
        "loss_type must be one of 'grpo' ('sequence'), 'dapo' ('token'), 'dr_grpo' "
        "('constant') or 'sum', got 'mean'",
    ),
    "normaliser mask not a tensor": (
        lambda: policy_loss_normalizer([[1.0]]),
        "mask must be a torch.Tensor, got list",
    ),
    "normaliser mask 1-D": (
        lambda: policy_loss_normalizer(z(3)),
        "mask must be (B, T), got shape (3,)",
    ),
    # value loss and entropy
    "returns": (
        lambda: value_loss(z(2, 3), None, z(2, 4)),
        MUST_MATCH.format("returns", (2, 4), "values", (2, 3)),
    ),
    "value_loss mask": (
        lambda: value_loss(z(2, 3), None, z(2, 3), z(2, 4)),
        MUST_MATCH.format("mask", (2, 4), "values", (2, 3)),
    ),
    "value clipping without old_values": (
        lambda: value_loss(z(2, 3), None, z(2, 3), clip_eps=0.2),
        "value clipping (clip_eps) needs old_values",
    ),
    "old_values": (
        lambda: value_loss(z(2, 3), z(2, 4), z(2, 3), clip_eps=0.2),
        MUST_MATCH.format("old_values", (2, 4), "values", (2, 3)),
    ),
    "logits not a tensor": (
        lambda: token_entropy([[0.0, 1.0]]),
        "logits must be a torch.Tensor, got list",
    ),
    "entropy mask": (
        lambda: entropy(z(2, 3, 5), z(2, 4)),
        MUST_MATCH.format("mask", (2, 4), "logits[..., 0]", (2, 3)),
    ),
    # KL
    "kl ref_logp": (
        lambda: kl_estimate(z(2, 3), z(2, 4)),
        MUST_MATCH.format("ref_logp", (2, 4), "logp", (2, 3)),
    ),
    "kl ref_logp not a tensor": (
        lambda: kl_estimate(z(2, 3), [[0.0]]),
        "ref_logp must be a torch.Tensor, got list",
    ),
    "kl mask": (
        lambda: kl_estimate(z(2, 3), z(2, 3), mask=z(2, 4)),
        MUST_MATCH.format("mask", (2, 4), "logp", (2, 3)),
    ),
    "kl kind": (
        lambda: kl_estimate(z(2, 3), z(2, 3), kind="k4"),
        "kind must be 'k1', 'k2' or 'k3', got 'k4'",
    ),
    # group baselines
    "scores not a tensor": (
        lambda: group_advantages([1.0, 2.0], 2),
        "scores must be a torch.Tensor, got list",
    ),
    "scores 2-D": (
        lambda: group_advantages(z(2, 2), 2),
        "scores must be 1-D (num_prompts * group_size,), got shape (2, 2)",
    ),
    "group_size 0": (
        lambda: group_advantages(z(4), 0),
        "group_size must be a positive int, got 0",
    ),
    "group_size not dividing": (
        lambda: group_advantages(z(5), 2),
        "group_size=2 does not divide the number of scores (scores has shape (5,))",
    ),
    "scale": (
        lambda: group_advantages(z(4), 2, scale="max"),
        "scale must be 'std', 'group', 'batch' or 'none', got 'max'",
    ),
    "rloo group of one": (
        lambda: rloo_advantages(z(4), 1),
        "rloo_advantages needs group_size >= 2, got 1",
    ),
    # masked statistics
    "whiten x not a tensor": (lambda: whiten([1.0, 2.0]), "x must be a torch.Tensor, got list"),
    "whiten mask": (lambda: whiten(z(3), z(4)), MUST_MATCH.format("mask", (4,), "x", (3,))),
    "whiten empty mask": (
        lambda: whiten(z(3), z(3)),
        "whiten: mask selects no element of x (shape (3,))",
    ),
    "masked_sum x not a tensor": (lambda: masked_sum([1.0]), "x must be a torch.Tensor, got list"),
    "masked_sum mask": (
        lambda: masked_sum(z(3), z(4)),
        MUST_MATCH.format("mask", (4,), "x", (3,)),
    ),
    "masked_mean x not a tensor": (
        lambda: masked_mean([1.0]),
        "x must be a torch.Tensor, got list",
    ),
    "masked_mean mask": (
        lambda: masked_mean(z(3), z(4)),
        MUST_MATCH.format("mask", (4,), "x", (3,)),
    ),
    # returns and GAE
    "rewards not a tensor": (
        lambda: discounted_returns([1.0], 0.9),
        "rewards must be a torch.Tensor, got list",
    ),
    "returns of a scalar": (
        lambda: discounted_returns(torch.tensor(1.0), 0.9),
        "rewards must have a time axis (shape (..., T)), got a scalar",
    ),
    "returns gamma": (
        lambda: discounted_returns(z(3), 1.5),
        "gamma must be in [0, 1], got 1.5",
    ),
    "returns mask": (
        lambda: discounted_returns(z(2, 3), 0.9, z(2, 4)),
        MUST_MATCH.format("mask", (2, 4), "rewards", (2, 3)),
    ),
    "returns dones": (
        lambda: discounted_returns(z(2, 3), 0.9, dones=z(2, 4)),
        MUST_MATCH.format("dones", (2, 4), "rewards", (2, 3)),
    ),
    "bootstrap": (
        lambda: discounted_returns(z(2, 3), 0.9, bootstrap=z(3)),
        "bootstrap has shape (3,) but must have shape (2,) "
        "(the leading dimensions of rewards, shape (2, 3))",
    ),
    "gae of a scalar": (
        lambda: gae(torch.tensor(1.0), torch.tensor(1.0), 0.9, 0.9),
        "rewards must have a time axis (shape (..., T)), got a scalar",
    ),
    "gae values": (
        lambda: gae(z(2, 3), z(3, 2), 0.9, 0.9),
        MUST_MATCH.format("values", (3, 2), "rewards", (2, 3)),
    ),
    "gae gamma": (lambda: gae(z(2, 3), z(2, 3), -0.1, 0.9), "gamma must be in [0, 1], got -0.1"),
    "gae lam": (lambda: gae(z(2, 3), z(2, 3), 0.9, 2.0), "lam must be in [0, 1], got 2.0"),
    "gae mask": (
        lambda: gae(z(2, 3), z(2, 3), 0.9, 0.9, z(2, 4)),
        MUST_MATCH.format("mask", (2, 4), "rewards", (2, 3)),
    ),
    "gae dones": (
        lambda: gae(z(2, 3), z(2, 3), 0.9, 0.9, dones=z(3)),
        MUST_MATCH.format("dones", (3,), "rewards", (2, 3)),
    ),
    "last_value": (
        lambda: gae(z(2, 3), z(2, 3), 0.9, 0.9, last_value=z(3)),
        "last_value has shape (3,) but must have shape (2,) "
        "(the leading dimensions of rewards, shape (2, 3))",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_the_message_says_what_is_wrong_and_where(case):
    call, message = CASES[case]
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_kind_grpo_warns_once_pointing_at_the_caller():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        policy_loss(z(2, 3), z(2, 3), z(2, 3), kind="grpo")
    assert [(w.category, str(w.message)) for w in caught] == [
        (
            FutureWarning,
            "policy_loss(kind='grpo') is kind='ppo' (the clipped surrogate GRPO uses); "
            "'grpo' is accepted until the next release",
        )
    ]
    # The warning names the caller's line. (Under `make mutation`, mutmut's trampoline stands
    # between this test and policy_loss, and so is the caller.)
    assert caught[0].filename == __file__ or Path(caught[0].filename).name == "trampoline.py"
