"""``rlalign/Driving-v0``: the chapter's self-driving car, as a Gymnasium environment.

The agent is the onboard computer of the *ego* car on a straight multi-lane road. It must reach
the destination ``road_length`` metres ahead among other traffic, stop at a traffic signal when
it is red, and stop for pedestrians who cross at a crosswalk.

World (pure numpy, one step = ``dt`` seconds, all vehicles updated as arrays):

- Traffic follows the Intelligent Driver Model (Treiber et al., 2000). For vehicle ``i`` with
  speed ``v``, desired speed ``v0``, gap ``s`` and closing speed ``dv`` to its leader::

      s*  = s0 + max(0, v T + v dv / (2 sqrt(a b)))
      a_i = a (1 - (v / v0)^4 - (s* / s)^2)

  A red signal (or a yellow one the driver can still stop for) and a pedestrian on the crossing
  act as standing obstacles at the stop line / crosswalk. Vehicles change lanes MOBIL-like: when
  blocked by a slower leader, if the other lane has a clearly larger gap ahead and a safe gap
  behind for its new follower.
- Pedestrians wait at the kerb and start to cross when no vehicle would reach the crosswalk
  within ``pedestrian_wait_time`` seconds; then they walk across all lanes.
- The signal cycles green -> yellow -> red with a random phase offset per episode.

Actions (``Discrete(6)``, names in ``env.unwrapped.action_names``):

====  ===============  ======================================================================
 0    keep             keep the current speed and lane
 1    accelerate       +``accel`` m/s^2
 2    brake            -``brake`` m/s^2 (firm, below the abrupt-braking threshold)
 3    lane_left        move one lane to the left (leaving the road if there is none)
 4    lane_right       move one lane to the right
 5    stop             brake at up to ``stop_decel`` m/s^2 until standstill, then hold
====  ===============  ======================================================================

``rlalign/DrivingContinuous-v0`` takes ``Box([-1, -1], [1, 1])``: ``[acceleration, steering]``;
acceleration scales to ``+accel`` / ``-stop_decel``, steering to a heading of
``max_steer`` radians (positive = left), moving the car sideways at ``v sin(heading)``.

Observation: a flat ``Box`` of ``len(OBS_FIELDS)`` floats, each field scaled to about [-1, 1];
see :data:`OBS_FIELDS` for the meaning of each entry. Gaps are bumper-to-bumper metres divided by
``sensor_range`` (1 = nothing within range or no such lane); relative speeds are
``(v_other - v_ego) / v_max``.

Reward: see :class:`rlalign.control.driving_config.RewardConfig`; every component is reported
in ``info["reward_components"]`` and the episode's events in ``info`` (``collision``,
``arrived``, ``red_light``, ``abrupt_brake``, ``off_road``, ``travel_time``).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlalign.control.driving_config import DrivingConfig, make_config
from rlalign.control.render import render_frame

ACTION_NAMES: tuple[str, ...] = ("keep", "accelerate", "brake", "lane_left", "lane_right", "stop")
KEEP, ACCELERATE, BRAKE, LANE_LEFT, LANE_RIGHT, STOP = range(6)

# Observation layout, field by field (index = position in the vector).
OBS_FIELDS: tuple[str, ...] = (
    "speed",  # ego speed / v_max
    "lane",  # ego lane index / (n_lanes - 1); 0 = rightmost
    "lane_offset",  # lateral offset from the lane centre / lane_width (positive = left)
    "has_left_lane",  # 1 if a lane exists to the left
    "has_right_lane",  # 1 if a lane exists to the right
    "ahead_gap",  # own lane: gap to the vehicle ahead / sensor_range
    "ahead_rel_speed",  # own lane: (v_ahead - v) / v_max
    "behind_gap",  # own lane: gap to the vehicle behind / sensor_range
    "behind_rel_speed",
    "left_ahead_gap",  # left lane, same quantities (gap 0 = a car alongside)
    "left_ahead_rel_speed",
    "left_behind_gap",
    "left_behind_rel_speed",
    "right_ahead_gap",  # right lane
    "right_ahead_rel_speed",
    "right_behind_gap",
    "right_behind_rel_speed",
    "signal_distance",  # ego front to the stop line / sensor_range (1 once passed)
    "signal_green",  # phase, one-hot
    "signal_yellow",
    "signal_red",
    "signal_time_left",  # seconds until the phase changes / cycle length
    "crosswalk_distance",  # ego front to the crosswalk / sensor_range (1 once passed)
    "pedestrian_crossing",  # 1 while a pedestrian is on the crossing
    "pedestrian_lateral",  # |y_ped - y_ego| of the nearest crossing pedestrian / road width
    "distance_to_go",  # (road_length - x) / road_length
    "time_elapsed",  # step / max_steps
    # Derived "sensor fusion" quantities an onboard computer computes from the above:
    "ahead_time_to_collision",  # gap / closing speed to the car ahead, / 10 s (1 = not closing)
    "signal_brake_needed",  # v^2 / (2 d) to stop at the line, / stop_decel (0 once passed)
    "crosswalk_brake_needed",  # the same for the crosswalk (0 once passed)
    # The same gaps on a scale that resolves the last few metres, where safety is decided:
    # g / (g + NEAR_SCALE) (0 = touching or alongside, 0.5 = 10 m, 1 = nothing in range).
    "ahead_gap_near",
    "behind_gap_near",
    "left_ahead_gap_near",
    "left_behind_gap_near",
    "right_ahead_gap_near",
    "right_behind_gap_near",
    "ahead_headway",  # gap / own speed (time headway, s) / 4 s, capped at 1 (1 = nothing ahead)
    # Constant deceleration that stops the closing on the car ahead MIN_GAP metres behind it,
    # closing^2 / (2 (gap - MIN_GAP)), / stop_decel, capped at 2 (0 = not closing).
    "ahead_brake_needed",
    # Seconds to reach the stop line at the current speed, / cycle length, capped at 1 (1 once
    # passed or standing): against signal_time_left, whether the light changes first.
    "signal_time_to_line",
    # Pedestrians: which way they walk, and where they will be when the car gets there.
    "pedestrian_approach_speed",  # nearest crossing pedestrian: lateral speed towards the ego
    #   car's line / pedestrian_speed_max (+ approaching, - walking away, 0 = nobody crossing)
    "pedestrian_lateral_on_arrival",  # min over crossing pedestrians of |y_ped - y_ego| when the
    #   ego's front reaches the crosswalk at its current speed (at most 10 s ahead), / road
    #   width; 1 = nobody crossing or crosswalk passed
    # The braking needed to stop, only where the rules say stop: signal_brake_needed while the
    # light is yellow or red (0 on green), crosswalk_brake_needed while a pedestrian crosses.
    "light_stop_brake_needed",
    "pedestrian_stop_brake_needed",
    # Clearance one step from now if the car moved into the left / right lane (or stayed), at
    # everyone's current speed: min of the gaps ahead and behind there, g / (g + NEAR_SCALE);
    # 0 = a collision (or, for a missing lane, leaving the road), 1 = nobody within range.
    "left_change_clearance",
    "right_change_clearance",
    "ahead_clearance_next_step",
)
OBS_INDEX: dict[str, int] = {name: i for i, name in enumerate(OBS_FIELDS)}
NEAR_SCALE = 10.0  # metres: the gap that the *_gap_near fields map to 0.5
HEADWAY_SCALE = 4.0  # seconds
MIN_GAP = 2.0  # metres kept to a stopped car in ahead_brake_needed

_INF = np.inf


class DrivingEnv(gym.Env[np.ndarray, Any]):
    """The chapter's self-driving car (see the module docstring for the full description)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(
        self,
        render_mode: str | None = None,
        config: DrivingConfig | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.cfg = make_config(config, **kwargs)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self.cfg.dt)}
        self.action_names = ("acceleration", "steering") if self.cfg.continuous else ACTION_NAMES
        self.obs_fields = OBS_FIELDS
        if self.cfg.continuous:
            self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        else:
            self.action_space = spaces.Discrete(len(ACTION_NAMES))
        low = np.full(len(OBS_FIELDS), -1.0, dtype=np.float32)
        high = np.full(len(OBS_FIELDS), 1.0, dtype=np.float32)
        low[OBS_INDEX["lane_offset"]], high[OBS_INDEX["lane_offset"]] = -2.0, 2.0
        for name in (n for n in OBS_FIELDS if n.endswith("brake_needed")):
            low[OBS_INDEX[name]], high[OBS_INDEX[name]] = 0.0, 2.0
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self._obs_low, self._obs_high = low.astype(np.float64), high.astype(np.float64)
        c = self.cfg
        self._n = c.n_vehicles + 1  # row 0 is the ego car
        # set by a step that ends the episode, cleared by reset (False here: a snapshot saved
        # before this flag existed restores into a live episode)
        self._ended = False
        self._road_left = (c.n_lanes - 1) * c.lane_width + c.lane_width / 2
        self._road_right = -c.lane_width / 2
        self._cw_near = c.crosswalk_position - c.crosswalk_width / 2
        self._cw_far = c.crosswalk_position + c.crosswalk_width / 2
        self._lanes = np.arange(c.n_lanes)
        room = int(self._start_slots(ego_lane=0)[2].sum())  # the same for every ego lane
        if c.n_vehicles > room:
            raise ValueError(
                f"n_vehicles={c.n_vehicles} cars do not fit: the road has {room} start places "
                "(25 m apart in each lane, none near the ego car or before the stop line); "
                "lower n_vehicles, or lengthen the road or add lanes"
            )
        self._sqrt_ab = 2.0 * math.sqrt(c.idm_accel * c.idm_comfort_brake)
        self._lane_y = self._lanes * c.lane_width

    # ------------------------------------------------------------------ reset
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        c, rng = self.cfg, self.np_random
        n = self._n
        self.x = np.zeros(n)
        self.y = np.zeros(n)
        self.v = np.zeros(n)
        self.v0 = np.full(n, c.v_max)
        self.lane = np.zeros(n, dtype=np.int64)
        ego_lane = int(rng.integers(c.n_lanes))
        self.lane[0] = ego_lane
        self.y[0] = ego_lane * c.lane_width
        self.v[0] = c.start_speed
        # Traffic on a grid of slots, none within 30 m of the ego car in its lane.
        if c.n_vehicles:
            slot_x, slot_lane, free = self._start_slots(ego_lane)
            choice = rng.choice(np.flatnonzero(free), size=c.n_vehicles, replace=False)
            jitter = rng.uniform(-4.0, 4.0, size=c.n_vehicles)
            self.x[1:] = slot_x[choice] + jitter
            self.lane[1:] = slot_lane[choice]
            self.y[1:] = self.lane[1:] * c.lane_width
            self.v0[1:] = rng.uniform(c.traffic_speed_min, c.traffic_speed_max, c.n_vehicles)
            self.v[1:] = self.v0[1:] * rng.uniform(0.6, 1.0, c.n_vehicles)
        self.stopping = np.zeros(n, dtype=bool)  # latched "stop for the yellow/red light"
        self.ped_y = np.zeros(c.n_pedestrians)
        self.ped_v = np.zeros(c.n_pedestrians)
        self.ped_active = np.zeros(c.n_pedestrians, dtype=bool)
        self.signal_offset = float(rng.uniform(0.0, c.cycle))
        self.t = 0.0
        self.steps = 0
        self._ended = False
        self.accel_ego = 0.0  # realised acceleration of the last step (m/s^2)
        return self._observe(), {"reward_components": self._zero_components()}

    # ------------------------------------------------------------------ signal
    def signal_phase(self, t: float | None = None) -> tuple[int, float]:
        """``(phase, seconds left)`` at time ``t``; phase 0 green, 1 yellow, 2 red."""
        c = self.cfg
        tc = ((self.t if t is None else t) + self.signal_offset) % c.cycle
        if tc < c.green:
            return 0, c.green - tc
        if tc < c.green + c.yellow:
            return 1, c.green + c.yellow - tc
        return 2, c.cycle - tc

    def _start_slots(self, ego_lane: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where traffic may start: ``(x, lane, free)`` of a grid of slots 25 m apart, free
        unless within 30 m of the ego car in its lane or just before the stop line (where a red
        at reset could not be obeyed)."""
        c = self.cfg
        xs = np.arange(-100.0, c.road_length + 50.0, 25.0)
        slot_x = np.tile(xs, c.n_lanes)
        slot_lane = np.repeat(self._lanes, len(xs))
        free = ~((slot_lane == ego_lane) & (np.abs(slot_x) < 30.0))
        to_line = c.signal_position - slot_x
        free &= ~((to_line > -10.0) & (to_line < 40.0))
        return slot_x, slot_lane, free

    # ------------------------------------------------------------------ step
    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._ended:  # an ended episode would keep paying its last reward (+5 an arrival)
            raise RuntimeError(
                "step() after the episode ended (terminated or truncated); call reset() first"
            )
        c = self.cfg
        half = c.car_length / 2
        phase, _ = self.signal_phase()
        x_prev = self.x.copy()
        y_prev0 = float(self.y[0])
        v_e = float(self.v[0])

        # --- ego control -------------------------------------------------
        dy = 0.0
        if c.continuous:
            act = np.asarray(action, dtype=np.float64).reshape(-1)
            if act.shape != (2,) or not np.all(np.isfinite(act)):
                raise ValueError(f"action must be 2 finite numbers, got {action!r}")
            a_cmd = min(max(float(act[0]), -1.0), 1.0)
            a_e = a_cmd * (c.accel if a_cmd > 0 else c.stop_decel)
            heading = min(max(float(act[1]), -1.0), 1.0) * c.max_steer
        else:
            a = int(action)
            if not 0 <= a < len(ACTION_NAMES):
                raise ValueError(f"action must be in [0, {len(ACTION_NAMES)}), got {action!r}")
            heading = 0.0
            a_e = 0.0
            if a == ACCELERATE:
                a_e = c.accel
            elif a == BRAKE:
                a_e = -c.brake
            elif a == STOP:
                a_e = -min(c.stop_decel, v_e / c.dt)
            elif a == LANE_LEFT:
                dy = c.lane_width
            elif a == LANE_RIGHT:
                dy = -c.lane_width
        # Speed is clipped to [0, v_max]; the realised deceleration is what the passengers feel.
        v_e_new = min(max(v_e + a_e * c.dt, 0.0), c.v_max)
        if c.continuous:
            dy = 0.5 * (v_e + v_e_new) * math.sin(heading) * c.dt

        # --- traffic (IDM), computed from the state at the start of the step ----------
        acc = self._idm_accelerations(phase)
        # (np.minimum/np.maximum: np.clip's overhead dominates on arrays this small.)
        v_new = np.maximum(self.v + acc * c.dt, 0.0)
        v_new[0] = v_e_new
        self.x = self.x + 0.5 * (self.v + v_new) * c.dt
        self.v = v_new
        self.y[0] = y_prev0 + dy
        self.lane[0] = min(max(round(self.y[0] / c.lane_width), 0), c.n_lanes - 1)
        self._traffic_lane_change()
        self._update_pedestrians()
        self.t += c.dt
        self.steps += 1
        self.accel_ego = (v_e_new - v_e) / c.dt

        # --- events ---------------------------------------------------------------
        x_e, y_e = float(self.x[0]), float(self.y[0])
        lat = np.abs(self.y[1:] - y_e) < c.car_width
        dx_new = self.x[1:] - x_e
        dx_old = x_prev[1:] - x_prev[0]
        # Overlap now, or passed through each other within the step (no tunnelling).
        hit_car = bool(np.any(lat & ((np.abs(dx_new) < c.car_length) | (dx_new * dx_old < 0))))
        lo, hi = min(x_prev[0], x_e) - half, max(x_prev[0], x_e) + half
        hit_ped = False
        if hi > self._cw_near and lo < self._cw_far and self.ped_active.any():
            reach = c.car_width / 2 + 0.3
            hit_ped = bool(np.any(self.ped_active & (np.abs(self.ped_y - y_e) < reach)))
        # Driving-v0 counts a front that reaches the line exactly as crossing it, though the
        # observation calls it not passed (distance 0); kept as it is so that v0's published
        # results stay reproducible: a fix changes what PPO learns (a version of its own)
        red_run = phase == 2 and x_prev[0] + half < c.signal_position <= x_e + half
        off_road = not (self._road_right <= y_e <= self._road_left)
        arrived = x_e >= c.road_length
        decel = (v_e - v_e_new) / c.dt
        abrupt = decel > c.reward.abrupt_brake_threshold + 1e-9
        collision = hit_car or hit_ped

        r = c.reward
        comps = {
            "progress": r.progress * (min(x_e, c.road_length) - min(x_prev[0], c.road_length)),
            "time": -r.time_cost,
            "arrival": r.arrival if (arrived and not collision) else 0.0,
            "abrupt_brake": r.abrupt_brake if abrupt else 0.0,
            "collision": r.collision if collision else 0.0,
            "red_light": r.red_light if red_run else 0.0,
            "off_road": r.off_road if off_road else 0.0,
        }
        reward = float(sum(comps.values()))
        terminated = bool(collision or off_road or arrived)
        truncated = bool(not terminated and self.steps >= c.max_steps)
        info = {
            "reward_components": comps,
            "collision": collision,
            "collision_with": "pedestrian" if hit_ped else ("car" if hit_car else None),
            "arrived": bool(arrived and not collision),
            "red_light": bool(red_run),
            "abrupt_brake": bool(abrupt),
            "off_road": bool(off_road),
            "travel_time": self.t,
            "speed": v_e_new,
        }
        self._ended = terminated or truncated
        return self._observe(), reward, terminated, truncated, info

    # ------------------------------------------------------------------ traffic
    def _occupancy(self) -> np.ndarray:
        """``(n, n_lanes)`` bool: which lanes each vehicle's body overlaps (the ego may straddle)."""
        c = self.cfg
        return np.abs(self.y[:, None] - self._lane_y[None, :]) < (c.lane_width + c.car_width) / 2

    def _idm_accelerations(self, phase: int) -> np.ndarray:
        """IDM acceleration of every vehicle (row 0, the ego, is ignored by the caller)."""
        c = self.cfg
        n = self._n
        x, v = self.x, self.v
        if n == 1:
            return np.zeros(1)
        occ = self._occupancy()
        same = occ[:, self.lane].T  # same[i, j]: vehicle j occupies vehicle i's lane
        dx = x[None, :] - x[:, None]
        gap_m = np.where(same & (dx > 0), dx - c.car_length, _INF)
        j = gap_m.argmin(axis=1)
        rows = np.arange(n)
        gap = gap_m[rows, j]
        v_lead = np.where(np.isfinite(gap), v[j], v)
        front = x + c.car_length / 2
        # Signal: stop for red, and for yellow when a comfortable stop is still possible
        # (latched, so a driver who decided to stop does not change their mind).
        to_line = c.signal_position - front
        if phase == 0:
            self.stopping[:] = False
        else:
            # Stop if that is comfortable, or if the front would not pass the line before the
            # red and a hard stop is still physically possible (the dilemma zone).
            comfy = to_line > v * v / (2 * c.idm_comfort_brake)
            possible = to_line > v * v / (2 * c.idm_max_brake) + v * c.dt
            left = self.signal_phase()[1] if phase == 1 else 0.0
            clears = to_line < 0.7 * v * left  # with a margin: a leader may slow it down
            self.stopping |= (to_line > 0) & (comfy | (possible & ~clears))
            stop_here = self.stopping & (to_line > -0.5)
            gap = np.where(stop_here & (to_line < gap), np.maximum(to_line, 0.0), gap)
            v_lead = np.where(stop_here & (to_line <= gap), 0.0, v_lead)
        # A pedestrian on the crossing is an obstacle for everyone not yet on the crosswalk.
        if self.ped_active.any():
            to_cw = self._cw_near - 1.0 - front
            block = (to_cw > -1.0) & (to_cw < gap)
            gap = np.where(block, np.maximum(to_cw, 0.0), gap)
            v_lead = np.where(block, 0.0, v_lead)
        s = np.maximum(gap, 0.1)
        s_star = c.idm_min_gap + np.maximum(
            0.0, v * c.idm_headway + v * (v - v_lead) / self._sqrt_ab
        )
        free = np.where(np.isfinite(gap), (s_star / s) ** 2, 0.0)
        acc = c.idm_accel * (1.0 - (v / self.v0) ** 4 - free)
        return np.minimum(np.maximum(acc, -c.idm_max_brake), c.idm_accel)

    def _traffic_lane_change(self) -> None:
        """At most one traffic vehicle per step changes lane (MOBIL-like incentive + safety)."""
        c = self.cfg
        if self._n == 1 or c.n_lanes == 1:
            return
        rng = self.np_random
        cand = np.flatnonzero(rng.random(self._n - 1) < c.lane_change_prob)
        if cand.size == 0:
            return
        i = int(cand[0]) + 1
        target = int(self.lane[i]) + (1 if rng.random() < 0.5 else -1)
        if not 0 <= target < c.n_lanes:
            return
        xi, vi = self.x[i], self.v[i]
        # No lane changes close to the signal or the crosswalk.
        if abs(xi - c.signal_position) < 40.0 or abs(xi - c.crosswalk_position) < 40.0:
            return
        occ = self._occupancy()
        dx = self.x - xi
        others = np.ones(self._n, dtype=bool)
        others[i] = False
        cur = others & occ[:, self.lane[i]] & (dx > 0)
        gap_cur = (dx[cur] - c.car_length).min() if cur.any() else _INF
        v_lead = self.v[cur][np.argmin(dx[cur])] if cur.any() else _INF
        if not (gap_cur < 3.0 * vi + 10.0 and v_lead < self.v0[i] - 1.0):
            return  # not held up: no incentive
        tgt = others & occ[:, target]
        ahead = tgt & (dx >= 0)
        gap_new = (dx[ahead] - c.car_length).min() if ahead.any() else _INF
        behind = tgt & (dx < 0)
        if behind.any():
            k = np.flatnonzero(behind)[np.argmax(dx[behind])]
            gap_back = -dx[k] - c.car_length
            vb = self.v[k]
            if gap_back < c.idm_min_gap + vb * 1.0 + max(0.0, vb - vi) * 2.0:
                return
        if gap_new > gap_cur + 5.0 and gap_new > c.idm_min_gap + vi * c.idm_headway:
            self.lane[i] = target
            self.y[i] = target * c.lane_width

    # ------------------------------------------------------------------ pedestrians
    def _update_pedestrians(self) -> None:
        c = self.cfg
        if c.n_pedestrians == 0:
            return
        self.ped_y += self.ped_v * c.dt
        kerb_r, kerb_l = self._road_right - 1.0, self._road_left + 1.0
        done = self.ped_active & ((self.ped_y < kerb_r - 0.01) | (self.ped_y > kerb_l + 0.01))
        self.ped_active &= ~done
        idle = np.flatnonzero(~self.ped_active)
        if idle.size == 0 or self.np_random.random() >= c.pedestrian_prob:
            return
        # Step out only if no vehicle is on the crosswalk or would reach it within the wait time.
        front = self.x + c.car_length / 2
        rear = self.x - c.car_length / 2
        on_cw = (front > self._cw_near) & (rear < self._cw_far)
        tta = (self._cw_near - front) / np.maximum(self.v, 0.1)
        if np.any(on_cw | ((tta >= 0) & (tta < c.pedestrian_wait_time))):
            return
        k = int(idle[0])
        direction = 1.0 if self.np_random.random() < 0.5 else -1.0
        speed = self.np_random.uniform(c.pedestrian_speed_min, c.pedestrian_speed_max)
        self.ped_y[k] = kerb_r if direction > 0 else kerb_l
        self.ped_v[k] = direction * speed
        self.ped_active[k] = True

    # ------------------------------------------------------------------ observation
    def _observe(self) -> np.ndarray:
        # Scalars are Python floats: on a vector this small, numpy's per-call overhead dominates.
        c = self.cfg
        R = c.sensor_range
        x_e, y_e, v_e = float(self.x[0]), float(self.y[0]), float(self.v[0])
        le = int(self.lane[0])
        # Bumper-to-bumper gaps and relative speeds ahead/behind in own, left, right lane.
        ga, gb = [_INF] * 3, [_INF] * 3
        dva, dvb = [0.0] * 3, [0.0] * 3
        if self._n > 1:
            lanes3 = np.array([le, le + 1, le - 1])
            occ = self._occupancy()[1:]  # traffic only
            valid = (lanes3 >= 0) & (lanes3 < c.n_lanes)
            m = occ[:, np.minimum(np.maximum(lanes3, 0), c.n_lanes - 1)].T & valid[:, None]
            dx = self.x[1:] - x_e
            dv = (self.v[1:] - v_e) / c.v_max
            g_a = np.where(m & (dx >= 0), dx - c.car_length, _INF)
            g_b = np.where(m & (dx < 0), -dx - c.car_length, _INF)
            ia, ib = g_a.argmin(1), g_b.argmin(1)
            r3 = np.arange(3)
            ga, gb = g_a[r3, ia].tolist(), g_b[r3, ib].tolist()
            dva, dvb = dv[ia].tolist(), dv[ib].tolist()
        o = [
            v_e / c.v_max,
            le / max(c.n_lanes - 1, 1),
            (y_e - le * c.lane_width) / c.lane_width,
            float(le < c.n_lanes - 1),
            float(le > 0),
        ]
        for k in range(3):  # 0 = alongside; 1 and relative speed 0 = nothing within range
            ahead, behind = ga[k] < R, gb[k] < R
            o += [
                min(max(ga[k] / R, 0.0), 1.0) if ahead else 1.0,
                dva[k] if ahead else 0.0,
                min(max(gb[k] / R, 0.0), 1.0) if behind else 1.0,
                dvb[k] if behind else 0.0,
            ]
        front = x_e + c.car_length / 2
        phase, left = self.signal_phase()
        d_sig = c.signal_position - front
        o.append(min(d_sig / R, 1.0) if d_sig >= 0 else 1.0)
        o += [float(phase == 0), float(phase == 1), float(phase == 2), left / c.cycle]
        d_cw = self._cw_near - front
        o.append(min(d_cw / R, 1.0) if front < self._cw_far else 1.0)
        road_w = c.n_lanes * c.lane_width
        ped_approach, ped_on_arrival = 0.0, 1.0
        if self.ped_active.any():
            rel = self.ped_y[self.ped_active] - y_e
            k = int(np.abs(rel).argmin())
            o += [1.0, min(abs(float(rel[k])) / road_w, 1.0)]
            toward = -float(np.sign(rel[k])) * float(self.ped_v[self.ped_active][k])
            ped_approach = toward / c.pedestrian_speed_max
            if front < self._cw_far:
                t_arrive = min(max(d_cw, 0.0) / max(v_e, 0.5), 10.0)
                kerb_r, kerb_l = self._road_right - 1.0, self._road_left + 1.0
                later = self.ped_y[self.ped_active] + self.ped_v[self.ped_active] * t_arrive
                later = np.minimum(np.maximum(later, kerb_r), kerb_l)
                ped_on_arrival = min(float(np.abs(later - y_e).min()) / road_w, 1.0)
        else:
            o += [0.0, 1.0]
        o.append(max(c.road_length - x_e, 0.0) / c.road_length)
        o.append(self.steps / c.max_steps)
        gap, closing = ga[0], -dva[0] * c.v_max if ga[0] < R else 0.0
        o.append(min(gap / closing, 10.0) / 10.0 if (gap < R and closing > 0) else 1.0)
        v2 = v_e * v_e / (2.0 * c.stop_decel)
        o.append(min(v2 / max(d_sig, 0.1), 2.0) if d_sig >= 0 else 0.0)
        o.append(min(v2 / max(d_cw, 0.1), 2.0) if front < self._cw_far else 0.0)
        # Near-range gaps: own ahead, own behind, left ahead, left behind, right ahead, behind.
        for g in (ga[0], gb[0], ga[1], gb[1], ga[2], gb[2]):
            o.append(max(g, 0.0) / (max(g, 0.0) + NEAR_SCALE) if g < R else 1.0)
        if gap < R:
            o.append(min(max(gap, 0.0) / max(v_e, 0.1) / HEADWAY_SCALE, 1.0))
            room = max(gap - MIN_GAP, 0.1)
            o.append(
                min(closing * closing / (2.0 * room) / c.stop_decel, 2.0) if closing > 0 else 0.0
            )
        else:
            o += [1.0, 0.0]
        o.append(min(d_sig / v_e / c.cycle, 1.0) if (d_sig >= 0 and v_e > 0.1) else 1.0)
        o += [ped_approach, ped_on_arrival]
        o.append(o[OBS_INDEX["signal_brake_needed"]] if phase != 0 else 0.0)
        o.append(o[OBS_INDEX["crosswalk_brake_needed"]] if self.ped_active.any() else 0.0)
        dt, vmax = c.dt, c.v_max
        for k, exists in ((1, le < c.n_lanes - 1), (2, le > 0), (0, True)):
            if not exists:
                o.append(0.0)
                continue
            g = _INF
            if ga[k] < R:
                g = ga[k] + dva[k] * vmax * dt
            if gb[k] < R and k != 0:  # behind matters for a lane change only
                g = min(g, gb[k] - dvb[k] * vmax * dt)
            o.append(max(g, 0.0) / (max(g, 0.0) + NEAR_SCALE) if g < R else 1.0)
        obs = np.array(o)
        return np.minimum(np.maximum(obs, self._obs_low), self._obs_high).astype(np.float32)

    @staticmethod
    def _zero_components() -> dict[str, float]:
        keys = ("progress", "time", "arrival", "abrupt_brake", "collision", "red_light", "off_road")
        return dict.fromkeys(keys, 0.0)

    # ------------------------------------------------------------------ render
    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return render_frame(self)


def make_driving_continuous(**kwargs: Any) -> DrivingEnv:
    """Entry point of ``rlalign/DrivingContinuous-v0``: the same world, Box actions."""
    kwargs["continuous"] = True
    return DrivingEnv(**kwargs)
