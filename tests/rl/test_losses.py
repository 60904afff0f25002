"""policy_loss, value_loss, entropy and the KL estimators, checked with autograd and references."""

from __future__ import annotations

import math

import pytest
import torch

from rlalign.rl import (
    entropy,
    kl_estimate,
    policy_loss,
    policy_loss_normalizer,
    token_entropy,
    value_loss,
)

LOSS_TYPES = ["grpo", "dapo", "dr_grpo", "sum"]
KINDS = ["reinforce", "ppo", "ppo+kl"]  # ppo+kl: the clipped surrogate with beta > 0


def make_batch(seed=0, B=6, T=9):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    old = logp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    ref = logp + 0.2 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.tensor([9, 1, 4, 7, 2, 5])[:B]
    mask = (torch.arange(T)[None, :] < lengths[:, None]).double()
    return logp, old, ref, adv, mask


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_micro_batches_sum_to_the_full_batch_gradient(kind, loss_type):
    """Uneven lengths across micro-batches; each micro-batch uses the full batch's normaliser."""
    logp0, old, ref, adv, mask = make_batch()
    beta = 0.1 if kind == "ppo+kl" else 0.0
    kw = dict(
        kind=kind.removesuffix("+kl"),
        loss_type=loss_type,
        ref_logp=ref if beta else None,
        beta=beta,
    )
    n = policy_loss_normalizer(mask, loss_type)

    full = logp0.clone().requires_grad_(True)
    loss, _ = policy_loss(full, old, adv, mask, normalizer=n, **kw)
    (g_full,) = torch.autograd.grad(loss, full)

    micro = logp0.clone().requires_grad_(True)
    total = 0.0
    for rows in ([0, 1], [2], [3, 4, 5]):  # 10, 4 and 14 tokens
        part, _ = policy_loss(
            micro[rows],
            old[rows],
            adv[rows],
            mask[rows],
            normalizer=n,
            **{**kw, "ref_logp": ref[rows] if beta else None},
        )
        total = total + part
    (g_micro,) = torch.autograd.grad(total, micro)
    torch.testing.assert_close(g_micro, g_full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(total, loss)


def test_micro_batches_with_their_own_normaliser_would_differ():
    """The bug the explicit normaliser prevents: per-micro-batch token means are not the mean."""
    logp, old, _, adv, mask = make_batch()
    full, _ = policy_loss(logp, old, adv, mask, loss_type="dapo")
    halves = [
        policy_loss(logp[r], old[r], adv[r], mask[r], loss_type="dapo")[0]
        for r in ([0, 1], [2, 3, 4, 5])
    ]
    assert not torch.isclose(sum(halves) / 2, full)


def test_aggregations_hand_computed():
    logp = torch.zeros(2, 3, requires_grad=True)
    adv = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # at logp = 0 the per-token loss is 0 but the gradient of -A*logp is -A
    for loss_type, want in [
        ("grpo", [[-1 / 3 / 2, -2 / 3 / 2, -3 / 3 / 2], [-4 / 1 / 2, 0, 0]]),
        ("dapo", [[-1 / 4, -2 / 4, -3 / 4], [-4 / 4, 0, 0]]),
        ("dr_grpo", [[-1 / 6, -2 / 6, -3 / 6], [-4 / 6, 0, 0]]),
        ("sum", [[-1 / 2, -2 / 2, -3 / 2], [-4 / 2, 0, 0]]),
    ]:
        loss, _ = policy_loss(logp, None, adv, mask, kind="reinforce", loss_type=loss_type)
        (grad,) = torch.autograd.grad(loss, logp)
        torch.testing.assert_close(grad, torch.tensor(want), msg=loss_type)


def test_sequence_level_advantages_broadcast():
    logp, old, _, _, mask = make_batch()
    seq_adv = torch.randn(
        logp.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    a, _ = policy_loss(logp, old, seq_adv, mask)
    b, _ = policy_loss(logp, old, seq_adv[:, None].expand_as(logp), mask)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(("low", "high"), [(0.2, 0.2), (0.2, 0.28), (0.1, 0.5)])
def test_ppo_clipping_zeroes_gradients_exactly_on_the_wrong_side(low, high):
    ratios = torch.tensor([0.5, 0.79, 0.85, 1.0, 1.15, 1.25, 1.6, 3.0], dtype=torch.float64)
    ratios = torch.cat([ratios, ratios])
    adv = torch.cat([torch.ones(8), -torch.ones(8)]).double() * 2.0
    old = torch.full_like(ratios, -1.0)
    logp = (old + ratios.log()).clone().requires_grad_(True)
    loss, stats = policy_loss(
        logp[None],
        old[None],
        adv[None],
        kind="ppo",
        clip_eps_low=low,
        clip_eps_high=high,
        loss_type="sum",
    )
    (grad,) = torch.autograd.grad(loss, logp)
    outside = ((adv > 0) & (ratios > 1 + high)) | ((adv < 0) & (ratios < 1 - low))
    assert torch.all(grad[outside] == 0)
    # inside (or on the right side), d/dlogp of -ratio*A = -ratio*A
    torch.testing.assert_close(grad[~outside], -(ratios * adv)[~outside])
    assert stats["clip_fraction"].item() == pytest.approx(outside.double().mean().item())


def test_ppo_equals_reinforce_gradient_on_policy():
    logp, _, _, adv, mask = make_batch(seed=3)
    x = logp.clone().requires_grad_(True)
    ppo, stats = policy_loss(x, logp, adv, mask, kind="ppo")
    (g_ppo,) = torch.autograd.grad(ppo, x)
    rf, _ = policy_loss(x, None, adv, mask, kind="reinforce")
    (g_rf,) = torch.autograd.grad(rf, x)
    torch.testing.assert_close(g_ppo, g_rf)
    assert stats["clip_fraction"] == 0 and abs(stats["approx_kl"]) < 1e-12


def test_grpo_kl_term_adds_beta_times_k3():
    logp, old, ref, adv, mask = make_batch(seed=4)
    base, _ = policy_loss(logp, old, adv, mask, kind="ppo", loss_type="dapo")
    with_kl, stats = policy_loss(
        logp, old, adv, mask, kind="ppo", loss_type="dapo", ref_logp=ref, beta=0.5
    )
    k3 = torch.exp(ref - logp) - (ref - logp) - 1
    want = base + 0.5 * (k3 * mask).sum() / mask.sum()
    torch.testing.assert_close(with_kl, want)
    torch.testing.assert_close(stats["ref_kl"], (k3 * mask).sum() / mask.sum())


def test_approx_kl_is_k3_of_old_vs_new():
    logp, old, _, adv, mask = make_batch(seed=5)
    _, stats = policy_loss(logp, old, adv, mask)
    r = torch.exp(logp - old)
    torch.testing.assert_close(
        stats["approx_kl"], (((r - 1) - (logp - old)) * mask).sum() / mask.sum()
    )


def test_kl_estimators_are_unbiased_against_exact_kl():
    """Sampling a ~ pi: E[k1] = E[k3] = KL(pi || ref) exactly; k2 is close for nearby policies."""
    g = torch.Generator().manual_seed(0)
    pi = torch.distributions.Categorical(logits=torch.randn(6, generator=g, dtype=torch.float64))
    ref = torch.distributions.Categorical(
        logits=pi.logits + 0.3 * torch.randn(6, generator=g, dtype=torch.float64)
    )
    exact = torch.distributions.kl_divergence(pi, ref).item()
    # exact expectation: sum over actions weighted by pi (no sampling noise)
    a = torch.arange(6)
    w = pi.probs
    for kind, tol in [("k1", 1e-12), ("k3", 1e-12), ("k2", 0.1 * exact)]:
        est = (w * kl_estimate(pi.log_prob(a), ref.log_prob(a), kind=kind)).sum().item()
        assert est == pytest.approx(exact, abs=tol), kind
    assert (kl_estimate(pi.log_prob(a), ref.log_prob(a), "k3") >= 0).all()


def test_value_loss_plain_and_clipped():
    v = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    old = torch.tensor([[1.5, 2.0, 1.0]])
    ret = torch.tensor([[0.0, 2.5, 3.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    plain = value_loss(v, None, ret, mask)
    assert plain.item() == pytest.approx(0.5 * (1.0 + 0.25) / 2)
    clipped = value_loss(v, old, ret, mask, clip_eps=0.2)
    # pos 0: v-old=-0.5 -> clipped value 1.3: max(1.0, 1.69); pos 1: unchanged 0.25
    assert clipped.item() == pytest.approx(0.5 * (1.69 + 0.25) / 2)


def test_entropy_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g, dtype=torch.float64) * 4
    mask = torch.rand(3, 5, generator=g) > 0.3
    want = torch.distributions.Categorical(logits=logits).entropy()
    # float64 in, float64 out: agreement to the last digits, not to float32's
    got = token_entropy(logits)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    mean = entropy(logits, mask)
    assert mean.dtype == torch.float64
    torch.testing.assert_close(mean, want[mask].mean(), rtol=1e-12, atol=1e-12)
    # uniform distribution over V actions has entropy ln V
    assert entropy(torch.zeros(2, 7)).item() == pytest.approx(math.log(7))


def test_entropy_keeps_float32_and_computes_low_precision_in_float32():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 9, generator=g) * 3
    want = torch.distributions.Categorical(logits=logits.double()).entropy()
    got = token_entropy(logits)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    for low in (torch.bfloat16, torch.float16):
        rounded = logits.to(low)
        got = token_entropy(rounded)
        assert got.dtype == torch.float32, low
        want = torch.distributions.Categorical(logits=rounded.double()).entropy()
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5, msg=str(low))


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (
            lambda: policy_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3)),
            "old_logp has shape (2, 4)",
        ),
        (
            lambda: policy_loss(torch.zeros(2, 3), None, torch.zeros(3, 3)),
            "advantages has shape (3, 3)",
        ),
        (lambda: policy_loss(torch.zeros(2, 3), None, torch.zeros(2, 3)), "old_logp is required"),
        (
            lambda: policy_loss(
                torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), kind="a2c"
            ),
            "kind must be",
        ),
        (
            lambda: policy_loss(
                torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), loss_type="mean"
            ),
            "loss_type must be",
        ),
        (
            lambda: policy_loss(
                torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), kind="ppo", beta=0.1
            ),
            "beta > 0 needs ref_logp",
        ),
        (
            lambda: policy_loss(torch.zeros(3), None, torch.zeros(3), kind="reinforce"),
            "logp must be (B, T)",
        ),
        (lambda: kl_estimate(torch.zeros(2), torch.zeros(3)), "ref_logp has shape (3,)"),
        (lambda: kl_estimate(torch.zeros(2), torch.zeros(2), kind="k4"), "kind must be"),
        (
            lambda: value_loss(torch.zeros(2), None, torch.zeros(2), clip_eps=0.2),
            "needs old_values",
        ),
    ],
)
def test_bad_input(call, fragment):
    with pytest.raises(ValueError) as info:
        call()
    assert fragment in str(info.value)


