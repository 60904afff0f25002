"""The driving environment: API conformance, determinism, and each reward term on a hand-built
scenario (the state is placed by hand, then one step is checked against the rules)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import rlalign  # noqa: F401  (registers the ids)
from rlalign.control.driving_env import (
    ACCELERATE,
    ACTION_NAMES,
    BRAKE,
    KEEP,
    LANE_LEFT,
    OBS_FIELDS,
    OBS_INDEX,
    STOP,
    DrivingEnv,
)

IDS = ["rlalign/Driving-v0", "rlalign/DrivingContinuous-v0"]


@pytest.mark.parametrize("env_id", IDS)
def test_check_env(env_id: str) -> None:
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=False)
    assert env.observation_space.shape == (len(OBS_FIELDS),)


def test_action_names_and_spaces() -> None:
    env = gym.make("rlalign/Driving-v0")
    assert env.unwrapped.action_names == (
        "keep", "accelerate", "brake", "lane_left", "lane_right", "stop",
    )  # fmt: skip
    assert env.action_space.n == len(ACTION_NAMES)
    cont = gym.make("rlalign/DrivingContinuous-v0")
    assert cont.action_space.shape == (2,)
    assert cont.unwrapped.action_names == ("acceleration", "steering")


def _rollout(env_id: str, seed: int, steps: int = 120) -> tuple[np.ndarray, np.ndarray]:
    env = gym.make(env_id)
    env.action_space.seed(123)
    obs, _ = env.reset(seed=seed)
    out, rew = [obs], []
    for _ in range(steps):
        obs, r, term, trunc, _ = env.step(env.action_space.sample())
        out.append(obs)
        rew.append(r)
        if term or trunc:
            obs, _ = env.reset()
            out.append(obs)
    return np.array(out), np.array(rew)


@pytest.mark.parametrize("env_id", IDS)
def test_deterministic_per_seed(env_id: str) -> None:
    a_obs, a_rew = _rollout(env_id, seed=7)
    b_obs, b_rew = _rollout(env_id, seed=7)
    c_obs, _ = _rollout(env_id, seed=8)
    np.testing.assert_array_equal(a_obs, b_obs)
    np.testing.assert_array_equal(a_rew, b_rew)
    assert a_obs.shape != c_obs.shape or not np.array_equal(a_obs, c_obs)


def test_vectorised_with_gymnasium_vector() -> None:
    envs = gym.make_vec("rlalign/Driving-v0", num_envs=4, vectorization_mode="sync")
    obs, _ = envs.reset(seed=0)
    envs.action_space.seed(0)
    assert obs.shape == (4, len(OBS_FIELDS))
    for _ in range(30):
        obs, r, _term, _trunc, _info = envs.step(envs.action_space.sample())
    assert obs.shape == (4, len(OBS_FIELDS)) and r.shape == (4,)
    # Different sub-env seeds give different worlds.
    assert not np.allclose(obs[0], obs[1])
    envs.close()


# --------------------------------------------------------------------- hand-built scenarios
def _scenario(**kwargs) -> DrivingEnv:
    """An env with the requested number of vehicles, reset, the signal held green."""
    env = DrivingEnv(**{"n_pedestrians": 0, "lane_change_prob": 0.0, **kwargs})
    env.reset(seed=0)
    env.signal_offset = -env.t  # phase time 0: green for `green` seconds
    return env


def _place(env: DrivingEnv, i: int, x: float, lane: int, v: float) -> None:
    env.x[i], env.lane[i], env.v[i] = x, lane, v
    env.y[i] = lane * env.cfg.lane_width


def test_progress_and_time_components() -> None:
    env = _scenario(n_vehicles=0)
    _place(env, 0, 100.0, 1, 10.0)
    _, r, term, trunc, info = env.step(KEEP)
    c = info["reward_components"]
    dist = 10.0 * env.cfg.dt
    assert c["progress"] == pytest.approx(env.cfg.reward.progress * dist)
    assert c["time"] == pytest.approx(-env.cfg.reward.time_cost)
    assert r == pytest.approx(sum(c.values()))
    assert not term and not trunc and not info["collision"]


def test_collision_with_car_ends_episode() -> None:
    env = _scenario(n_vehicles=1)
    _place(env, 0, 100.0, 1, 15.0)
    _place(env, 1, 108.0, 1, 0.0)  # a stopped car 3 m ahead (bumper to bumper)
    env.v0[1] = 1e-3  # it stays put
    _, r, term, _, info = env.step(ACCELERATE)
    assert term and info["collision"] and info["collision_with"] == "car"
    assert info["reward_components"]["collision"] == env.cfg.reward.collision
    assert r < env.cfg.reward.collision / 2


def test_no_tunnelling_through_a_car() -> None:
    # 30 m/s towards a stopped car 1 m ahead (bumper to bumper): one 0.5 s step moves the ego
    # 15 m, clean past it, so only the swept check can see the crash.
    env = _scenario(n_vehicles=1, v_max=40.0)
    _place(env, 0, 100.0, 0, 30.0)
    _place(env, 1, 106.0, 0, 0.0)
    env.v0[1] = 1e-3
    _, _, term, _, info = env.step(KEEP)
    assert env.x[0] - env.cfg.car_length > env.x[1]  # geometrically past it
    assert term and info["collision"]


def test_car_in_other_lane_is_no_collision() -> None:
    env = _scenario(n_vehicles=1)
    _place(env, 0, 100.0, 0, 10.0)
    _place(env, 1, 102.0, 1, 10.0)  # alongside, one lane to the left
    env.v0[1] = 10.0
    _, _, term, _, info = env.step(KEEP)
    assert not term and not info["collision"]
    # ... but moving into that lane is.
    _, _, term, _, info = env.step(LANE_LEFT)
    assert term and info["collision"]


def test_abrupt_braking_penalised_only_beyond_threshold() -> None:
    env = _scenario(n_vehicles=0)
    _place(env, 0, 100.0, 1, 15.0)
    _, _, _, _, info = env.step(BRAKE)  # 3 m/s^2: firm but fine
    assert not info["abrupt_brake"] and info["reward_components"]["abrupt_brake"] == 0.0
    _, _, _, _, info = env.step(STOP)  # 6 m/s^2 > 4.5 threshold
    assert info["abrupt_brake"]
    assert info["reward_components"]["abrupt_brake"] == env.cfg.reward.abrupt_brake
    assert env.v[0] == pytest.approx(15.0 - 3.0 * 0.5 - 6.0 * 0.5)
    # A gentle stop from low speed (v / dt <= threshold) is not abrupt, and stops exactly.
    env.v[0] = 2.0
    _, _, _, _, info = env.step(STOP)
    assert env.v[0] == 0.0 and not info["abrupt_brake"]


def test_red_light_run_is_penalised_and_stopping_is_not() -> None:
    env = _scenario(n_vehicles=0)
    c = env.cfg
    env.signal_offset = c.green + c.yellow + 1.0 - env.t  # red, 9 s left
    assert env.signal_phase()[0] == 2
    front_gap = 2.0
    _place(env, 0, c.signal_position - c.car_length / 2 - front_gap, 1, 10.0)
    _, _, term, _, info = env.step(KEEP)
    assert info["red_light"] and info["reward_components"]["red_light"] == c.reward.red_light
    assert not term  # a violation, not the end of the trip
    # The same approach on green is legal.
    env2 = _scenario(n_vehicles=0)
    _place(env2, 0, c.signal_position - c.car_length / 2 - front_gap, 1, 10.0)
    _, _, _, _, info = env2.step(KEEP)
    assert not info["red_light"] and info["reward_components"]["red_light"] == 0.0
    # Stopping before the line on red is legal.
    env3 = _scenario(n_vehicles=0)
    env3.signal_offset = env.signal_offset
    _place(env3, 0, c.signal_position - c.car_length / 2 - 10.0, 1, 4.0)
    for _ in range(5):
        _, _, _, _, info = env3.step(STOP)
        assert not info["red_light"]


def test_a_step_after_the_end_of_an_episode_is_refused() -> None:
    """An ended episode would keep paying its last reward (+5 an arrival) at every step."""
    env = _scenario(n_vehicles=0)
    c = env.cfg
    _place(env, 0, c.road_length - 2.0, 1, 10.0)
    assert env.step(KEEP)[2]
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(KEEP)
    env.reset(seed=1)
    env.step(KEEP)


def test_more_cars_than_the_road_holds_are_refused_when_the_env_is_made() -> None:
    with pytest.raises(ValueError, match="n_vehicles=100 cars do not fit: the road has 81 start"):
        DrivingEnv(n_vehicles=100)


def test_arrival_bonus_ends_episode() -> None:
    env = _scenario(n_vehicles=0)
    c = env.cfg
    _place(env, 0, c.road_length - 2.0, 1, 10.0)
    _, _, term, _, info = env.step(KEEP)
    assert term and info["arrived"]
    assert info["reward_components"]["arrival"] == c.reward.arrival
    # Progress counts only up to the destination.
    assert info["reward_components"]["progress"] == pytest.approx(2.0 * c.reward.progress)


def test_leaving_the_road() -> None:
    env = _scenario(n_vehicles=0, n_lanes=2)
    _place(env, 0, 50.0, 1, 10.0)  # leftmost lane
    _, _, term, _, info = env.step(LANE_LEFT)
    assert term and info["off_road"]
    assert info["reward_components"]["off_road"] == env.cfg.reward.off_road


def test_pedestrian_collision() -> None:
    env = _scenario(n_vehicles=0, n_pedestrians=1, pedestrian_prob=0.0)
    c = env.cfg
    env.ped_active[0], env.ped_y[0], env.ped_v[0] = True, 1 * c.lane_width, 0.0
    _place(env, 0, c.crosswalk_position - c.crosswalk_width / 2 - c.car_length / 2 - 1.0, 1, 10.0)
    _, _, term, _, info = env.step(KEEP)
    assert term and info["collision"] and info["collision_with"] == "pedestrian"
    # A pedestrian in another lane is passed safely.
    env = _scenario(n_vehicles=0, n_pedestrians=1, pedestrian_prob=0.0)
    env.ped_active[0], env.ped_y[0], env.ped_v[0] = True, 0.0, 0.0
    _place(env, 0, c.crosswalk_position - c.crosswalk_width / 2 - c.car_length / 2 - 1.0, 2, 10.0)
    _, _, term, _, info = env.step(KEEP)
    assert not term and not info["collision"]


def test_reward_weights_are_configurable() -> None:
    env = gym.make("rlalign/Driving-v0", reward={"collision": -99.0, "time_cost": 0.5})
    cfg = env.unwrapped.cfg
    assert cfg.reward.collision == -99.0 and cfg.reward.time_cost == 0.5
    with pytest.raises(TypeError, match="unknown reward weight"):
        gym.make("rlalign/Driving-v0", reward={"colision": -1.0})


def test_observation_fields_match_a_hand_built_state() -> None:
    env = _scenario(n_vehicles=2)
    c = env.cfg
    _place(env, 0, 100.0, 1, 10.0)
    _place(env, 1, 130.0, 1, 5.0)  # own lane, 30 m ahead (25 m bumper to bumper)
    _place(env, 2, 90.0, 2, 12.0)  # left lane, 10 m behind (5 m gap)
    obs = env._observe()
    ix = OBS_INDEX
    assert obs[ix["speed"]] == pytest.approx(10.0 / c.v_max)
    assert obs[ix["ahead_gap"]] == pytest.approx(25.0 / c.sensor_range)
    assert obs[ix["ahead_rel_speed"]] == pytest.approx(-5.0 / c.v_max)
    assert obs[ix["ahead_time_to_collision"]] == pytest.approx(25.0 / 5.0 / 10.0)  # 5 s of 10
    assert obs[ix["left_behind_gap"]] == pytest.approx(5.0 / c.sensor_range)
    assert obs[ix["left_behind_rel_speed"]] == pytest.approx(2.0 / c.v_max)
    assert obs[ix["behind_gap"]] == 1.0 and obs[ix["right_ahead_gap"]] == 1.0
    assert obs[ix["has_left_lane"]] == 1.0 and obs[ix["has_right_lane"]] == 1.0
    d_sig = c.signal_position - (100.0 + c.car_length / 2)
    assert obs[ix["signal_distance"]] == pytest.approx(min(d_sig / c.sensor_range, 1.0))
    assert obs[ix["signal_green"]] == 1.0 and obs[ix["signal_red"]] == 0.0
    assert obs[ix["signal_brake_needed"]] == pytest.approx(100.0 / (2 * c.stop_decel) / d_sig)
    assert obs[ix["distance_to_go"]] == pytest.approx((c.road_length - 100.0) / c.road_length)
    # Near-range gaps g / (g + 10 m), headway and the braking needed behind the car ahead.
    assert obs[ix["ahead_gap_near"]] == pytest.approx(25.0 / 35.0)
    assert obs[ix["left_behind_gap_near"]] == pytest.approx(5.0 / 15.0)
    assert obs[ix["behind_gap_near"]] == 1.0 and obs[ix["right_ahead_gap_near"]] == 1.0
    assert obs[ix["ahead_headway"]] == pytest.approx(25.0 / 10.0 / 4.0)
    assert obs[ix["ahead_brake_needed"]] == pytest.approx(5.0**2 / (2 * 23.0) / c.stop_decel)
    assert obs[ix["signal_time_to_line"]] == pytest.approx(d_sig / 10.0 / c.cycle)
    assert obs[ix["pedestrian_approach_speed"]] == 0.0  # nobody crossing
    assert obs[ix["pedestrian_lateral_on_arrival"]] == 1.0
    # Clearance after one more step at current speeds: 25 m closing at 5 m/s; 5 m behind in the
    # left lane closing at 2 m/s; nobody on the right.
    assert obs[ix["ahead_clearance_next_step"]] == pytest.approx(22.5 / 32.5)
    assert obs[ix["left_change_clearance"]] == pytest.approx(4.0 / 14.0)
    assert obs[ix["right_change_clearance"]] == 1.0
    assert obs[ix["light_stop_brake_needed"]] == 0.0  # green: no stop needed
    assert obs[ix["pedestrian_stop_brake_needed"]] == 0.0
    env.signal_offset = c.green + c.yellow + 1.0 - env.t  # red
    red = env._observe()
    assert red[ix["light_stop_brake_needed"]] == red[ix["signal_brake_needed"]] > 0


def test_changing_into_a_missing_lane_has_no_clearance() -> None:
    env = _scenario(n_vehicles=0)
    _place(env, 0, 100.0, 0, 10.0)  # rightmost lane
    obs = env._observe()
    assert obs[OBS_INDEX["right_change_clearance"]] == 0.0  # off the road
    assert obs[OBS_INDEX["left_change_clearance"]] == 1.0


def test_pedestrian_direction_and_position_on_arrival() -> None:
    env = _scenario(n_vehicles=0, n_pedestrians=2)
    c = env.cfg
    road_w = c.n_lanes * c.lane_width
    ix = OBS_INDEX
    _place(env, 0, c.crosswalk_position - 52.5, 0, 10.0)  # front 50 m before the crosswalk
    env.ped_active[:] = [True, False]
    env.ped_y[0], env.ped_v[0] = 7.0, -1.2  # two lanes to the left, walking towards the ego
    obs = env._observe()
    assert obs[ix["pedestrian_lateral"]] == pytest.approx(7.0 / road_w)
    assert obs[ix["pedestrian_approach_speed"]] == pytest.approx(1.2 / c.pedestrian_speed_max)
    # The front reaches the crosswalk (near edge 2 m before its centre) in 48 / 10 = 4.8 s.
    t = (50.0 - c.crosswalk_width / 2) / 10.0
    assert obs[ix["pedestrian_lateral_on_arrival"]] == pytest.approx(abs(7.0 - 1.2 * t) / road_w)
    need = 10.0**2 / (2 * c.stop_decel) / (50.0 - c.crosswalk_width / 2)
    assert obs[ix["pedestrian_stop_brake_needed"]] == pytest.approx(need)
    env.ped_v[0] = 1.2  # walking away: negative, and off the road by the time the car arrives
    obs = env._observe()
    assert obs[ix["pedestrian_approach_speed"]] == pytest.approx(-1.2 / c.pedestrian_speed_max)
    kerb = (c.n_lanes - 1) * c.lane_width + c.lane_width / 2 + 1.0
    assert obs[ix["pedestrian_lateral_on_arrival"]] == pytest.approx(kerb / road_w)


def test_traffic_never_collides_and_obeys_red_lights() -> None:
    """IDM traffic (with the ego parked out of the way) never overlaps and never runs a red."""
    for seed in range(5):
        env = DrivingEnv()
        env.reset(seed=seed)
        c = env.cfg
        env.x[0] = -1e4  # park the ego far behind: traffic only
        for _ in range(c.max_steps):
            front_before = env.x[1:] + c.car_length / 2
            red = env.signal_phase()[0] == 2
            env.step(STOP)
            front_after = env.x[1:] + c.car_length / 2
            if red:
                crossed = (front_before < c.signal_position) & (front_after >= c.signal_position)
                assert not crossed.any(), f"seed {seed}: traffic ran a red light"
            same = env.lane[1:, None] == env.lane[None, 1:]
            dx = np.abs(env.x[1:, None] - env.x[None, 1:])
            np.fill_diagonal(same, False)
            assert not (same & (dx < c.car_length)).any(), f"seed {seed}: traffic collided"


def test_render_rgb_array_and_gif(tmp_path) -> None:
    from PIL import Image

    from rlalign.control.render import save_gif

    env = gym.make("rlalign/Driving-v0", render_mode="rgb_array")
    env.reset(seed=0)
    frames = [env.render()]
    for _ in range(10):
        env.step(ACCELERATE)
        frames.append(env.render())
    f = frames[0]
    assert f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3
    assert len({fr.tobytes() for fr in frames}) > 1  # the picture changes
    path = save_gif(frames, tmp_path / "ep.gif", fps=8)
    img = Image.open(path)
    assert img.n_frames == len(frames)
    assert path.stat().st_size < 1_000_000
