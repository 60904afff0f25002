"""Faults met by real runs, through the CLI: a full disk while a checkpoint is written, a
checkpoint file carrying a pickle payload, a run that does not stop when asked, and weights or a
held-out loss that are no longer finite."""

from __future__ import annotations

import errno
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlalign import checkpoint as ckpt
from rlalign.cli import main
from rlalign.metrics import read_metrics

from .helpers import FillsUp, repetitive_corpus

FAST = ["model=tiny", "vocab_size=300", "block_size=32", "per_device_train_batch_size=4",
        "warmup_steps=2", "logging_steps=1", "eval_steps=100", "save_steps=2",
        "disable_tqdm=true", "max_steps=6"]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return repetitive_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", lines=120)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_full_disk_during_a_checkpoint_keeps_the_previous_one_then_resumes_exactly(
    tmp_path, corpus, monkeypatch, capsys
):
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert main(["pretrain", *FAST, f"data={corpus}", f"output_dir={reference}"]) == 0

    real_save = torch.save
    before: dict[str, bytes] = {}

    def disk_fills_up(obj, f, *args, **kwargs):
        """The write of step_4's trainer state runs out of space halfway through."""
        if ".step_4." in f.name:  # a file rlalign opened (torch's own writer hides ENOSPC)
            before.update(tree(run / "checkpoints" / "step_2"))
            return real_save(obj, FillsUp(f, room=1000), *args, **kwargs)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", disk_fills_up)
    capsys.readouterr()
    assert main(["pretrain", *FAST, f"data={corpus}", f"output_dir={run}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "no space left on device while writing checkpoint" in err
    assert f"newest complete checkpoint is {run / 'checkpoints' / 'step_2'} (intact)" in err
    assert "--resume" in err
    # the previous checkpoint is byte for byte what it was; nothing half-written is left
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2]
    assert before and tree(run / "checkpoints" / "step_2") == before
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_2"]
    assert not (run / "final").exists()

    monkeypatch.setattr(ckpt.torch, "save", real_save)  # space freed
    assert main(["pretrain", "--resume", *FAST, f"data={corpus}", f"output_dir={run}"]) == 0
    want, got = [load_file(str(r / "final" / "model.safetensors")) for r in (reference, run)]
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4, 5, 6]


