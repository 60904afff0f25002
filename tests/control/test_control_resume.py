"""Checkpoints of the car's trainer: a run stopped anywhere -- SIGKILL at a random moment, SIGKILL
while a checkpoint is being written, SIGTERM -- and resumed with ``--resume`` ends bit-identical
to a run that never stopped, with each metrics step logged once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rlalign.cli import main
from rlalign.control.env_state import get_env_state, set_env_state

STEPS = 4096  # 32 updates of 2 envs x 64 steps: a few seconds
UPDATE = 128


def train_args(out: Path, *extra: str) -> list[str]:
    return [
        "control", "train", "--env", "rlalign/Driving-v0", "--steps", str(STEPS),
        "--out", str(out), "--no-progress", "--no-baselines", "--no-report", *extra,
        "n_envs=2", "n_steps=64", "minibatch_size=64", "num_iterations=2", "hidden_sizes=[8]",
        f"save_every={UPDATE}", "keep_checkpoints=3", "eval_every=1024", "eval_episodes=1",
        "final_eval_episodes=1",
    ]  # fmt: skip


def child(out: Path, script: str | None = None, **env: str) -> subprocess.Popen:
    cmd = [sys.executable, script] if script else [sys.executable, "-m", "rlalign"]
    return subprocess.Popen(
        [*cmd, *train_args(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path.name}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"no {path.name} within {seconds} s"
        time.sleep(0.005)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_run(straight: Path, resumed: Path) -> None:
    for rel in ("policy.safetensors", f"checkpoints/step_{STEPS}/model.safetensors"):
        a, b = weights(straight / rel), weights(resumed / rel)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{rel}: {k} differs"
    rows = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(UPDATE, STEPS + 1, UPDATE))  # each once
    ref = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    for key in ("policy_loss", "value_loss", "episode_return", "eval_return"):
        assert [r.get(key) for r in rows] == [r.get(key) for r in ref], key
    ra = json.loads((resumed / "result.json").read_text())
    rb = json.loads((straight / "result.json").read_text())
    for key in ("final_eval_return", "evals", "kept_best_eval", "env_steps"):
        assert ra[key] == rb[key], key
    assert ra["resumed_from"] is not None and rb["resumed_from"] is None


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight")
    assert main(train_args(out)) == 0
    return out


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_resume_is_bit_identical(straight, tmp_path) -> None:
    rng = random.Random(1234)
    killed = tmp_path / "killed"
    proc = child(killed)
    # After a random checkpoint, plus a random delay: the kill lands anywhere in the next update
    # (rollout, optimisation, evaluation or the next checkpoint write).
    k = rng.randrange(2, STEPS // UPDATE - 4)
    wait_for(killed / "checkpoints" / f"step_{k * UPDATE}", proc)
    time.sleep(rng.uniform(0.0, 0.05))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "result.json").exists()  # it did not finish
    assert main([*train_args(killed), "--resume"]) == 0
    assert_same_run(straight, killed)


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_then_resume(straight, tmp_path) -> None:
    killed, marker = tmp_path / "killed", tmp_path / "marker"
    script = str(Path(__file__).with_name("_killed_car.py"))
    proc = child(killed, script, HANG_STEP=str(10 * UPDATE), MARKER=str(marker))
    wait_for(marker, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    root = killed / "checkpoints"
    half = [p for p in root.iterdir() if p.name.startswith(".step_")]
    assert half and (half[0] / "model.safetensors").exists()  # killed mid-write
    assert not (root / f"step_{10 * UPDATE}").exists()
    assert main([*train_args(killed), "--resume"]) == 0
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # the debris is gone
    assert_same_run(straight, killed)


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits_128_plus_signal(straight, tmp_path) -> None:
    stopped = tmp_path / "stopped"
    proc = child(stopped)
    wait_for(stopped / "checkpoints" / f"step_{3 * UPDATE}", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM" in err and "--resume" in err and "Traceback" not in err
    saved = sorted(int(p.name[5:]) for p in (stopped / "checkpoints").glob("step_*"))
    assert saved[-1] > 3 * UPDATE - 1 and saved[-1] < STEPS  # a checkpoint of where it stopped
    assert main([*train_args(stopped), "--resume"]) == 0
    assert_same_run(straight, stopped)


def test_resume_refuses_a_changed_config_and_a_fresh_run_refuses_old_checkpoints(
    straight, tmp_path, capsys
) -> None:
    capsys.readouterr()
    assert main([*train_args(straight), "--resume", "learning_rate=1e-2"]) == 2
    err = capsys.readouterr().err
    assert "learning_rate" in err and "Traceback" not in err
    assert main(train_args(straight)) == 2
    assert "--resume" in capsys.readouterr().err


def test_a_checkpoint_carrying_a_pickle_payload_is_refused(straight, tmp_path, capsys) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(straight, run)
    flag = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {flag}",))

    newest = max((run / "checkpoints").glob("step_*"), key=lambda p: int(p.name[5:]))
    torch.save(
        {"format": "rlalign-control-checkpoint", "x": Payload()}, newest / "trainer_state.pt"
    )
    capsys.readouterr()
    assert main([*train_args(run), "--resume"]) == 2
    assert "refused to unpickle" in capsys.readouterr().err
    assert not flag.exists()


@pytest.mark.parametrize("env_id", ["rlalign/Driving-v0", "CartPole-v1", "Pendulum-v1"])
def test_an_env_snapshot_continues_exactly(env_id: str) -> None:
    """Restoring a snapshot (through torch.save / weights_only load) into a freshly made env
    gives the same future, across episode ends, as the env it was taken from."""
    import io

    env = gym.make(env_id)
    env.reset(seed=3)
    env.action_space.seed(0)
    for _ in range(25):
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
    buf = io.BytesIO()
    torch.save(get_env_state(env), buf)
    buf.seek(0)
    copy = gym.make(env_id)
    copy.reset(seed=99)  # a different world, overwritten by the snapshot
    set_env_state(copy, torch.load(buf, weights_only=True))
    env.action_space.seed(1)
    actions = [env.action_space.sample() for _ in range(300)]

    def future(e) -> np.ndarray:
        out = []
        for a in actions:
            o, r, term, trunc, _ = e.step(a)
            out.append(np.append(o, r))
            if term or trunc:
                out.append(np.append(e.reset()[0], 0.0))
        return np.concatenate(out)

    np.testing.assert_array_equal(future(env), future(copy))


class _NaNRewardEnv(gym.Env):
    """CartPole-shaped env whose reward becomes NaN at its 300th step."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)
    calls = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action):
        type(self).calls += 1
        r = float("nan") if type(self).calls == 300 else 1.0
        obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return obs, r, bool(self.np_random.random() < 0.05), False, {}


