"""Configuration of the driving environment: the road, the traffic and the reward.

Every number the simulator uses lives here, so a user can change the world with keyword
arguments: ``gymnasium.make("rlalign/Driving-v0", road_length=800.0,
reward={"collision": -20.0})``. Units are SI (metres, seconds, m/s, m/s^2).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the reward components (each reported in ``info["reward_components"]``).

    r_t = progress * (metres gained toward the destination)
          - time_cost                              (every step: short travel time)
          + arrival                                (once, on reaching the destination)
          + abrupt_brake * [deceleration > abrupt_brake_threshold]
          + collision * [hit a car or a pedestrian]  (episode ends)
          + red_light * [crossed the stop line on red]
          + off_road * [left the carriageway]       (episode ends)
    """

    progress: float = 0.01
    time_cost: float = 0.05
    arrival: float = 5.0
    abrupt_brake: float = -0.2
    abrupt_brake_threshold: float = 4.5
    collision: float = -10.0
    red_light: float = -10.0
    off_road: float = -10.0


@dataclass(frozen=True)
class DrivingConfig:
    """The world of ``rlalign/Driving-v0``.

    Lanes are numbered 0 (rightmost) to ``n_lanes - 1`` (leftmost); lateral position ``y`` is
    0 at the centre of lane 0 and grows to the left. The ego car starts at ``x = 0`` and the
    destination is at ``x = road_length``.
    """

    road_length: float = 600.0
    n_lanes: int = 3
    lane_width: float = 3.5
    dt: float = 0.5
    max_steps: int = 200
    # Ego car.
    v_max: float = 20.0
    start_speed: float = 10.0
    accel: float = 2.0  # "accelerate" action, m/s^2
    brake: float = 3.0  # "brake" action (a firm but comfortable brake), m/s^2
    stop_decel: float = 6.0  # "stop" action: strongest braking until standstill, m/s^2
    max_steer: float = 0.25  # continuous variant: steering angle at |action| = 1, rad
    car_length: float = 5.0
    car_width: float = 2.0
    sensor_range: float = 150.0
    # Traffic (IDM car-following, MOBIL-like lane changes).
    n_vehicles: int = 14
    traffic_speed_min: float = 9.0
    traffic_speed_max: float = 14.0
    idm_accel: float = 1.5
    idm_comfort_brake: float = 2.5
    idm_max_brake: float = 8.0
    idm_headway: float = 1.5
    idm_min_gap: float = 2.5
    lane_change_prob: float = 0.05
    # Traffic signal at ``signal_position``: green, yellow, red durations (s).
    signal_position: float = 250.0
    green: float = 12.0
    yellow: float = 3.0
    red: float = 10.0
    # Crosswalk at ``crosswalk_position`` (centre), ``crosswalk_width`` metres long.
    crosswalk_position: float = 430.0
    crosswalk_width: float = 4.0
    n_pedestrians: int = 2
    pedestrian_prob: float = 0.03  # chance per step that a waiting pedestrian starts to cross
    pedestrian_speed_min: float = 1.1
    pedestrian_speed_max: float = 1.6
    pedestrian_wait_time: float = 2.5  # crosses only if no vehicle is closer than this (s)
    continuous: bool = False
    reward: RewardConfig = field(default_factory=RewardConfig)

    @property
    def cycle(self) -> float:
        return self.green + self.yellow + self.red

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first impossible setting."""
        if self.n_lanes < 1:
            raise ValueError(f"n_lanes must be >= 1, got {self.n_lanes}")
        for name in ("road_length", "lane_width", "dt", "v_max", "car_length", "sensor_range"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.signal_position < self.road_length:
            raise ValueError("signal_position must lie between 0 and road_length")
        if not 0 < self.crosswalk_position < self.road_length:
            raise ValueError("crosswalk_position must lie between 0 and road_length")
        if self.max_steps < 1 or self.n_vehicles < 0 or self.n_pedestrians < 0:
            raise ValueError("max_steps must be >= 1, n_vehicles and n_pedestrians >= 0")


def make_config(
    config: DrivingConfig | dict[str, Any] | None = None, **kwargs: Any
) -> DrivingConfig:
    """Build a :class:`DrivingConfig` from a config, a dict and/or keyword overrides.

    ``reward`` may be a :class:`RewardConfig` or a dict of its fields. Unknown names raise
    ``TypeError`` listing the valid ones.
    """
    base = config if isinstance(config, DrivingConfig) else DrivingConfig()
    updates = dict(config) if isinstance(config, dict) else {}
    updates.update(kwargs)
    valid = {f.name for f in dataclasses.fields(DrivingConfig)}
    unknown = sorted(set(updates) - valid)
    if unknown:
        raise TypeError(f"unknown driving setting(s) {unknown}; valid: {sorted(valid)}")
    reward = updates.pop("reward", None)
    if isinstance(reward, dict):
        rvalid = {f.name for f in dataclasses.fields(RewardConfig)}
        bad = sorted(set(reward) - rvalid)
        if bad:
            raise TypeError(f"unknown reward weight(s) {bad}; valid: {sorted(rvalid)}")
        reward = dataclasses.replace(base.reward, **reward)
    if reward is not None:
        updates["reward"] = reward
    cfg = dataclasses.replace(base, **updates)
    cfg.validate()
    return cfg