@pytest.mark.parametrize("kind", ["ppo", "reinforce"])
def test_extreme_log_probs_on_masked_positions_give_finite_gradients(kind):
    """Padding after a completion can carry any log-prob (here -200: exp(200) overflows fp32);
    the loss and its gradient must ignore it, not turn it into inf x 0 = NaN."""
    logp = torch.tensor([[-1.0, -0.5, -200.0], [-0.7, -200.0, -300.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    old = torch.tensor([[-1.1, -0.4, 0.0], [-0.6, 0.0, 0.0]])
    ref = torch.tensor([[-0.9, -0.6, 0.0], [-0.8, 0.0, 0.0]])
    loss, _ = policy_loss(
        logp, old, torch.tensor([1.0, -1.0]), mask, kind=kind, ref_logp=ref, beta=0.1
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    assert (logp.grad[mask == 0] == 0).all()


def test_kind_grpo_is_the_clipped_surrogate_with_a_warning():
    logp, old, ref, adv, mask = make_batch(seed=5)
    want, _ = policy_loss(logp, old, adv, mask, kind="ppo", ref_logp=ref, beta=0.2)
    with pytest.warns(FutureWarning, match="kind='ppo'"):
        got, _ = policy_loss(logp, old, adv, mask, kind="grpo", ref_logp=ref, beta=0.2)
    assert torch.equal(got, want)


def test_normaliser_defaults_aliases_and_edges():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert policy_loss_normalizer(mask) == 2.0  # default "grpo": sequences
    assert policy_loss_normalizer(mask, "sequence") == 2.0
    assert policy_loss_normalizer(mask, "token") == 3.0
    assert policy_loss_normalizer(mask, "constant") == 6.0
    assert policy_loss_normalizer(mask, "dr_grpo", max_length=10) == 20.0
    one = torch.tensor([[0.0, 1.0, 0.0]])
    assert policy_loss_normalizer(one, "dapo") == 1.0
    assert policy_loss_normalizer(torch.zeros(2, 3), "dapo") == 1.0  # never 0


def test_advantages_are_taken_in_the_precision_of_logp():
    logp = torch.zeros(1, 2, requires_grad=True)
    loss, _ = policy_loss(logp, None, torch.ones(1, 2, dtype=torch.float64), kind="reinforce")
    assert loss.dtype == torch.float32


@pytest.mark.parametrize(
    ("low", "high", "ok"),
    [
        (0.0, 0.0, True),  # the boundaries are allowed
        (0.99, 5.0, True),
        (-0.1, 0.2, False),
        (0.2, -0.1, False),
        (1.0, 0.2, False),
    ],
)
def test_clip_ranges_bounds(low, high, ok):
    def call():
        return policy_loss(
            torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), clip_eps_low=low,
            clip_eps_high=high,
        )  # fmt: skip

    if ok:
        call()
    else:
        with pytest.raises(ValueError, match="clip ranges must satisfy"):
            call()


def test_clip_statistics_hand_computed():
    # clip range [0.8, 1.2]; ratio = exp(logp - old)
    ratio = torch.tensor([[1.5, 1.5, 0.5, 0.5, 0.5, 1.0]])
    adv = torch.tensor([[0.5, 0.0, -0.5, 0.5, 0.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
    logp = ratio.log()
    _, stats = policy_loss(logp, torch.zeros(1, 6), adv, mask, clip_eps=0.2)
    # clipped branch active: positive advantage above 1.2 (token 0), negative below 0.8
    # (token 2); a zero advantage never, a positive one below the range neither
    assert stats["clip_fraction"].item() == pytest.approx(2 / 5)
    assert stats["ratio_mean"].item() == pytest.approx((1.5 + 1.5 + 0.5 + 0.5 + 0.5) / 5)
    want_kl = sum(r - 1 - math.log(r) for r in (1.5, 1.5, 0.5, 0.5, 0.5)) / 5
    assert stats["approx_kl"].item() == pytest.approx(want_kl)


def test_a_ratio_at_a_range_edge_is_not_clipped():
    # clip_eps 0: the range is [1, 1]; a ratio of exactly 1 is inside it, on either side
    logp = torch.zeros(1, 2, requires_grad=True)
    _, stats = policy_loss(logp, torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]), clip_eps=0.0)
    assert stats["clip_fraction"].item() == 0.0


def test_statistics_of_a_single_valid_token():
    logp = torch.tensor([[math.log(1.5), 9.0]])
    _, stats = policy_loss(
        logp, torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([[1.0, 0.0]]), clip_eps=0.2
    )
    assert stats["ratio_mean"].item() == pytest.approx(1.5)
    assert stats["clip_fraction"].item() == 1.0


def test_in_loss_kl_uses_the_chosen_estimator():
    g = torch.Generator().manual_seed(4)
    logp = -torch.rand(2, 5, generator=g, dtype=torch.float64)
    ref = -torch.rand(2, 5, generator=g, dtype=torch.float64)
    for kind in ("k1", "k2", "k3"):
        _, stats = policy_loss(logp, logp, torch.ones(2, 5), ref_logp=ref, kl_kind=kind)
        torch.testing.assert_close(stats["ref_kl"], kl_estimate(logp, ref, kind=kind).mean())


def test_kl_estimate_defaults_to_k3():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -0.5])
    torch.testing.assert_close(kl_estimate(logp, ref), kl_estimate(logp, ref, kind="k3"))


def test_masked_positions_whose_ratio_would_overflow_are_ignored():
    # A masked position whose log-ratio is +250 (exp overflows to inf) must neither reach the
    # loss nor its gradient as inf x 0 = NaN.
    logp = torch.tensor([[-1.0, -50.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -300.0]])
    loss, stats = policy_loss(logp, old, torch.ones(1, 2), torch.tensor([[1.0, 0.0]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    assert all(torch.isfinite(v) for v in stats.values())


def test_value_clipping_above_the_old_value_hand_computed():
    # old 0, clip 0.2, V = 1, R = 2: unclipped (1 - 2)^2 = 1, clipped (0.2 - 2)^2 = 3.24;
    # PPO takes the larger, 3.24, halved
    got = value_loss(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([2.0]), clip_eps=0.2)
    assert got.item() == pytest.approx(0.5 * 3.24)
    # and below: V = -1, R = -2: (-0.2 + 2)^2 = 3.24 again
    got = value_loss(torch.tensor([-1.0]), torch.tensor([0.0]), torch.tensor([-2.0]), clip_eps=0.2)
    assert got.item() == pytest.approx(0.5 * 3.24)


def test_value_loss_and_entropy_use_the_given_normaliser():
    v, r = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])
    assert value_loss(v, None, r, normalizer=4.0).item() == pytest.approx(0.5 * 10 / 4)
    one = torch.tensor([1.0, 0.0])
    assert value_loss(v, None, r, one).item() == pytest.approx(0.5)  # one valid: its own loss
    logits = torch.zeros(2, 4)  # uniform over 4: entropy ln 4 at each position
    assert entropy(logits, normalizer=4.0).item() == pytest.approx(2 * math.log(4) / 4)
    assert entropy(logits, one).item() == pytest.approx(math.log(4))