if "rlalign_test/NaNReward-v0" not in gym.registry:
    gym.register("rlalign_test/NaNReward-v0", entry_point=_NaNRewardEnv)


def test_a_nan_reward_stops_the_run_naming_the_step(tmp_path, capsys) -> None:
    _NaNRewardEnv.calls = 0
    out = tmp_path / "nan"
    rc = main(["control", "train", "--env", "rlalign_test/NaNReward-v0", "--steps", "1024",
               "--out", str(out), "--no-progress", "n_envs=2", "n_steps=64", "save_every=128",
               "eval_every=100000"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and "reward nan" in err and "environment step 3" in err, err
    assert "last good checkpoint" in err and "step_256" in err and "Traceback" not in err
    w = weights(out / "checkpoints" / "step_256" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in w.values())


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(
    tmp_path, capsys, monkeypatch
) -> None:
    import errno

    from rlalign.control import checkpointing

    real = checkpointing.save_model

    def full_disk(model, filename, *args, **kwargs):
        if f".step_{3 * UPDATE}." in str(filename):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(model, filename, *args, **kwargs)

    monkeypatch.setattr(checkpointing, "save_model", full_disk)
    out = tmp_path / "full"
    rc = main(train_args(out))
    err = capsys.readouterr().err
    assert rc == 1 and "No space left on device" in err and "--resume" in err, err
    root = out / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == [f"step_{UPDATE}", f"step_{2 * UPDATE}"]
    monkeypatch.setattr(checkpointing, "save_model", real)
    assert main([*train_args(out), "--resume"]) == 0  # continues from the previous one
    assert json.loads((out / "result.json").read_text())["resumed_from"].endswith(
        f"step_{2 * UPDATE}"
    )


def test_resume_falls_back_past_a_damaged_newest_checkpoint(straight, tmp_path, capsys) -> None:
    """A truncated newest checkpoint: --resume says so in one line, keeps it aside, resumes from
    the one before and ends as the run that was never damaged."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(straight, run)
    newest = run / "checkpoints" / f"step_{STEPS}"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    capsys.readouterr()
    assert main([*train_args(run), "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"{weights}: truncated or corrupt safetensors file" in err, err
    assert f"resuming from step_{STEPS - UPDATE} instead" in err and "Traceback" not in err
    assert (run / "checkpoints" / f"step_{STEPS}.damaged").is_dir()
    assert_same_run(straight, run)
