"""gSDE's state-dependent Gaussian and actions rescaled to the Box, against independent references
(torch.distributions, explicit loops over features and action dimensions, hand-computed ends)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st

from rlalign.control.exploration import GSDE_EPS, scale_to_bounds
from rlalign.control.networks import ActorCritic, net_spec_for
from rlalign.control.policy_io import load_policy, save_policy
from rlalign.control.ppo import train_ppo
from rlalign.control.train_config import PPOConfig
from rlalign.errors import UserError

OBS, ACT, HIDDEN = 4, 3, [16, 8]


def gsde_net(seed: int = 0, **kw) -> ActorCritic:
    spec = net_spec_for(
        spaces.Box(-1, 1, (OBS,)), spaces.Box(-2, 2, (ACT,)), HIDDEN, "tanh",
        exploration="gsde", **kw,
    )  # fmt: skip
    torch.manual_seed(seed)
    net = ActorCritic(spec)
    with torch.no_grad():  # distinct sigma_ij, so that a mixed-up index shows
        net.log_std.copy_(torch.linspace(-1.5, 0.5, HIDDEN[-1] * ACT).reshape(HIDDEN[-1], ACT))
    return net


def loop_std(features: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """sigma_j(s) = sqrt(sum_i z_i^2 sigma_ij^2 + eps), one scalar at a time."""
    b, d = features.shape
    m = log_std.shape[1]
    out = torch.empty(b, m)
    for k in range(b):
        for j in range(m):
            var = sum(
                float(features[k, i]) ** 2 * float(log_std[i, j].exp()) ** 2 for i in range(d)
            )
            out[k, j] = (var + GSDE_EPS) ** 0.5
    return out


def test_gsde_log_prob_and_entropy_match_torch_normal() -> None:
    net = gsde_net()
    obs = torch.randn(6, OBS, generator=torch.Generator().manual_seed(1))
    acts = torch.randn(6, ACT, generator=torch.Generator().manual_seed(2))
    out = net.policy(obs)
    features = net.actor[:-1](obs)
    std = loop_std(features.detach(), net.log_std.detach())
    ref = torch.distributions.Normal(net.actor(obs), std)
    torch.testing.assert_close(out.std, std)
    torch.testing.assert_close(net.log_prob(out, acts), ref.log_prob(acts).sum(-1))
    torch.testing.assert_close(net.entropy(out), ref.entropy().sum(-1).mean())
    mask = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    keep = mask.bool()
    torch.testing.assert_close(net.entropy(out, mask), ref.entropy().sum(-1)[keep].mean())
    assert torch.equal(net.mode(out), out.mean)


def test_gsde_gradients_reach_log_std_and_the_mean_but_not_the_features_through_the_std() -> None:
    net, ref_net = gsde_net(), gsde_net()
    obs = torch.randn(5, OBS, generator=torch.Generator().manual_seed(3))
    acts = torch.randn(5, ACT, generator=torch.Generator().manual_seed(4))
    net.log_prob(net.policy(obs), acts).sum().backward()
    # Reference: torch's Normal with the std built from detached features.
    z = ref_net.actor[:-1](obs)
    std = torch.sqrt((z.detach() ** 2) @ torch.exp(2 * ref_net.log_std) + GSDE_EPS)
    torch.distributions.Normal(ref_net.actor[-1](z), std).log_prob(acts).sum().backward()
    for (name, p), (_, q) in zip(net.named_parameters(), ref_net.named_parameters(), strict=True):
        if name.startswith("critic"):
            continue
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    assert float(net.log_std.grad.abs().sum()) > 0


def test_gsde_noise_is_features_times_the_held_matrix() -> None:
    net = gsde_net()
    gen = torch.Generator().manual_seed(5)
    mats = net.sample_sde_matrices(4, gen)
    assert mats.shape == (4, HIDDEN[-1], ACT)
    obs = torch.randn(4, OBS, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out = net.policy(obs)
        a = net.sample(out, gen, mats)
        again = net.sample(out, gen, mats)
    assert torch.equal(a, again)  # held noise: the same state gets the same action
    z = net.actor[:-1](obs).detach()
    for k in range(4):
        expected = out.mean[k] + torch.stack(
            [sum(z[k, i] * mats[k, i, j] for i in range(HIDDEN[-1])) for j in range(ACT)]
        )
        torch.testing.assert_close(a[k], expected)


def test_gsde_matrices_have_the_learned_spread_and_the_marginal_std() -> None:
    net = gsde_net()
    gen = torch.Generator().manual_seed(7)
    mats = net.sample_sde_matrices(20_000, gen)
    sigma = net.log_std.detach().exp()
    torch.testing.assert_close(mats.std(0), sigma, rtol=0.05, atol=0.0)
    # The noise z^T E of one state, over many E, has the per-state std of the policy.
    obs = torch.randn(1, OBS, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        out = net.policy(obs)
        noise = net.sample(
            out._replace(
                mean=out.mean.expand(20_000, ACT), features=out.features.expand(20_000, -1)
            ),
            gen,
            mats,
        )
    torch.testing.assert_close(noise.std(0), out.std[0], rtol=0.05, atol=0.0)
    # Without held matrices a sample is a fresh draw from the same Gaussian.
    with torch.no_grad():
        many = out._replace(mean=out.mean.expand(20_000, ACT), std=out.std.expand(20_000, ACT))
        fresh = net.sample(many, gen)
    torch.testing.assert_close(fresh.std(0), out.std[0], rtol=0.05, atol=0.0)


def test_log_std_init_sets_the_first_spread() -> None:
    spec = net_spec_for(
        spaces.Box(-1, 1, (OBS,)), spaces.Box(-1, 1, (2,)), [8], "tanh", log_std_init=-1.5
    )
    assert torch.equal(ActorCritic(spec).log_std.detach(), torch.full((2,), -1.5))
    net = gsde_net(log_std_init=-2.0)  # (gsde_net then overwrites it; check the shape)
    assert net.log_std.shape == (HIDDEN[-1], ACT)


def test_box_only_options_are_refused_on_discrete_actions() -> None:
    obs = spaces.Box(-1, 1, (OBS,))
    for kw, text in (
        ({"exploration": "gsde"}, "use_sde=true"),
        ({"rescale_actions": True}, "rescale_actions=true"),
        ({"log_std_init": -1.0}, "log_std_init=-1.0"),
    ):
        with pytest.raises(UserError, match=f"{text}: for Box .*Discrete\\(2\\)"):
            net_spec_for(obs, spaces.Discrete(2), [8], "tanh", **kw)


def test_scale_to_bounds_hand_computed() -> None:
    low, high = np.array([-2.0, 0.0, 10.0]), np.array([2.0, 1.0, 30.0])
    u = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.5, -0.5, 5.0]])
    expected = np.array([[-2.0, 0.0, 10.0], [2.0, 1.0, 30.0], [0.0, 0.5, 20.0], [1.0, 0.25, 30.0]])
    np.testing.assert_array_equal(scale_to_bounds(u, low, high), expected)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=2),
    st.floats(1e-3, 1e3),
    st.floats(-5.0, 5.0),
    st.floats(-5.0, 5.0),
)
def test_scale_to_bounds_stays_in_bounds_and_is_monotone(lo_hi, width, u1, u2) -> None:
    low = np.array([min(lo_hi)], dtype=np.float32)
    high = (low + np.float32(width)).astype(np.float32)
    a1, a2 = scale_to_bounds(np.array([u1]), low, high), scale_to_bounds(np.array([u2]), low, high)
    for a in (a1, a2):
        assert low[0] <= a[0] <= high[0]
    if u1 <= u2:
        assert a1[0] <= a2[0]


def test_rescaled_actions_reach_the_env_in_its_units() -> None:
    env = gym.make("Pendulum-v1")  # torque in [-2, 2]
    spec = net_spec_for(env.observation_space, env.action_space, [8], "tanh", rescale_actions=True)
    net = ActorCritic(spec)
    u = torch.tensor([[-1.0], [-0.25], [0.5], [3.0]])
    np.testing.assert_allclose(net.to_env_actions(u), [[-2.0], [-0.5], [1.0], [2.0]])
    assert net.to_env_actions(u).dtype == np.float32
    for a in net.to_env_actions(torch.randn(100, 1) * 5):
        assert env.action_space.contains(a)


def test_gsde_and_rescaled_policy_round_trip(tmp_path) -> None:
    env = gym.make("Pendulum-v1")
    spec = net_spec_for(
        env.observation_space, env.action_space, [8, 8], "tanh",
        exploration="gsde", log_std_init=-1.0, rescale_actions=True,
    )  # fmt: skip
    torch.manual_seed(0)
    net = ActorCritic(spec)
    save_policy(tmp_path, net, None, {"env_id": "Pendulum-v1", "env_kwargs": {}, "algo": "ppo"})
    agent = load_policy(tmp_path)
    assert agent.net.sde and agent.net.spec.rescale_actions
    for k, v in net.state_dict().items():
        assert torch.equal(agent.net.state_dict()[k], v), k
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net.to_env_actions(net.actor(torch.from_numpy(obs)))
    np.testing.assert_array_equal(agent(obs), expected)


def _gsde_cfg(**kw) -> PPOConfig:
    base = dict(
        seed=0, total_steps=4 * 2 * 30, n_envs=2, n_steps=30, num_iterations=1,
        minibatch_size=30, hidden_sizes=[8], eval_every=10**9, eval_episodes=1,
        use_sde=True, sde_sample_freq=8, save_every=2 * 30, keep_checkpoints=None,
    )  # fmt: skip
    return PPOConfig(**{**base, **kw})


def test_gsde_training_resumes_bit_identical(tmp_path) -> None:
    """The noise matrices are drawn again at every rollout's start, so a checkpoint (taken
    between rollouts) holds all a resumed run needs to continue as if it never stopped (30
    steps a rollout, new noise every 8: a schedule that ran on across rollouts would show)."""
    import shutil

    straight = tmp_path / "straight"
    a = train_ppo("Pendulum-v1", _gsde_cfg(), run_dir=straight, progress=False)
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    for later in ("step_180", "step_240"):
        shutil.rmtree(resumed / "checkpoints" / later)
    b = train_ppo("Pendulum-v1", _gsde_cfg(), run_dir=resumed, progress=False, resume=True)
    assert b.resumed_from is not None and b.resumed_from.endswith("step_120")
    for k, v in a.net.state_dict().items():
        assert torch.equal(b.net.state_dict()[k], v), k
