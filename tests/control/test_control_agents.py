"""PPO and REINFORCE learn (CartPole), handle Box actions, and are deterministic per seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlalign.control.envs import env_factory
from rlalign.control.evaluate import evaluate
from rlalign.control.ppo import train_ppo
from rlalign.control.reinforce import train_reinforce
from rlalign.control.train_config import PPOConfig, ReinforceConfig, defaults_for

# Learning is checked on three training seeds: a threshold met on one seed may be luck.
LEARNING_SEEDS = [0, 1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("seed", LEARNING_SEEDS)
def test_ppo_solves_cartpole_within_100k_steps(seed: int) -> None:
    cfg = PPOConfig(**{**defaults_for("CartPole-v1", "ppo"), "seed": seed})
    assert cfg.total_steps <= 100_000
    res = train_ppo("CartPole-v1", cfg, progress=False)
    assert res.env_steps_to_solve is not None and res.env_steps_to_solve <= 100_000
    assert max(e["return"] for e in res.evals) >= 475.0
    # The final policy, on 20 fresh episodes, still balances the pole.
    stats = evaluate(env_factory("CartPole-v1"), res.agent(), 20, seed=12345)
    assert np.mean(stats.returns) >= 400.0


@pytest.mark.slow
@pytest.mark.parametrize("seed", LEARNING_SEEDS)
def test_reinforce_improves_cartpole(seed: int) -> None:
    make = env_factory("CartPole-v1")
    cfg = ReinforceConfig(
        **{**defaults_for("CartPole-v1", "reinforce"), "total_steps": 50_000, "eval_every": 50_000,
           "seed": seed}
    )  # fmt: skip
    res = train_reinforce("CartPole-v1", cfg, progress=False)
    # A random policy balances about 22 steps; an untrained network about as long.
    torch.manual_seed(0)
    from rlalign.control.networks import ActorCritic

    untrained = ActorCritic(res.net.spec)
    from rlalign.control.policy_io import Agent

    before = np.mean(evaluate(make, Agent(untrained, None, {}), 20, seed=5).returns)
    after = np.mean(evaluate(make, res.agent(), 20, seed=5).returns)
    assert before < 60.0
    assert after > 3.0 * before and after > 100.0


def _short_ppo(env_id: str, seed: int, **kw) -> PPOConfig:
    base = dict(
        seed=seed, total_steps=1024, n_envs=4, n_steps=64, num_iterations=2, minibatch_size=64,
        eval_every=1024, eval_episodes=2, hidden_sizes=[16, 16],
    )  # fmt: skip
    return PPOConfig(**{**base, **kw})


def test_ppo_is_deterministic_per_seed() -> None:
    a = train_ppo("CartPole-v1", _short_ppo("CartPole-v1", 3), progress=False)
    b = train_ppo("CartPole-v1", _short_ppo("CartPole-v1", 3), progress=False)
    c = train_ppo("CartPole-v1", _short_ppo("CartPole-v1", 4), progress=False)
    for k, v in a.net.state_dict().items():
        torch.testing.assert_close(b.net.state_dict()[k], v, rtol=0, atol=0)
    assert any(not torch.equal(c.net.state_dict()[k], v) for k, v in a.net.state_dict().items())


def test_ppo_box_actions_on_pendulum_and_driving() -> None:
    for env_id in ("Pendulum-v1", "rlalign/DrivingContinuous-v0"):
        res = train_ppo(env_id, _short_ppo(env_id, 0), progress=False)
        assert res.env_steps == 1024
        assert res.net.spec.kind == "box"
        make = env_factory(env_id)
        env = make()
        obs, _ = env.reset(seed=0)
        act = res.agent()(obs[None])[0]
        assert env.action_space.contains(act)
        assert np.isfinite(res.evals[-1]["return"])


def test_reinforce_box_actions_run() -> None:
    cfg = ReinforceConfig(seed=0, total_steps=600, n_envs=2, eval_every=600, eval_episodes=1)
    res = train_reinforce("Pendulum-v1", cfg, progress=False)
    assert res.env_steps >= 600 and res.net.spec.kind == "box"
    assert all(torch.isfinite(p).all() for p in res.net.parameters())


def test_keep_best_restores_the_best_evaluated_policy() -> None:
    from rlalign.control.training import selection_seed

    cfg = _short_ppo("CartPole-v1", 1, total_steps=4096, eval_every=1024, keep_best=True)
    res = train_ppo("CartPole-v1", cfg, progress=False)
    assert len(res.evals) == 4
    best = max(res.evals, key=lambda e: e["return"])
    assert res.best_eval == {"env_steps": best["env_steps"], "return": best["return"]}
    # Re-evaluating the kept policy on the selection episodes reproduces its score exactly.
    again = evaluate(env_factory("CartPole-v1"), res.agent(), 2, selection_seed(1))
    assert np.mean(again.returns) == pytest.approx(best["return"])


def test_reinforce_normalises_by_the_observations_of_envs_still_playing():
    """Episodes of one batch end at different steps; an ended one's last observation must not
    be counted again at every step until the longest ends (against a count of real steps, and
    the mean and variance of exactly the observations the agent acted on)."""
    import gymnasium as gym

    import rlalign  # noqa: F401  (registers the ids)
    from rlalign.control.networks import ActorCritic, net_spec_for
    from rlalign.control.normalize import ObsNormalizer
    from rlalign.control.reinforce import _play

    torch.manual_seed(0)
    envs = [gym.make("rlalign/Driving-v0") for _ in range(4)]
    seen: list[np.ndarray] = []
    for env in envs:  # every observation an action was taken on
        real_step = env.step

        def step(action, real_step=real_step, env=env):
            seen.append(np.asarray(env.unwrapped._observe(), dtype=np.float64))
            return real_step(action)

        env.step = step
    spec = net_spec_for(envs[0].observation_space, envs[0].action_space, [16], "tanh", "reinforce")
    norm = ObsNormalizer((spec.obs_dim,))
    batch = _play(envs, ActorCritic(spec), norm, torch.Generator().manual_seed(0), [0, 1, 2, 3])
    lengths = batch["mask"].sum(1).tolist()
    assert len(set(lengths)) > 1  # episodes of different lengths
    assert batch["steps"] == len(seen)
    assert norm.rms.count == pytest.approx(len(seen), abs=1e-3)  # its prior count is 1e-4
    np.testing.assert_allclose(norm.rms.mean, np.mean(seen, axis=0), atol=1e-4)
    np.testing.assert_allclose(norm.rms.var, np.var(seen, axis=0), atol=1e-4)
