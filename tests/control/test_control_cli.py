"""``rlalign control train|eval|render`` end to end, and its one-line errors."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from PIL import Image

from rlalign.cli import main


class _MultiDiscreteEnv(gym.Env):
    observation_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
    action_space = spaces.MultiDiscrete([2, 2])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(2, dtype=np.float32), 0.0, True, False, {}


if "rlalign_test/MultiDiscrete-v0" not in gym.registry:
    gym.register("rlalign_test/MultiDiscrete-v0", entry_point=_MultiDiscreteEnv)


def _err(capsys) -> str:
    return capsys.readouterr().err.strip()


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cp")
    rc = main(
        ["control", "train", "--env", "CartPole-v1", "--steps", "2048", "--out", str(out),
         "--no-progress", "eval_every=1024", "final_eval_episodes=3", "eval_episodes=2"]
    )  # fmt: skip
    assert rc == 0
    return out


def test_train_writes_run_directory(cartpole_run) -> None:
    out = cartpole_run
    for name in (
        "metrics.jsonl",
        "policy.safetensors",
        "policy.json",
        "result.json",
        "config.yaml",
    ):
        assert (out / name).exists(), name
    res = json.loads((out / "result.json").read_text())
    for key in (
        "env_id", "algo", "seed", "env_steps", "env_steps_to_solve", "final_eval_return",
        "eval_episodes", "wall_seconds",
    ):  # fmt: skip
        assert key in res, key
    assert res["env_id"] == "CartPole-v1" and res["algo"] == "ppo" and res["env_steps"] == 2048
    assert res["eval_episodes"] == 3
    from safetensors import safe_open

    with safe_open(str(out / "policy.safetensors"), "np") as f:
        keys = set(f.keys())
    # Observation and reward normalisation statistics travel with the policy.
    assert {"obs_norm.mean", "obs_norm.var", "reward_norm.var"} <= keys
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["step"] == 2048 and "eval_return" in rows[-1]


def test_eval_json_and_render(cartpole_run, capsys, tmp_path) -> None:
    capsys.readouterr()
    assert main(["control", "eval", str(cartpole_run), "--episodes", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["episodes"] == 3 and res["env_id"] == "CartPole-v1"
    gif = tmp_path / "driving.gif"
    rc = main(["control", "render", "--env", "rlalign/Driving-v0", "--policy", "rule_based",
               "--out", str(gif)])  # fmt: skip
    assert rc == 0
    img = Image.open(gif)
    assert img.n_frames > 10 and gif.stat().st_size < 1_000_000
    single_height = img.size[1]
    both = tmp_path / "both.gif"
    rc = main(["control", "render", "--env", "rlalign/Driving-v0", "--policy", "rule_based",
               "--compare", "constant_speed", "--out", str(both)])  # fmt: skip
    assert rc == 0 and Image.open(both).size[1] > 2 * single_height - 10  # stacked


def test_driving_result_has_driving_metrics_and_baselines(tmp_path) -> None:
    out = tmp_path / "car"
    rc = main(
        ["control", "train", "--env", "rlalign/Driving-v0", "--steps", "1024", "--out", str(out),
         "--no-progress", "n_envs=4", "n_steps=128", "eval_every=1024", "eval_episodes=2",
         "final_eval_episodes=4", "env_kwargs.road_length=300", "env_kwargs.signal_position=150",
         "env_kwargs.crosswalk_position=250"]
    )  # fmt: skip
    assert rc == 0
    res = json.loads((out / "result.json").read_text())
    for key in ("collision_rate", "mean_travel_time", "abrupt_brakes_per_episode"):
        assert key in res
    assert set(res["baselines"]) == {"random", "constant_speed", "rule_based"}
    for b in res["baselines"].values():
        assert b["episodes"] == 4 and 0.0 <= b["collision_rate"] <= 1.0
    # The env settings travel with the policy.
    assert json.loads((out / "policy.json").read_text())["env_kwargs"]["road_length"] == 300


def test_unknown_env_id_suggests(capsys, tmp_path) -> None:
    rc = main(["control", "train", "--env", "CartPole-v2", "--out", str(tmp_path / "x")])
    err = _err(capsys)
    assert rc == 2 and "unknown environment id 'CartPole-v2'" in err and "CartPole-v1" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    rc = main(["control", "train", "--env", "rlalign/Drivng-v0", "--out", str(tmp_path / "x")])
    assert rc == 2 and "rlalign/Driving-v0" in _err(capsys)


def test_unsupported_action_space(capsys, tmp_path) -> None:
    rc = main(["control", "train", "--env", "rlalign_test/MultiDiscrete-v0", "--steps", "10",
               "--out", str(tmp_path / "x"), "--no-progress"])  # fmt: skip
    err = _err(capsys)
    assert rc == 2 and "MultiDiscrete" in err and "Discrete and 1-D Box" in err


def test_policy_from_another_env(cartpole_run, capsys, tmp_path) -> None:
    rc = main(["control", "eval", str(cartpole_run), "--env", "rlalign/Driving-v0"])
    err = _err(capsys)
    assert rc == 2 and "trained on 'CartPole-v1'" in err
    rc = main(["control", "render", str(cartpole_run), "--policy", "rule_based",
               "--out", str(tmp_path / "a.gif")])  # fmt: skip
    assert rc == 2 and "driving envs only" in _err(capsys)


def test_malformed_overrides(capsys, tmp_path) -> None:
    rc = main(["control", "train", "--env", "CartPole-v1", "--out", str(tmp_path / "x"), "oops"])
    assert rc == 2 and "expected key=value" in _err(capsys)
    rc = main(["control", "train", "--env", "CartPole-v1", "--out", str(tmp_path / "x"),
               "learning_rat=1e-3"])  # fmt: skip
    err = _err(capsys)
    assert rc == 2 and "did you mean 'learning_rate'" in err
    rc = main(["control", "train", "--env", "CartPole-v1", "--out", str(tmp_path / "x"),
               "--steps", "0"])  # fmt: skip
    assert rc == 2 and "--steps" in _err(capsys)


def test_eval_missing_directory(capsys, tmp_path) -> None:
    rc = main(["control", "eval", str(tmp_path / "nope")])
    assert rc == 2 and "not a directory" in _err(capsys)


@pytest.mark.parametrize("seed", ["-1", str(2**32), "99999999999999999999", "1.5"])
def test_a_seed_out_of_range_is_refused_by_every_command(capsys, tmp_path, seed) -> None:
    """gymnasium takes no negative seed, numpy none of 2**32 or more: each --seed says so."""
    commands = [
        ["train", "--env", "rlalign/Driving-v0", "--out", str(tmp_path / "x")],
        ["eval", "--env", "rlalign/Driving-v0", "--policy", "rule_based", "--episodes", "1"],
        ["render", "--env", "rlalign/Driving-v0", "--policy", "rule_based",
         "--out", str(tmp_path / "a.gif")],
    ]  # fmt: skip
    for command in commands:
        with pytest.raises(SystemExit) as exit_:
            main(["control", *command, "--seed", seed])
        err = _err(capsys)
        assert exit_.value.code == 2 and "Traceback" not in err
        assert "argument --seed: " in err and f"got '{seed}'" in err
        if seed != "1.5":
            assert "a seed is a whole number from 0 to 4294967295" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "a.gif").exists()
    # the bounds themselves are seeds
    assert main(["control", "eval", "--env", "rlalign/Driving-v0", "--policy", "rule_based",
                 "--episodes", "1", "--seed", str(2**32 - 1), "--json"]) == 0  # fmt: skip


def test_eval_of_a_truncated_policy_is_one_line_naming_the_file(
    cartpole_run, tmp_path, capsys
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cartpole_run, run)
    weights = run / "policy.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a copy cut short
    capsys.readouterr()
    rc = main(["control", "eval", str(run), "--episodes", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{weights}: truncated or corrupt safetensors file" in err
    assert "train the policy again" in err
