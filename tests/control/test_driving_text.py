"""The car in words: the sentence against the simulator's state, the action words, and how far
the rule-based driver's choice is a function of the sentence."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import numpy as np
import pytest

from rlalign.control.baselines import make_baseline
from rlalign.control.driving_env import ACTION_NAMES
from rlalign.control.driving_text import (
    DRIVING_WORDS,
    coarse_metres,
    describe_driving,
    make_driving_text_env,
)

# Measured 0.974 on these 20 episodes (1825 steps, 1223 distinct sentences); a change that
# drops what the driver decides on from the sentence falls well below.
UNIQUE_SHARE_FLOOR = 0.96


def test_the_words_follow_the_env_action_order():
    assert len(DRIVING_WORDS) == len(ACTION_NAMES)
    for word, name in zip(DRIVING_WORDS, ACTION_NAMES, strict=True):
        assert name in (word, f"lane_{word}")


def test_every_action_name_of_the_env_is_understood_too():
    env = make_driving_text_env()
    for i, (word, name) in enumerate(zip(DRIVING_WORDS, ACTION_NAMES, strict=True)):
        assert env.action_index(word) == i
        assert env.action_index(f"{name.upper()}.") == i


@pytest.mark.parametrize(
    ("metres", "shown"),
    [(0.0, 0), (-3.0, 0), (7.4, 7), (19.4, 19), (20.9, 20), (21.1, 22), (49.9, 50), (58.9, 58),
     (59.1, 60), (64.0, 60), (66.0, 70), (149.0, 150)],
)  # fmt: skip
def test_coarse_metres(metres, shown):
    assert coarse_metres(metres) == shown


def test_the_sentence_states_the_simulator_state():
    """Each part read back against the simulator's own variables, not the observation."""
    env = make_driving_text_env()
    text, _ = env.reset(seed=7)
    sim = env.env.unwrapped
    cfg = sim.cfg
    seen = Counter()
    for _ in range(120):
        head = re.match(r"speed (\d+), lane (\d) of 3, careful accel [+-]\d\.\d\.", text)
        speed, lane = int(head.group(1)), int(head.group(2))
        assert abs(speed - sim.v[0] * 3.6) <= 0.5 + 1e-3
        assert lane == sim.lane[0] + 1
        phase, _ = sim.signal_phase()
        to_line = cfg.signal_position - (sim.x[0] + cfg.car_length / 2)
        light = re.search(r"light (green|yellow|red) (\d+) m", text)
        if 0 <= to_line < cfg.sensor_range - 1:
            assert light.group(1) == ("green", "yellow", "red")[phase]
            assert abs(int(light.group(2)) - to_line) <= 5.0
            seen["light"] += 1
        elif to_line < 0:
            assert light is None
        assert ("pedestrian crossing" in text) == bool(sim.ped_active.any() and "crosswalk" in text)
        if "left free" in text:
            assert sim.lane[0] < cfg.n_lanes - 1
        if "right free" in text:
            assert sim.lane[0] > 0
        seen["steps"] += 1
        text, _, terminated, truncated, _ = env.step("keep" if speed > 40 else "accelerate")
        if terminated or truncated:
            break
    assert seen["light"] > 5 and seen["steps"] > 20


def test_max_steps_and_other_settings_reach_the_world():
    env = make_driving_text_env(max_steps=4, road_length=700.0, invalid_penalty=-2.0)
    assert env.env.unwrapped.cfg.road_length == 700.0
    env.reset(seed=0)
    flags = [env.step("keep")[3] for _ in range(4)]
    assert flags == [False, False, False, True]
    env.reset(seed=0)
    _, reward, _, _, info = env.step("hello")
    assert info["invalid_action"] is True and reward < -1.5


def rule_based_steps(episodes: int) -> list[tuple[str, int]]:
    env = make_driving_text_env()
    driver = make_baseline("rule_based", env.env.unwrapped.cfg)
    steps = []
    for seed in range(episodes):
        text, _ = env.reset(seed=seed)
        done = False
        while not done:
            action = int(driver(env.last_obs[None])[0])
            steps.append((text, action))
            assert text == describe_driving(env.last_obs, env.env.unwrapped.cfg)
            text, _, terminated, truncated, _ = env.step(DRIVING_WORDS[action])
            done = terminated or truncated
    return steps


def test_the_rule_based_action_is_mostly_a_function_of_the_sentence():
    steps = rule_based_steps(20)
    actions: dict[str, Counter] = defaultdict(Counter)
    for text, action in steps:
        actions[text][action] += 1
    unique = sum(sum(c.values()) for c in actions.values() if len(c) == 1) / len(steps)
    assert unique >= UNIQUE_SHARE_FLOOR, f"{unique:.3f} of steps have an unambiguous sentence"
    # Not by being unique per step: most steps share their sentence with others.
    assert len(actions) < 0.75 * len(steps)
    assert max(len(text.split()) for text, _ in steps) <= 32


def test_the_careful_accel_decides_the_rule_based_speed_choice():
    """Read from the sentence alone, the careful acceleration gives the driver's choice between
    keep, accelerate, brake and stop by the driver's own thresholds (0.5, -0.7, -3.5 m/s^2),
    except where rounding to 0.1 puts it on a threshold."""
    thresholds = (0.5, -0.7, -3.5)
    checked = disagree = 0
    for text, action in rule_based_steps(20):
        if DRIVING_WORDS[action] in ("left", "right"):
            continue  # the lane rule goes first; its part is "left free" / "right free"
        m = re.match(r"speed (\d+), lane \d of 3, careful accel ([+-]\d\.\d)\.", text)
        speed, accel = int(m.group(1)), float(m.group(2))
        if any(abs(accel - t) < 0.051 for t in (*thresholds, 0.0 if speed == 0 else 0.5)):
            continue  # rounding to 0.1 hides the side (0 decides only at a standstill)
        if speed in (1, 2):
            continue  # so does rounding a speed near 0.5 m/s to km/h
        word = "accelerate" if accel > 0.5 else "brake" if accel < -0.7 else "keep"
        if accel < -3.5 or (speed == 0 and accel < 0):
            word = "stop"
        checked += 1
        disagree += word != DRIVING_WORDS[action]
    assert checked > 1500 and disagree == 0, f"{disagree} of {checked} steps disagree"


def test_the_sentence_reads_only_the_observation():
    env = make_driving_text_env()
    env.reset(seed=3)
    obs = env.last_obs.copy()
    text = describe_driving(obs, env.env.unwrapped.cfg)
    for _ in range(5):
        env.step("accelerate")  # the simulator moves on; the same array reads the same
    assert describe_driving(obs, env.env.unwrapped.cfg) == text
    assert describe_driving(np.asarray(obs, dtype=np.float64), env.env.unwrapped.cfg) == text
