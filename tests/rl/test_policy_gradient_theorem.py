r"""The policy-gradient theorem, checked numerically on problems whose J(theta) is exact.

grad J(theta) = E[ sum_t gamma^t (G_t - b_t) grad log pi(a_t|s_t) ]  (any action-independent b_t)

The estimate comes from rlalign.rl (discounted_returns + policy_loss, kind="reinforce"); the
exact gradient from autograd through the enumerated J(theta) of rlalign.tabular.
"""

from __future__ import annotations

import pytest
import torch

from rlalign.rl import discounted_returns, policy_loss
from rlalign.tabular import bandit, junction_mdp, train_policy_gradient

CHUNKS, PER_CHUNK = 20, 5000


def reinforce_gradient(mdp, logits, n, gen, baseline):
    """-grad of rlalign's REINFORCE loss on n sampled episodes: an estimate of grad J."""
    theta = logits.detach().clone().requires_grad_(True)
    ep = mdp.sample(theta, n, gen)
    returns = discounted_returns(ep.rewards, mdp.gamma)
    discount = mdp.gamma ** torch.arange(mdp.horizon, dtype=torch.float64)
    adv = discount * (returns - baseline)
    loss, _ = policy_loss(ep.logp, None, adv, kind="reinforce", loss_type="sum")
    (grad,) = torch.autograd.grad(loss, theta)
    return -grad, returns.mean(0).detach()


@pytest.mark.parametrize(
    "make",
    [lambda: bandit([0.2, 1.0, -0.5, 0.4]), lambda: junction_mdp(1.0), lambda: junction_mdp(0.9)],
    ids=["bandit", "mdp-gamma1", "mdp-gamma0.9"],
)
@pytest.mark.parametrize("use_baseline", [False, True])
def test_reinforce_estimate_matches_exact_gradient(make, use_baseline):
    mdp = make()
    gen = torch.Generator().manual_seed(1234)
    logits = 0.5 * torch.randn(mdp.init_logits().shape, generator=gen, dtype=torch.float64)
    theta = logits.clone().requires_grad_(True)
    (exact,) = torch.autograd.grad(mdp.exact_objective(theta), theta)

    baseline = torch.zeros(mdp.horizon, dtype=torch.float64)
    if use_baseline:  # from an independent batch, so it cannot depend on the actions scored
        _, baseline = reinforce_gradient(mdp, logits, PER_CHUNK, gen, baseline)
    estimates = torch.stack(
        [reinforce_gradient(mdp, logits, PER_CHUNK, gen, baseline)[0] for _ in range(CHUNKS)]
    )
    mean = estimates.mean(0)
    stderr = estimates.std(0) / CHUNKS**0.5
    # Stated tolerance: every component within 4.5 standard errors (plus float slack), and the
    # whole gradient within 5% of the exact one in norm.
    assert torch.all((mean - exact).abs() <= 4.5 * stderr + 1e-9), (mean, exact, stderr)
    assert (mean - exact).norm() <= 0.05 * exact.norm()


def test_baseline_reduces_variance():
    # Rewards far from zero: without a baseline every sampled action is pushed up.
    mdp = bandit([10.0, 11.0, 9.0])
    gen = torch.Generator().manual_seed(7)
    logits = mdp.init_logits()
    zero = torch.zeros(mdp.horizon, dtype=torch.float64)
    _, baseline = reinforce_gradient(mdp, logits, PER_CHUNK, gen, zero)
    plain = torch.stack([reinforce_gradient(mdp, logits, 500, gen, zero)[0] for _ in range(40)])
    based = torch.stack([reinforce_gradient(mdp, logits, 500, gen, baseline)[0] for _ in range(40)])
    assert based.var(0).sum() < 0.1 * plain.var(0).sum()


@pytest.mark.parametrize("kind", ["reinforce", "ppo"])
def test_gradient_ascent_reaches_the_optimum(kind):
    mdp = junction_mdp(0.9)
    j_start = mdp.exact_objective(mdp.init_logits()).item()
    theta = train_policy_gradient(mdp, kind=kind, steps=300, batch_size=256, seed=0)
    j_end = mdp.exact_objective(theta).item()
    j_star = mdp.optimal_objective()
    assert j_end > j_start
    assert j_star - j_end <= 0.03 * (j_star - j_start), (j_start, j_end, j_star)


def test_exact_objective_of_a_bandit_is_the_expected_reward():
    mdp = bandit([1.0, 3.0])
    logits = torch.tensor([[[0.0, torch.log(torch.tensor(3.0)).item()]]], dtype=torch.float64)
    # pi = (1/4, 3/4): J = 1/4 * 1 + 3/4 * 3
    assert mdp.exact_objective(logits).item() == pytest.approx(2.5)
    assert mdp.optimal_objective() == pytest.approx(3.0)


def test_optimal_objective_matches_brute_force_over_deterministic_policies():
    """Backward induction against the best of every deterministic time-dependent policy, each
    valued by expanding its tree of next states in plain floats (no tensors: thousands of
    policies in a second)."""
    import itertools

    mdp = junction_mdp(0.9)
    H, S, A = mdp.horizon, mdp.num_states, mdp.num_actions
    P, R, start = mdp.transitions.tolist(), mdp.rewards.tolist(), mdp.start.tolist()

    def value(choice: tuple[int, ...], t: int, s: int) -> float:
        if t == H:
            return 0.0
        a = choice[t * S + s]
        ahead = sum(p * value(choice, t + 1, nxt) for nxt, p in enumerate(P[s][a]) if p)
        return R[s][a] + mdp.gamma * ahead

    best = max(
        sum(start[s] * value(choice, 0, s) for s in range(S) if start[s])
        for choice in itertools.product(range(A), repeat=H * S)
    )
    assert mdp.optimal_objective() == pytest.approx(best, abs=1e-9)
