"""Baseline drivers for the driving environments: random, constant speed, rule based.

Each baseline is a callable ``policy(obs) -> actions`` on a *batch* of observations
(``(B, len(OBS_FIELDS))``), like a learned policy, so the same evaluation loop scores both. They
read only the observation (no privileged simulator state), decoded with the env's scales.

- ``random``: uniform over the action space.
- ``constant_speed``: keeps its lane and its starting speed, whatever happens.
- ``rule_based``: a careful driver. Longitudinally it follows the Intelligent Driver Model
  towards the nearest of (the car ahead, the stop line when the light is red -- or yellow and a
  comfortable stop is possible --, the crosswalk while a pedestrian crosses), turning the
  desired acceleration into keep / accelerate / brake / stop. It overtakes a slower car when the
  neighbouring lane has a clearly longer free gap ahead and a safe gap behind, never near the
  signal or the crosswalk.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from rlalign.control.driving_config import DrivingConfig
from rlalign.control.driving_env import (
    ACCELERATE,
    BRAKE,
    KEEP,
    LANE_LEFT,
    LANE_RIGHT,
    OBS_INDEX,
    STOP,
)

BASELINES = ("random", "constant_speed", "rule_based")
Policy = Callable[[np.ndarray], np.ndarray]

_I = OBS_INDEX


class RandomDriver:
    """Uniformly random actions (seeded)."""

    def __init__(self, cfg: DrivingConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        n = obs.shape[0]
        if self.cfg.continuous:
            return self.rng.uniform(-1.0, 1.0, size=(n, 2)).astype(np.float32)
        return self.rng.integers(0, 6, size=n)


class ConstantSpeedDriver:
    """Lane keeping at constant speed: never accelerates, brakes or changes lane."""

    def __init__(self, cfg: DrivingConfig, seed: int = 0) -> None:
        self.cfg = cfg

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        n = obs.shape[0]
        if self.cfg.continuous:
            out = np.zeros((n, 2), dtype=np.float32)
            out[:, 1] = _steer_to(obs, np.zeros(n), self.cfg)
            return out
        return np.full(n, KEEP)


def _steer_to(obs: np.ndarray, lane_delta: np.ndarray, cfg: DrivingConfig) -> np.ndarray:
    """Steering command that moves the car towards the centre of lane ``lane + lane_delta``.

    The lateral error closes by half each step: ``v sin(heading) dt = err / 2``.
    """
    v = np.maximum(obs[:, _I["speed"]] * cfg.v_max, 0.1)
    err = (lane_delta - obs[:, _I["lane_offset"]]) * cfg.lane_width
    s_max = math.sin(cfg.max_steer)
    s = np.clip(err / (2.0 * cfg.dt * v), -s_max, s_max)
    return (np.arcsin(s) / cfg.max_steer).astype(np.float32)


class RuleBasedDriver:
    """Keeps a safe gap, stops for red lights and pedestrians, overtakes slower cars."""

    # IDM parameters of the careful driver.
    headway = 1.5
    min_gap = 4.0
    comfort = 2.0
    stop_margin = 1.5

    def __init__(self, cfg: DrivingConfig, seed: int = 0) -> None:
        self.cfg = cfg

    def desired_acceleration(self, obs: np.ndarray) -> np.ndarray:
        c = self.cfg
        R = c.sensor_range
        v = obs[:, _I["speed"]] * c.v_max
        gap = np.where(obs[:, _I["ahead_gap"]] < 1.0, obs[:, _I["ahead_gap"]] * R, np.inf)
        v_lead = v + obs[:, _I["ahead_rel_speed"]] * c.v_max
        # The stop line: red, or yellow when a comfortable stop is still possible.
        d_sig = np.where(
            obs[:, _I["signal_distance"]] < 1.0, obs[:, _I["signal_distance"]] * R, np.inf
        )
        d_sig = d_sig - self.stop_margin
        red = obs[:, _I["signal_red"]] > 0.5
        yellow = obs[:, _I["signal_yellow"]] > 0.5
        stoppable = d_sig > v * v / (2 * c.brake)
        # On yellow, also stop when the light will be red before we reach the line.
        late = d_sig / np.maximum(v, 0.1) > obs[:, _I["signal_time_left"]] * c.cycle
        stop_sig = (d_sig > -self.stop_margin) & (red | (yellow & (stoppable | late)))
        obstacle = np.where(stop_sig, np.maximum(d_sig, 0.0), np.inf)
        d_cw = np.where(
            obs[:, _I["crosswalk_distance"]] < 1.0, obs[:, _I["crosswalk_distance"]] * R, np.inf
        )
        ped = obs[:, _I["pedestrian_crossing"]] > 0.5
        stop_cw = ped & np.isfinite(d_cw)
        obstacle = np.minimum(
            obstacle, np.where(stop_cw, np.maximum(d_cw - self.stop_margin, 0.0), np.inf)
        )
        use_obst = obstacle < gap
        gap = np.where(use_obst, obstacle, gap)
        v_lead = np.where(use_obst, 0.0, v_lead)
        s = np.maximum(gap, 0.1)
        dv = v - v_lead
        s_star = self.min_gap + np.maximum(
            0.0, v * self.headway + v * dv / (2 * math.sqrt(c.accel * self.comfort))
        )
        inter = np.where(np.isfinite(gap), (s_star / s) ** 2, 0.0)
        return c.accel * (1.0 - (v / c.v_max) ** 4 - inter)

    def lane_choice(self, obs: np.ndarray) -> np.ndarray:
        """+1 (left), -1 (right) or 0 for each observation."""
        c = self.cfg
        R = c.sensor_range
        v = obs[:, _I["speed"]] * c.v_max
        own = obs[:, _I["ahead_gap"]] * R
        slower = obs[:, _I["ahead_rel_speed"]] < -0.5 / c.v_max
        want = slower & (own < 50.0) & (v > 3.0)
        near_junction = (obs[:, _I["signal_distance"]] * R < 50.0) | (
            obs[:, _I["crosswalk_distance"]] * R < 50.0
        )
        want &= ~near_junction & (obs[:, _I["pedestrian_crossing"]] < 0.5)
        want &= np.abs(obs[:, _I["lane_offset"]]) < 0.15  # not already mid-manoeuvre

        def ok(side: str, exists: str) -> np.ndarray:
            ahead = obs[:, _I[f"{side}_ahead_gap"]] * R
            behind = obs[:, _I[f"{side}_behind_gap"]] * R
            closing = np.maximum(obs[:, _I[f"{side}_behind_rel_speed"]] * c.v_max, 0.0)
            ahead_dv = obs[:, _I[f"{side}_ahead_rel_speed"]] * c.v_max
            return (
                (obs[:, _I[exists]] > 0.5)
                & (ahead > own + 15.0)
                & (ahead > 10.0 + v * self.headway + np.maximum(-ahead_dv, 0.0) * 2.0)
                & (behind > 8.0 + 3.0 * closing)
            )

        left, right = ok("left", "has_left_lane"), ok("right", "has_right_lane")
        return np.where(want & left, 1, np.where(want & right, -1, 0))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        c = self.cfg
        obs = np.asarray(obs, dtype=np.float64)
        a = self.desired_acceleration(obs)
        lane = self.lane_choice(obs)
        v = obs[:, _I["speed"]] * c.v_max
        if c.continuous:
            cmd = np.where(a >= 0, a / c.accel, a / c.stop_decel)
            out = np.zeros((obs.shape[0], 2), dtype=np.float32)
            out[:, 0] = np.clip(cmd, -1.0, 1.0)
            out[:, 1] = _steer_to(obs, lane.astype(np.float64), c)
            return out
        act = np.full(obs.shape[0], KEEP)
        act = np.where(a > 0.5, ACCELERATE, act)
        act = np.where(a < -0.7, BRAKE, act)
        # Stronger than the brake action can give (or holding at a standstill): stop.
        act = np.where((a < -c.brake - 0.5) | ((v < 0.5) & (a < 0)), STOP, act)
        act = np.where(lane == 1, LANE_LEFT, np.where(lane == -1, LANE_RIGHT, act))
        return act


_CLASSES = {
    "random": RandomDriver,
    "constant_speed": ConstantSpeedDriver,
    "rule_based": RuleBasedDriver,
}


def make_baseline(name: str, cfg: DrivingConfig, seed: int = 0) -> Policy:
    """The baseline called ``name`` (one of :data:`BASELINES`) for a world ``cfg``."""
    if name not in _CLASSES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    return _CLASSES[name](cfg, seed)
