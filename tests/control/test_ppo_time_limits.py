"""PPO's time-limit bootstrap: r + gamma V(s') for a truncated step, nothing for a terminated one.

The pure function against hand-computed values, then PPO itself on one-step episodes, where the
value the critic learns tells which steps were bootstrapped: an episode that always hits its time
limit after one step of reward 1 is worth 1 / (1 - gamma) (the return had it continued), one that
always terminates is worth 1.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlalign.control.ppo import bootstrap_time_limits, train_ppo
from rlalign.control.train_config import PPOConfig


def _never_called(envs):
    raise AssertionError(f"final_values called for envs {envs.tolist()}")


def test_hand_computed_batch():
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    terminated = np.array([False, True, False, True, False])
    truncated = np.array([False, False, True, True, True])
    values = np.array([100.0, 200.0, 10.0, 7.0, -20.0], dtype=np.float32)  # V(s') of each env
    asked = []

    def final_values(envs):
        asked.append(envs.tolist())
        return values[envs]

    got = bootstrap_time_limits(rewards, terminated, truncated, 0.5, final_values)
    # env 0 runs on, env 1 terminated, env 2 truncated: 3 + 0.5 * 10 = 8, env 3 terminated and
    # truncated at once (terminal wins), env 4 truncated: 5 + 0.5 * (-20) = -5
    np.testing.assert_array_equal(got, [1.0, 2.0, 8.0, 4.0, -5.0])
    assert asked == [[2, 4]]  # once, only for the envs cut by the time limit
    assert got.dtype == np.float64
    np.testing.assert_array_equal(rewards, [1.0, 2.0, 3.0, 4.0, 5.0])  # the input is kept


def test_a_terminated_step_is_not_bootstrapped():
    got = bootstrap_time_limits(
        np.array([1.5]), np.array([True]), np.array([False]), 0.99, _never_called
    )
    assert got.tolist() == [1.5]


def test_a_truncated_step_is_bootstrapped_once_with_gamma():
    got = bootstrap_time_limits(
        np.array([1.5]), np.array([False]), np.array([True]), 0.5, lambda envs: np.array([3.0])
    )
    assert got.tolist() == [1.5 + 0.5 * 3.0]


def test_running_episodes_ask_for_no_value():
    rewards = np.array([0.25, -1.0], dtype=np.float32)
    got = bootstrap_time_limits(rewards, np.zeros(2, bool), np.zeros(2, bool), 0.9, _never_called)
    assert got.dtype == np.float64 and got.tolist() == [0.25, -1.0]


# --- PPO end to end: what the critic learns on one-step episodes --------------------------------


class _OneStepEnv(gym.Env):
    """One observation, reward 1 per step; terminal after every step, or never (then gymnasium's
    TimeLimit, max_episode_steps=1, truncates every step)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.array([0.5], dtype=np.float32), {}

    def step(self, action):
        return np.array([0.5], dtype=np.float32), 1.0, self.terminal, False, {}


ENVS = {"rlalign_test/OneStepTimeLimit-v0": False, "rlalign_test/OneStepTerminal-v0": True}
for _env_id, _terminal in ENVS.items():
    if _env_id not in gym.registry:
        gym.register(
            _env_id,
            entry_point=_OneStepEnv,
            kwargs={"terminal": _terminal},
            max_episode_steps=1,
        )


@pytest.mark.parametrize(
    ("env_id", "want"),
    [("rlalign_test/OneStepTimeLimit-v0", 1 / (1 - 0.5)), ("rlalign_test/OneStepTerminal-v0", 1.0)],
)
def test_ppo_critic_learns_the_bootstrapped_value(env_id, want):
    cfg = PPOConfig(
        seed=0,
        gamma=0.5,
        total_steps=2 * 16 * 20,  # 20 updates
        n_envs=2,
        n_steps=16,
        minibatch_size=32,
        num_iterations=10,
        learning_rate=0.02,
        anneal_lr=False,
        normalize_obs=False,
        normalize_reward=False,
        eval_every=10**9,
        eval_episodes=1,
        final_eval_episodes=1,
        save_every=None,
    )
    res = train_ppo(env_id, cfg, progress=False)
    with torch.no_grad():
        v = float(res.net.value(torch.tensor([[0.5]])))
    assert v == pytest.approx(want, abs=0.05), f"V = {v}, want {want}"
