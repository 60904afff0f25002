"""Experiment trackers a run reports its metrics to, beside ``metrics.jsonl``: ``report_to``.

- ``tensorboard`` (the default): event files in ``run_dir/tensorboard`` (torch's writer).
- ``wandb``: Weights & Biases, through its own library (``pip install 'rlalign[trackers]'``).
  The project is ``$WANDB_PROJECT`` (default ``rlalign``), the run's name the run directory's;
  ``WANDB_MODE=offline`` keeps it on disk (``run_dir/wandb``), to ``wandb sync`` later.
- ``mlflow``: MLflow, through its client. The store is ``$MLFLOW_TRACKING_URI`` when set (a
  server, a database), else a local file store in ``run_dir/mlruns``; the experiment is
  ``$MLFLOW_EXPERIMENT_NAME`` (default ``rlalign``).

Each tracker gets every logged row (the numbers of it, at its step), the resolved config once
(wandb's config, MLflow's parameters, flattened as ``lora.r``), and at the end of the run the
model card (``final/README.md``: the settings and the held-out metrics). A resumed run
continues the same tracker run (its id is kept in the run directory). TensorBoard drops what a
killed run logged after its checkpoint; W&B keeps the first value it got for a step, MLflow
keeps both.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlalign.errors import UserError

TRACKERS = ("tensorboard", "wandb", "mlflow")
EXTRA = "pip install 'rlalign[trackers]' (or the tracker's own package)"


class Tracker:
    """One place metrics go besides ``metrics.jsonl``."""

    def log(self, step: int, values: Mapping[str, float]) -> None:
        raise NotImplementedError

    def log_model_card(self, text: str) -> None:
        """The run's model card (Markdown), once, when the run has written ``final/``."""

    def close(self) -> None:
        """Flush and end (the run may be resumed later)."""


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"lora": {"r": 8}}`` -> ``{"lora.r": 8}`` (lists and values as they are)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _saved_id(run_dir: Path, name: str) -> str | None:
    path = run_dir / name
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


_EVENT_FILE_SECOND = re.compile(r"^events\.out\.tfevents\.(\d+)\.")


def wait_for_a_later_event_file_name(log_dir: Path) -> None:
    """Sleep, at most a second, until a new event file's name sorts after every one in ``log_dir``.

    Why: TensorBoard reads a directory's event files in name order, and a resumed run's purge
    (drop the killed run's steps after the checkpoint) only reaches events read before it. The
    name starts with the whole second it was made in, then the host, the process id and a
    per-process counter, which sort as text: two files made within one second can land in
    either order (pid 999 after pid 1000, counter 9 after 10).
    """
    seconds = [
        int(match.group(1))
        for path in (log_dir.iterdir() if log_dir.is_dir() else ())
        if (match := _EVENT_FILE_SECOND.match(path.name))
    ]
    if seconds:
        wait = max(seconds) + 1 - time.time()
        if 0 < wait <= 1:  # a clock set back further is not worth stalling the run for
            time.sleep(wait)


class TensorBoardTracker(Tracker):
    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # on resume, TensorBoard drops the killed run's events after the checkpoint too
        purge = None
        if resume_step is not None:
            purge = resume_step + 1
            wait_for_a_later_event_file_name(run_dir / "tensorboard")
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def log_model_card(self, text: str) -> None:
        self.writer.add_text("model_card", text)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class WandbTracker(Tracker):
    ID_FILE = ".wandb_run_id"

    def __init__(self, run_dir: Path, config: Mapping[str, Any], resume: bool) -> None:
        try:
            import wandb
        except ImportError:
            raise UserError(f"report_to=wandb needs the wandb package: {EXTRA}") from None
        saved = _saved_id(run_dir, self.ID_FILE) if resume else None
        run_id = saved or secrets.token_hex(4)  # W&B's own ids are 8 characters too
        (run_dir / self.ID_FILE).write_text(run_id + "\n", encoding="utf-8")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "rlalign"),
            name=run_dir.name,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            config=dict(config),
            settings=wandb.Settings(console="off", silent=True),
        )

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log(dict(values), step=step)

    def log_model_card(self, text: str) -> None:
        self.run.summary["model_card"] = text

    def close(self) -> None:
        self.run.finish()


class MlflowTracker(Tracker):
    ID_FILE = ".mlflow_run_id"

    def __init__(self, run_dir: Path, config: Mapping[str, Any], resume: bool) -> None:
        try:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UserError(f"report_to=mlflow needs the mlflow package: {EXTRA}") from None
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # MLflow 3 keeps its file store for such local use behind this switch
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (run_dir / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "rlalign")
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found else self.client.create_experiment(name)
        saved = _saved_id(run_dir, self.ID_FILE) if resume else None
        if saved:
            self.run_id = saved
            self.client.update_run(saved, status="RUNNING")
        else:
            self.run_id = self.client.create_run(experiment, run_name=run_dir.name).info.run_id
            params = [Param(k, str(v)[:500]) for k, v in flatten(config).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
                self.client.log_batch(self.run_id, params=params[i : i + 100])
        (run_dir / self.ID_FILE).write_text(self.run_id + "\n", encoding="utf-8")

    def log(self, step: int, values: Mapping[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_model_card(self, text: str) -> None:
        self.client.log_text(self.run_id, text, "README.md")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def report_model_card(
    report_to: Sequence[str], run_dir: str | Path, text: str, *, step: int
) -> None:
    """Give the W&B and MLflow runs of a finished run its model card (each reopens the run it
    logged to; TensorBoard's event files are left as the run wrote them)."""
    others = [name for name in report_to if name not in ("tensorboard", "none")]
    for tracker in make_trackers(others, run_dir, resume_step=step):
        try:
            tracker.log_model_card(text)
        finally:
            tracker.close()


def make_trackers(
    report_to: Sequence[str],
    run_dir: str | Path,
    *,
    config: Mapping[str, Any] | None = None,
    resume_step: int | None = None,
) -> list[Tracker]:
    """The trackers named in ``report_to`` (``[]`` or ``["none"]``: none)."""
    run_dir = Path(run_dir)
    made: list[Tracker] = []
    try:
        for name in report_to:
            if name == "tensorboard":
                made.append(TensorBoardTracker(run_dir, resume_step))
            elif name == "wandb":
                made.append(WandbTracker(run_dir, config or {}, resume_step is not None))
            elif name == "mlflow":
                made.append(MlflowTracker(run_dir, config or {}, resume_step is not None))
            elif name != "none":
                raise UserError(f"report_to: unknown tracker {name!r}; choose from "
                                f"{', '.join(TRACKERS)} or none")  # fmt: skip
    except BaseException:
        for tracker in made:
            tracker.close()
        raise
    return made