def test_a_full_disk_anywhere_else_is_one_line_too(tmp_path, corpus, monkeypatch, capsys):
    """metrics.jsonl is appended to, not written atomically: the CLI still reports one line."""
    from rlalign import metrics

    def no_space(self, step, **values):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    monkeypatch.setattr(metrics.MetricsLogger, "log", no_space)
    assert main(["pretrain", *FAST, f"data={corpus}", f"output_dir={tmp_path / 'run'}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{tmp_path / 'run' / 'metrics.jsonl'}: No space left on device; free some" in err


class Payload:
    """Unpickling this would run ``os.system('touch MARKER')``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_with_a_pickle_payload_is_refused_unexecuted(tmp_path, corpus, capsys):
    run, marker = tmp_path / "run", tmp_path / "payload-ran"
    args = [*FAST, f"data={corpus}", f"output_dir={run}"]
    assert main(["pretrain", *args, "max_steps=2"]) == 0  # the last max_steps counts
    state = run / "checkpoints" / "step_2" / ckpt.STATE_FILE
    real = torch.load(state, weights_only=True)
    torch.save({**real, "optimizer": Payload(marker)}, state)  # a tampered checkpoint
    capsys.readouterr()

    assert main(["pretrain", "--resume", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{state}: not a valid rlalign checkpoint" in err
    assert "Python object posix.system" in err and "nothing in it was run" in err
    assert "weights_only=False" not in err  # torch's own advice would run the payload
    assert not marker.exists()
    assert not (run / "checkpoints" / "step_4").exists()  # nothing trained on top of it


def test_a_pickled_model_file_is_never_loaded(tmp_path, corpus, capsys):
    """A model directory holding only a pickled ``pytorch_model.bin`` is refused as well."""
    run, marker = tmp_path / "run", tmp_path / "payload-ran"
    assert main(["pretrain", *FAST, "max_steps=1", f"data={corpus}", f"output_dir={run}"]) == 0
    model_dir = run / "final"
    (model_dir / "model.safetensors").unlink()
    torch.save({"model.embed_tokens.weight": Payload(marker)}, model_dir / "pytorch_model.bin")
    sft = tmp_path / "sft.jsonl"
    sft.write_text('{"prompt": "hi", "completion": "hello"}\n')
    capsys.readouterr()
    code = main(["sft", f"model={model_dir}", f"data={sft}", f"output_dir={tmp_path / 'sft'}"])
    err = capsys.readouterr().err
    assert code == 2 and "rlalign never unpickles .bin files" in err, err
    assert not marker.exists()


# --- stop signals ------------------------------------------------------------------------------

KILLED_CHILD = Path(__file__).parents[1] / "_killed_child.py"


def test_a_second_signal_stops_a_run_stuck_in_a_step_at_once(tmp_path, corpus):
    """The first signal asks for a stop at the next step boundary; a step that never ends
    (here: one sleeping inside its update) would hold the run forever, so a second signal
    (SIGTERM then Ctrl-C, as a user would try) ends the process at once with 128 + that
    signal, the earlier checkpoints intact."""
    run, marker = tmp_path / "run", tmp_path / "in_step_3"
    args = [*FAST, "save_steps=1", f"data={corpus}", f"output_dir={run}"]
    env = {**os.environ, "KILL_AT": "step:3", "MARKER": str(marker)}
    child = subprocess.Popen(
        [sys.executable, str(KILLED_CHILD), "pretrain", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline, "the run never reached step 3"
            time.sleep(0.05)
        child.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert child.poll() is None  # the first signal waits for the end of the step
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 128 + signal.SIGINT, err
    assert "SIGTERM received: stopping after this step" in err, err
    assert "SIGINT received again: stopping now" in err and "Traceback" not in err, err
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [1, 2]
    assert not (run / "final").exists()


# --- NaN and infinite weights ------------------------------------------------------------------


def _lr_becomes_infinite_at_step(step: int):
    """A schedule whose learning rate is infinite from optimizer step ``step`` on (a config
    cannot say so: learning_rate=inf is refused; a library caller's schedule can)."""
    from torch.optim.lr_scheduler import LambdaLR

    def schedule(optimizer, **_):
        return LambdaLR(optimizer, lambda done: math.inf if done + 1 >= step else 1.0)

    return schedule


def test_weights_that_are_not_finite_are_never_saved(tmp_path, corpus, monkeypatch, capsys):
    from rlalign.train import loop

    run = tmp_path / "run"
    monkeypatch.setattr(loop, "warmup_cosine_schedule", _lr_becomes_infinite_at_step(2))
    args = [*FAST, "save_steps=1", "max_steps=3", f"data={corpus}", f"output_dir={run}"]
    capsys.readouterr()
    assert main(["pretrain", *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    good = run / "checkpoints" / "step_1"
    assert "the weights after step 2 are not finite" in err, err
    assert f"last good checkpoint: {good}" in err, err
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [1]
    assert not (run / "final").exists()
    weights = load_file(str(good / "model.safetensors"))
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())


def test_a_held_out_loss_that_is_not_finite_fails_the_run(tmp_path, corpus, monkeypatch, capsys):
    from rlalign.train import pretrain

    def broken_eval(model, batches, device):
        return {"eval_loss": math.nan, "eval_perplexity": math.nan}

    monkeypatch.setattr(pretrain, "evaluate_causal_lm", broken_eval)
    run = tmp_path / "run"
    args = [*FAST, "save_steps=1", "eval_steps=2", f"data={corpus}", f"output_dir={run}"]
    capsys.readouterr()
    assert main(["pretrain", *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "held-out eval_loss is nan at step 2" in err, err
    assert f"last good checkpoint: {run / 'checkpoints' / 'step_1'}" in err, err
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [1]
    assert not (run / "final").exists()


KEEP_ALL = [*FAST, "save_total_limit=null"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, corpus) -> Path:
    """A finished 6-step run with checkpoints at steps 2, 4 and 6."""
    out = tmp_path_factory.mktemp("finished")
    assert main(["pretrain", *KEEP_ALL, f"data={corpus}", f"output_dir={out}"]) == 0
    return out


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damaged", ["model.safetensors", ckpt.STATE_FILE])
def test_resume_falls_back_past_a_damaged_newest_checkpoint(
    finished, damaged, tmp_path, corpus, capsys
):
    """A truncated newest checkpoint (a copy cut short): --resume says so in one line, keeps it
    as step_6.damaged, continues from step_4 and ends as the run that was never damaged."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    shutil.rmtree(run / "final")
    newest = run / "checkpoints" / "step_6"
    truncate(newest / damaged)
    capsys.readouterr()

    assert main(["pretrain", "--resume", *KEEP_ALL, f"data={corpus}", f"output_dir={run}"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{newest / damaged}: " in err and "resuming from step_4 instead" in err, err
    assert "step_6.damaged" in err
    assert (run / "checkpoints" / "step_6.damaged" / damaged).stat().st_size < (
        finished / "checkpoints" / "step_6" / damaged
    ).stat().st_size
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2, 4, 6]  # step 6 written anew
    want, got = [load_file(str(r / "final" / "model.safetensors")) for r in (finished, run)]
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4, 5, 6]


def test_resume_with_every_checkpoint_damaged_is_one_clear_line(finished, tmp_path, corpus, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    for step in (2, 4, 6):
        truncate(run / "checkpoints" / f"step_{step}" / "model.safetensors")
    before = tree(run)
    capsys.readouterr()

    assert main(["pretrain", "--resume", *KEEP_ALL, f"data={corpus}", f"output_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    weights = run / "checkpoints" / "step_6" / "model.safetensors"
    assert f"{weights}: truncated or corrupt safetensors file" in err, err
    assert "every checkpoint" in err and "overwrite_output_dir=true" in err, err
    after = tree(run)  # nothing moved, nothing written but the config of this attempt
    assert {k: v for k, v in after.items() if k != "config.yaml"} == {
        k: v for k, v in before.items() if k != "config.yaml"
    }
