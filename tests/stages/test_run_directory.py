"""What a run may write over: one run per directory at a time (a lock the OS drops with its
process), never a directory of the user's own files, never an earlier run's results unless told
to, and ``--resume`` keeps the run's settings (changes refused, or applied and recorded)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from rlalign.cli import main
from rlalign.metrics import read_metrics
from rlalign.rundir import LOCK_FILE

from .test_bad_inputs import base_args, no_hf_progress_bars  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("no_hf_progress_bars")  # stderr holds our lines only

KILLED_CHILD = Path(__file__).parents[1] / "_killed_child.py"
PRETRAIN = ["model=tiny", "vocab_size=300", "block_size=32", "per_device_train_batch_size=4",
            "save_steps=1", "logging_steps=1", "disable_tqdm=true", "device=cpu"]  # fmt: skip
CAR = ["control", "train", "--env", "CartPole-v1", "--steps", "256", "--no-progress",
       "--no-report", "--no-baselines", "n_envs=2", "eval_every=256", "eval_episodes=1",
       "final_eval_episodes=1"]  # fmt: skip


@pytest.fixture
def fx(world_dir, base_model_dir, word_model_dir, word_task) -> dict:
    return {"world_dir": world_dir, "base_model_dir": base_model_dir,
            "word_model_dir": word_model_dir, "word_task": word_task}  # fmt: skip


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        assert time.monotonic() < deadline, f"no {path.name} within {seconds} s"
        time.sleep(0.05)


# --- one run per directory ---------------------------------------------------------------------


def small_corpus(path: Path) -> Path:
    lines = [f"The president of Land{i % 7} is Person{i % 5}." for i in range(60)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_second_run_is_refused_while_the_first_lives_and_kill_9_leaves_no_stale_lock(
    tmp_path, capsys
):
    run, marker = tmp_path / "run", tmp_path / "in_step_2"
    corpus = small_corpus(tmp_path / "corpus.txt")
    args = ["pretrain", *PRETRAIN, f"data={corpus}", "max_steps=3"]
    first = subprocess.Popen(
        [sys.executable, str(KILLED_CHILD), *args, "seed=1", f"output_dir={run}"],
        env={**os.environ, "KILL_AT": "step:2", "MARKER": str(marker)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(marker, first)  # the first run is inside step 2, its step-1 checkpoint saved
        before = files(run)
        capsys.readouterr()
        second = [*args, "seed=2", "learning_rate=0.002", f"output_dir={run}"]
        assert main(second) == 2
        err = one_line(capsys)
        assert (
            f"{run}: another rlalign run is writing to this directory (pid {first.pid} on " in err
        )
        assert main([second[0], "--resume", *second[1:]]) == 2
        assert f"(pid {first.pid} on " in one_line(capsys)
        assert files(run) == before  # nothing of the second run's was written
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the killed run's lock went with its process: the run continues where it was
    assert main(["pretrain", "--resume", *args[1:], "seed=1", f"output_dir={run}"]) == 0
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 1


HOLDER = textwrap.dedent(
    """
    import sys, time
    from rlalign.rundir import lock_run_directory
    for directory in sys.argv[1:]:
        lock_run_directory(directory)
    print("locked", flush=True)
    time.sleep(600)
    """
)


def test_every_stage_and_the_car_wait_for_no_lock_they_do_not_hold(tmp_path, fx, capsys):
    stages = ["sft", "reward", "rl", "control"]
    dirs = {stage: tmp_path / stage for stage in stages}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, *map(str, dirs.values())],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        for stage, out in dirs.items():
            if stage == "control":
                argv = [*CAR, "--out", str(out)]
            else:
                argv = [stage, *base_args(stage, fx), "max_steps=1", f"output_dir={out}"]
            capsys.readouterr()
            assert main(argv) == 2, stage
            err = one_line(capsys)
            assert f"{out}: another rlalign run is writing to this directory" in err, err
            assert f"(pid {holder.pid} on " in err, err
            assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE], stage
    finally:
        holder.kill()
        holder.wait()


# --- never over the user's files, nor over an earlier run's results unless told to --------------


def test_a_directory_of_the_users_own_files_is_never_written_over(tmp_path, world_dir, capsys):
    mine = tmp_path / "mydir"
    mine.mkdir()
    (mine / "config.yaml").write_text(
        f"# my settings, with my comments\nmodel: tiny\ndata: {world_dir / 'corpus.jsonl'}\n"
        "max_steps: 1\n"
    )
    (mine / "notes.txt").write_text("keep me\n")
    before = files(mine)
    for extra in ([], ["overwrite_output_dir=true"]):
        capsys.readouterr()
        assert main(["pretrain", "--config", str(mine / "config.yaml"), f"output_dir={mine}",
                     *PRETRAIN, *extra]) == 2  # fmt: skip
        err = one_line(capsys)
        assert f"output_dir={mine} holds files that are not an rlalign run (config.yaml, " in err
        assert "choose a new or empty output_dir" in err
    assert main([*CAR, "--out", str(mine)]) == 2
    assert f"--out={mine} holds files that are not an rlalign run" in one_line(capsys)
    assert files(mine) == before


def test_world_export_writes_over_nothing_unless_forced(tmp_path, capsys):
    world = ["world", "export", "num_countries=4", "num_unknown=2"]
    target = tmp_path / "data"
    target.mkdir()
    (target / "corpus.jsonl").write_text('{"text": "my own corpus"}\n')
    capsys.readouterr()
    assert main([*world[:2], str(target), *world[2:]]) == 2
    err = one_line(capsys)
    assert f"{target} is not empty (corpus.jsonl)" in err and "--force" in err
    assert (target / "corpus.jsonl").read_text() == '{"text": "my own corpus"}\n'
    assert main([*world[:2], str(target), "--force", *world[2:]]) == 0
    assert (target / "corpus.jsonl").read_text() != '{"text": "my own corpus"}\n'
    assert main([*world[:2], str(tmp_path / "new"), *world[2:]]) == 0
    assert (tmp_path / "new" / "eval").is_dir()


def test_the_car_replaces_a_finished_run_only_when_forced(tmp_path, capsys):
    out = tmp_path / "car"
    reinforce = [*CAR, "--algo", "reinforce", "--out", str(out)]
    assert main(reinforce) == 0
    before = files(out)
    capsys.readouterr()
    assert main([*reinforce, "seed=3"]) == 2
    err = one_line(capsys)
    assert f"{out} already holds a training run (policy.safetensors, result.json)" in err
    assert "--force to start over" in err
    assert files(out) == before
    assert main([*reinforce, "seed=3", "--force"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 3


def test_a_resumed_car_run_cannot_go_back(tmp_path, capsys):
    out = tmp_path / "ppo"
    assert main([*CAR, "--out", str(out)]) == 0
    before = files(out)
    capsys.readouterr()
    assert main([*CAR, "--out", str(out), "--resume", "--steps", "128"]) == 2
    err = one_line(capsys)
    assert f"--resume with total_steps=128, but the run in {out} is at 256 environment" in err
    assert files(out) == before


def test_a_fresh_start_over_a_run_needs_overwrite_and_then_keeps_nothing_of_it(tmp_path, capsys):
    run = tmp_path / "run"
    corpus = small_corpus(tmp_path / "corpus.txt")
    args = ["pretrain", *PRETRAIN, f"data={corpus}", f"output_dir={run}"]
    assert main([*args, "max_steps=2"]) == 0
    capsys.readouterr()
    assert main([*args, "max_steps=1"]) == 2
    err = one_line(capsys)
    assert "already holds a run's checkpoints (newest: step_2); pass --resume" in err
    assert main([*args, "max_steps=1", "overwrite_output_dir=true"]) == 0
    assert [r["step"] for r in read_metrics(run)] == [1]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_1"]
    assert len(list((run / "tensorboard").iterdir())) == 1  # the old run's events are gone


# --- resuming keeps the run's settings -----------------------------------------------------------


def test_resume_refuses_a_changed_setting_and_records_the_ones_it_may_change(tmp_path, capsys):
    run = tmp_path / "run"
    corpus = small_corpus(tmp_path / "corpus.txt")
    assert main(["pretrain", *PRETRAIN, f"data={corpus}", "max_steps=2", f"output_dir={run}"]) == 0
    saved = (run / "config.yaml").read_bytes()

    capsys.readouterr()
    assert main(["pretrain", "--resume", f"output_dir={run}", "learning_rate=0.5"]) == 2
    err = one_line(capsys)
    assert (
        "--resume continues" in err and "these differ: learning_rate=0.5 (the run's: 0.001)" in err
    )
    assert "a resume may change only " in err and "max_steps" in err
    assert main(["pretrain", "--resume", f"output_dir={run}", "max_steps=1"]) == 2
    err = one_line(capsys)
    assert "max_steps=1, but the run is at step 2" in err and "give max_steps>=2" in err
    assert (run / "config.yaml").read_bytes() == saved  # refused: the record is untouched

    # the run's own settings are the base: a resume names only what it changes
    assert main(["pretrain", "--resume", f"output_dir={run}", "max_steps=3"]) == 0
    assert "resuming" in capsys.readouterr().out
    text = (run / "config.yaml").read_text()
    assert text.startswith("# resumed at step 2 with max_steps 2 -> 3\n"), text
    config = yaml.safe_load(text)
    assert config["max_steps"] == 3 and config["data"] == str(corpus)
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
