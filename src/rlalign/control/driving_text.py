"""The car in words: ``rlalign/Driving-v0`` as a text environment for a language model.

Each step the model reads one short sentence built from the observation vector only (the
numbers the MLP agent sees, decoded with the env's scales) and answers with one of
:data:`DRIVING_WORDS`::

    speed 50, lane 1 of 3, careful accel -0.9. car 46 m ahead, closing 26, impact 6 s. light
    yellow 70 m, 1 s left, stop needs 1.

The sentence is meant to be learned from by a very small model imitating the rule-based
driver (:class:`~rlalign.control.baselines.RuleBasedDriver`), so it states what that driver
decides on, coarsely and always in the same order: whole numbers, gaps in 1 m steps below
20 m, 2 m steps below 60 m and 10 m steps beyond (precision where the decision is made), and
the derived quantities the driver weighs -- the *careful acceleration* (m/s^2, one decimal:
what the driver's car-following model, IDM, asks for given the car, the red or yellow light and
the crossing pedestrian ahead), the time to impact with the car ahead, the deceleration needed
to stop at a yellow or red light or before a crossing pedestrian (m/s^2, against the brake's
3), and which neighbouring lanes are *free* by the driver's own overtaking rule (more room ahead
than in this lane, a safe gap to the car ahead there and behind). Parts that do not apply (no
light within sensor range, the crosswalk passed, no free lane beside) are left out rather than
spelled "none", to keep every prompt short.

Why the careful acceleration: the driver brakes when IDM's acceleration falls below -0.7 m/s^2,
a smooth function of the gap, both speeds and the distance to a stop line. A ``tiny`` model
reading those as separate numbers learnt it poorly: cloned on the other parts alone, it chose
``brake`` on 29-34% of the states where the driver brakes after 1,000-3,000 SFT steps, and
crashed in 64-74% of the evaluation episodes. With the one number it reads a threshold instead
(docs/how-to/lm-drives-the-car.md has the measurements). It is advice, not the action: the
driver changes lanes, stops and holds still by the other parts, and RL may learn to overrule it.

Why only the free lanes are named: the sentence once named both sides (``left free, right
none``). Models trained on the driver's own states rarely changed lanes; after DAgger, which
adds the states behind slow cars where the driver overtakes, they answered ``right`` to ``left
free, right none`` and left the road in 14-20% of the episodes. Naming only the free side leaves
one side word to copy (the lane number still says where the road ends); that alone did not cure
it, and repeating the lane changes in the transcripts did
(:data:`~rlalign.control.transcripts.LANE_CHANGE_WORDS`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rlalign.control.baselines import RuleBasedDriver
from rlalign.control.driving_config import DrivingConfig
from rlalign.control.driving_env import ACTION_NAMES, OBS_INDEX
from rlalign.envs.gym_adapter import GymTextEnv

# One word per action, in the env's order (KEEP, ACCELERATE, BRAKE, LANE_LEFT, LANE_RIGHT, STOP).
DRIVING_WORDS: tuple[str, ...] = ("keep", "accelerate", "brake", "left", "right", "stop")
# The env's own action names are understood too ("lane_left" = "left").
DRIVING_ALIASES: dict[str, str] = {
    name: word for name, word in zip(ACTION_NAMES, DRIVING_WORDS, strict=True) if name != word
}

_I = OBS_INDEX
_COLOURS = ("green", "yellow", "red")


def coarse_metres(x: float) -> int:
    """A distance rounded to 1 m below 20 m, 2 m below 60 m (the driver's 50 m rules), 10 m
    beyond."""
    x = max(float(x), 0.0)
    if x < 19.5:
        return round(x)
    if x < 59:
        return 2 * round(x / 2)
    return 10 * round(x / 10)


def _kmh(metres_per_second: float) -> int:
    """Speeds in whole km/h: 1 km/h resolves the 0.5 m/s steps the car's speed moves in."""
    return round(float(metres_per_second) * 3.6)


def _lane_free(obs: np.ndarray, cfg: DrivingConfig, side: str, own_gap: float, v: float) -> bool:
    """Whether the lane on ``side`` exists and the rule-based driver would overtake into it."""
    if obs[_I[f"has_{side}_lane"]] < 0.5:
        return False
    R, d = cfg.sensor_range, RuleBasedDriver
    ahead = obs[_I[f"{side}_ahead_gap"]] * R
    behind = obs[_I[f"{side}_behind_gap"]] * R
    closing_behind = max(obs[_I[f"{side}_behind_rel_speed"]] * cfg.v_max, 0.0)
    ahead_slower = max(-obs[_I[f"{side}_ahead_rel_speed"]] * cfg.v_max, 0.0)
    free = (
        ahead > own_gap + 15.0
        and ahead > 10.0 + v * d.headway + 2.0 * ahead_slower
        and behind > 8.0 + 3.0 * closing_behind
    )
    return bool(free)


def careful_accel(obs: np.ndarray, cfg: DrivingConfig) -> str:
    """The rule-based driver's IDM acceleration for one observation, in m/s^2 with a sign and
    one decimal (``+1.8``, ``-0.9``), held within +-9.9 so that it is always four characters."""
    a = float(RuleBasedDriver(cfg).desired_acceleration(np.asarray(obs, np.float64)[None])[0])
    a = round(min(max(a, -9.9), 9.9), 1)
    return f"{a + 0.0:+.1f}"  # + 0.0: -0.0 reads +0.0


def describe_driving(obs: np.ndarray, cfg: DrivingConfig) -> str:
    """The observation vector of ``rlalign/Driving-v0`` as one short sentence (see the module
    docstring for its parts)."""
    obs = np.asarray(obs, dtype=np.float64)
    R = cfg.sensor_range
    v = obs[_I["speed"]] * cfg.v_max
    lane = round(obs[_I["lane"]] * max(cfg.n_lanes - 1, 1)) + 1
    parts = [
        f"speed {_kmh(v)}, lane {lane} of {cfg.n_lanes}, careful accel {careful_accel(obs, cfg)}."
    ]
    own_gap = obs[_I["ahead_gap"]] * R
    if obs[_I["ahead_gap"]] < 1.0:
        closing = -obs[_I["ahead_rel_speed"]] * cfg.v_max
        car = f"car {coarse_metres(own_gap)} m ahead, closing {_kmh(closing)}"
        if closing > 0.5 and own_gap / closing < 9.5:
            car += f", impact {round(own_gap / closing)} s"
        parts.append(car + ".")
    else:
        parts.append("no car ahead.")
    if obs[_I["signal_distance"]] < 1.0:
        phase = int(np.argmax(obs[[_I["signal_green"], _I["signal_yellow"], _I["signal_red"]]]))
        d = obs[_I["signal_distance"]] * R
        light = f"light {_COLOURS[phase]} {coarse_metres(d)} m"
        if phase == 1:
            light += f", {round(obs[_I['signal_time_left']] * cfg.cycle)} s left"
        if phase > 0 and v > 0.5:
            # Stopping with the driver's margin before the line: v^2 / (2 (d - margin)).
            need = v * v / (2.0 * max(d - RuleBasedDriver.stop_margin, 0.1))
            light += f", stop needs {min(round(need), 9)}"
        parts.append(light + ".")
    if obs[_I["crosswalk_distance"]] < 1.0:
        d = obs[_I["crosswalk_distance"]] * R
        crossing = ""
        if obs[_I["pedestrian_crossing"]] > 0.5:
            crossing = ", pedestrian crossing"
            if v > 0.5:  # the same braking as for a light: the driver stops for the pedestrian
                need = v * v / (2.0 * max(d - RuleBasedDriver.stop_margin, 0.1))
                crossing += f", stop needs {min(round(need), 9)}"
        parts.append(f"crosswalk {coarse_metres(d)} m{crossing}.")
    free = [side for side in ("left", "right") if _lane_free(obs, cfg, side, own_gap, v)]
    if free:
        # Only the free sides are named: with "left free, right none" a small model copied the
        # wrong side word and drove off the road (module docstring).
        parts.append(", ".join(f"{side} free" for side in free) + ".")
    return " ".join(parts)


def make_driving_text_env(
    *, fallback_action: str = "keep", invalid_penalty: float = -1.0, **env_kwargs: Any
) -> GymTextEnv:
    """``rlalign/Driving-v0`` in words: :func:`describe_driving` observations, one of
    :data:`DRIVING_WORDS` per step (or the env's own action names). ``env_kwargs`` go to
    ``gymnasium.make`` (``max_steps=100``, ``road_length=800.0``, ``reward={...}``, ...)."""
    env = gym.make("rlalign/Driving-v0", **env_kwargs)
    cfg = env.unwrapped.cfg
    return GymTextEnv(
        env,
        lambda obs: describe_driving(obs, cfg),
        DRIVING_WORDS,
        fallback_action=fallback_action,
        invalid_penalty=invalid_penalty,
        aliases=DRIVING_ALIASES,
    )
