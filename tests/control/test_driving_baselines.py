"""The shipped drivers: the rule-based one never collides; all produce valid actions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import rlalign  # noqa: F401
from rlalign.control.baselines import BASELINES, make_baseline
from rlalign.control.evaluate import evaluate


@pytest.mark.parametrize(
    "env_id,episodes", [("rlalign/Driving-v0", 100), ("rlalign/DrivingContinuous-v0", 40)]
)
def test_rule_based_never_collides(env_id: str, episodes: int) -> None:
    cfg = gym.make(env_id).unwrapped.cfg
    stats = evaluate(lambda: gym.make(env_id), make_baseline("rule_based", cfg), episodes, seed=0)
    assert sum(stats.collisions) == 0
    assert sum(stats.off_road) == 0
    assert np.mean(stats.arrived) >= 0.95  # and it gets there
    assert sum(stats.red_lights) <= 1  # and (all but perhaps once in a dilemma zone) obeys


def test_rule_based_beats_naive_baselines() -> None:
    cfg = gym.make("rlalign/Driving-v0").unwrapped.cfg
    make = lambda: gym.make("rlalign/Driving-v0")  # noqa: E731
    res = {b: evaluate(make, make_baseline(b, cfg), 30, seed=100).summary() for b in BASELINES}
    assert res["rule_based"]["return"] > res["constant_speed"]["return"] > res["random"]["return"]
    # The constant-speed driver ignores lights and obstacles: it collides and runs reds.
    assert res["constant_speed"]["collision_rate"] > 0.0
    assert res["constant_speed"]["red_lights_per_episode"] > 0.0


@pytest.mark.parametrize("env_id", ["rlalign/Driving-v0", "rlalign/DrivingContinuous-v0"])
@pytest.mark.parametrize("name", BASELINES)
def test_baseline_actions_are_valid(env_id: str, name: str) -> None:
    env = gym.make(env_id)
    policy = make_baseline(name, env.unwrapped.cfg, seed=0)
    obs, _ = env.reset(seed=0)
    batch = np.stack([obs] * 5)
    actions = policy(batch)
    assert len(actions) == 5
    for a in actions:
        assert env.action_space.contains(np.asarray(a, dtype=env.action_space.dtype))


def test_unknown_baseline() -> None:
    cfg = gym.make("rlalign/Driving-v0").unwrapped.cfg
    with pytest.raises(ValueError, match="rule_based"):
        make_baseline("careful", cfg)
