"""The highway-env wrapper (optional extra): the seed's stop action and reward terms."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("highway_env")

import gymnasium as gym

import rlalign  # noqa: F401
from rlalign.control.driving_env import ACTION_NAMES


@pytest.mark.slow
def test_highway_seed_wrapper_stop_progress_and_braking() -> None:
    env = gym.make("rlalign/HighwayChapter-v0")
    assert env.action_space.n == len(ACTION_NAMES)
    assert env.unwrapped is not None and env.get_wrapper_attr("action_names") == ACTION_NAMES
    obs, _ = env.reset(seed=0)
    assert obs.ndim == 1 and env.observation_space.contains(obs)
    vehicle = env.unwrapped.vehicle
    x0 = float(vehicle.position[0])
    obs, r, term, trunc, info = env.step(0)  # keep
    comps = info["reward_components"]
    dx = float(env.unwrapped.vehicle.position[0]) - x0
    assert dx > 0 and comps["progress"] == pytest.approx(0.01 * dx)
    assert r == pytest.approx(sum(comps.values()))
    speeds, abrupt = [], []
    for _ in range(4):  # stop: brake to a standstill
        obs, r, term, trunc, info = env.step(5)
        speeds.append(float(env.unwrapped.vehicle.speed))
        abrupt.append(info["abrupt_brake"])
        if term or trunc:
            break
    assert speeds[-1] < 1.0 and np.all(np.diff(speeds) <= 1e-6)
    assert abrupt[0] and info["reward_components"]["abrupt_brake"] == 0.0  # at rest: no penalty


def test_the_old_id_still_makes_the_env_with_a_warning():
    with pytest.warns(FutureWarning, match="HighwayChapter-v0"):
        env = gym.make("rlalign/HighwaySeed-v0")
    assert isinstance(env.unwrapped, type(gym.make("rlalign/HighwayChapter-v0").unwrapped))
    env.close()
