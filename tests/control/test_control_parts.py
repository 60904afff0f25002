"""Normalisers, the actor-critic's log-probabilities and the safetensors policy format."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st

from rlalign.control.networks import ActorCritic, net_spec_for
from rlalign.control.normalize import ObsNormalizer, RewardScaler, RunningMeanStd
from rlalign.control.policy_io import load_policy, save_policy
from rlalign.errors import UserError


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=6), st.integers(0, 1000))
def test_running_mean_std_matches_numpy(sizes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    batches = [rng.normal(3.0, 2.0, size=(n, 3)) for n in sizes]
    rms = RunningMeanStd((3,), epsilon=0.0 + 1e-12)
    for b in batches:
        rms.update(b)
    allx = np.concatenate(batches)
    np.testing.assert_allclose(rms.mean, allx.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rms.var, allx.var(0), rtol=1e-5, atol=1e-6)


def test_obs_normalizer_standardises() -> None:
    rng = np.random.default_rng(0)
    norm = ObsNormalizer((2,))
    x = rng.normal([5.0, -3.0], [10.0, 0.1], size=(5000, 2))
    y = norm(x, update=True)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-2)
    np.testing.assert_allclose(y.std(0), 1.0, atol=1e-2)


def test_reward_scaler_divides_by_return_std() -> None:
    scaler = RewardScaler(n_envs=1, gamma=0.0)  # gamma 0: the "return" is the reward itself
    rng = np.random.default_rng(0)
    for _ in range(3000):
        scaler(rng.normal(0.0, 5.0, size=1), np.array([False]))
    out = scaler(np.array([5.0]), np.array([False]))
    assert out[0] == pytest.approx(1.0, rel=0.1)


def test_categorical_log_prob_and_entropy_match_torch() -> None:
    spec = net_spec_for(spaces.Box(-1, 1, (4,)), spaces.Discrete(3), [16], "tanh")
    torch.manual_seed(0)
    net = ActorCritic(spec)
    obs = torch.randn(7, 4)
    logits = net.actor(obs)
    acts = torch.randint(0, 3, (7,))
    dist = torch.distributions.Categorical(logits=logits)
    torch.testing.assert_close(net.log_prob(logits, acts), dist.log_prob(acts))
    torch.testing.assert_close(net.entropy(logits), dist.entropy().mean())


def test_gaussian_log_prob_and_entropy_match_torch() -> None:
    spec = net_spec_for(spaces.Box(-1, 1, (4,)), spaces.Box(-2, 2, (3,)), [16], "relu")
    torch.manual_seed(0)
    net = ActorCritic(spec)
    with torch.no_grad():
        net.log_std.copy_(torch.tensor([-0.5, 0.0, 0.3]))
    obs = torch.randn(5, 4)
    mean = net.actor(obs)
    acts = torch.randn(5, 3)
    dist = torch.distributions.Normal(mean, net.log_std.exp())
    torch.testing.assert_close(net.log_prob(mean, acts), dist.log_prob(acts).sum(-1))
    torch.testing.assert_close(net.entropy(mean), dist.entropy().sum(-1).mean())
    # Env actions are clipped to the Box; the sample itself is not.
    big = torch.full((1, 3), 10.0)
    assert np.all(net.to_env_actions(big) == 2.0)


def test_unsupported_spaces_are_user_errors() -> None:
    with pytest.raises(UserError, match="Discrete and 1-D Box"):
        net_spec_for(spaces.Box(-1, 1, (4,)), spaces.MultiDiscrete([2, 3]), [8], "tanh")
    with pytest.raises(UserError, match="flat Box observation"):
        net_spec_for(spaces.Discrete(5), spaces.Discrete(2), [8], "tanh")
    with pytest.raises(UserError, match="bounded Box"):
        net_spec_for(spaces.Box(-1, 1, (4,)), spaces.Box(-math.inf, math.inf, (2,)), [8], "tanh")


def _saved(tmp_path, env_id="CartPole-v1"):
    env = gym.make(env_id)
    spec = net_spec_for(env.observation_space, env.action_space, [32, 32], "tanh")
    torch.manual_seed(0)
    net = ActorCritic(spec)
    norm = ObsNormalizer((spec.obs_dim,))
    norm(np.random.default_rng(0).normal(size=(100, spec.obs_dim)), update=True)
    save_policy(tmp_path, net, norm, {"env_id": env_id, "env_kwargs": {}, "algo": "ppo"})
    return net, norm


def test_policy_round_trip_is_exact(tmp_path) -> None:
    net, norm = _saved(tmp_path)
    agent = load_policy(tmp_path)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(agent.net.state_dict()[k], v, rtol=0, atol=0)
    np.testing.assert_array_equal(agent.obs_norm.rms.mean, norm.rms.mean)
    obs = np.random.default_rng(1).normal(size=(20, 4)).astype(np.float32)
    with torch.no_grad():
        expected = net.actor(torch.from_numpy(norm(obs))).argmax(-1).numpy()
    np.testing.assert_array_equal(agent(obs), expected)
    meta = json.loads((tmp_path / "policy.json").read_text())
    assert meta["env_id"] == "CartPole-v1" and meta["net"]["hidden_sizes"] == [32, 32]
    # The weights file is safetensors (a JSON header, no pickle).
    raw = (tmp_path / "policy.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert "obs_norm.mean" in header and "actor.0.weight" in header


def test_load_policy_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="not a directory"):
        load_policy(tmp_path / "missing")
    with pytest.raises(UserError, match=r"no policy\.json"):
        load_policy(tmp_path)
    _saved(tmp_path)
    (tmp_path / "policy.json").write_text("{broken")
    with pytest.raises(UserError, match="invalid JSON"):
        load_policy(tmp_path)
