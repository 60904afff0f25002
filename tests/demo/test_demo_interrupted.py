"""A demo whose training stage is stopped by SIGTERM/SIGINT stops there: one line, exit 128 +
the signal, and no later stage runs on a model that was never finished."""

from __future__ import annotations

import signal

import pytest

import rlalign.demo
import rlalign.demo_drive
from rlalign.cli import main
from rlalign.runtime import StageInterrupted, StageSeconds
from rlalign.train.stage import StageResult


def stopped(signum: int, calls: list):
    def stage(cfg):
        calls.append(cfg.output_dir)
        return StageResult(final_dir=cfg.output_dir, step=3, interrupted_by=signum, eval_metrics={})

    return stage


def never(cfg):
    raise AssertionError(f"a stage ran after the flow was stopped: {cfg.output_dir}")


def test_the_drive_demo_stops_when_its_sft_is_stopped(tmp_path, monkeypatch, capsys):
    calls: list = []
    monkeypatch.setattr(rlalign.demo_drive, "run_sft", stopped(signal.SIGTERM, calls))
    monkeypatch.setattr(rlalign.demo_drive, "run_rl", never)
    out = tmp_path / "drive"
    assert main(["demo", "drive", "--quick", "--out", str(out), "num_threads=1"]) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "rlalign demo: stopped by signal 15 during sft at step 3 (checkpoint saved); run the "
        "demo again to start over"
    ]
    assert calls == [str(out / "sft")]  # no DAgger round went on from the unfinished model
    assert not (out / "report.json").exists()


def test_the_demo_stops_when_its_pretraining_is_stopped(tmp_path, monkeypatch, capsys):
    calls: list = []
    monkeypatch.setattr(rlalign.demo, "run_pretrain", stopped(signal.SIGINT, calls))
    monkeypatch.setattr(rlalign.demo, "run_sft", never)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "num_threads=1"]) == 130
    assert "stopped by signal 2 during pretrain at step 3" in capsys.readouterr().err
    assert len(calls) == 1 and not (out / "report.json").exists()


def test_stage_seconds_pass_results_through_and_stop_on_a_signal():
    seconds = StageSeconds()
    assert seconds.run("eval", lambda: {"return": 1.0}) == {"return": 1.0}
    done = StageResult(final_dir="f", step=5, interrupted_by=None, eval_metrics={})
    assert seconds.run("sft", lambda: done) is done
    with pytest.raises(StageInterrupted, match="signal 15 during rl at step 2") as stop:
        seconds.run("rl", lambda: StageResult("f", 2, signal.SIGTERM, {}))
    assert stop.value.signum == signal.SIGTERM and set(seconds) == {"eval", "sft", "rl"}
