"""metrics.jsonl and TensorBoard after a resume: each step once, the resumed run's values."""

from __future__ import annotations

import time

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlalign.metrics import MetricsLogger, read_metrics


def _losses_in_tensorboard(run_dir):
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("loss")]


def test_resume_drops_the_dead_runs_later_steps_in_both(tmp_path):
    with MetricsLogger(tmp_path) as log:  # the run that was killed after step 5
        for step in range(1, 6):
            log.log(step, loss=float(step))
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "loss": 6.0')  # a line torn by the kill
    with MetricsLogger(tmp_path, resume_step=3) as log:  # resumed from its step-3 checkpoint
        for step in range(4, 7):
            log.log(step, loss=10.0 * step)

    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)
    ]  # fmt: skip
    scalars = _losses_in_tensorboard(tmp_path)
    assert scalars == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)]


def test_a_resume_within_the_killed_runs_second_still_drops_its_later_steps(tmp_path):
    """The killed run's event file is made in the current second, under a name that sorts after
    any the resumed run could get within that second (host ``~``): the resumed file must still
    be read after it, or TensorBoard applies the purge before the steps it should drop."""
    with MetricsLogger(tmp_path) as log:
        for step in range(1, 6):
            log.log(step, loss=float(step))
    (old,) = (tmp_path / "tensorboard").iterdir()
    old.rename(old.with_name(f"events.out.tfevents.{int(time.time()):010d}.~.99999.99"))
    with MetricsLogger(tmp_path, resume_step=3) as log:
        for step in range(4, 7):
            log.log(step, loss=10.0 * step)

    scalars = _losses_in_tensorboard(tmp_path)
    assert scalars == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)]
