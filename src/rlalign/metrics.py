"""Metrics of a run: one JSON object per logged step in ``metrics.jsonl``, plus the trackers
of ``report_to`` (TensorBoard by default; W&B, MLflow: :mod:`rlalign.trackers`).

Rank-aware: only the process that owns the run directory (rank 0) writes; other ranks get a
logger that does nothing. On resume, pass the step of the checkpoint: lines logged after it
(by the run that died) are dropped, so ``metrics.jsonl`` holds each step exactly once, and
TensorBoard is told to discard them as well (``purge_step``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlalign.io import atomic_write_text
from rlalign.trackers import make_trackers


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLogger:
    """Append metrics to ``run_dir/metrics.jsonl`` and report them to trackers.

    Args:
        run_dir: the run directory.
        enabled: False on non-zero ranks (no file is touched).
        resume_step: when resuming, the checkpoint's step; lines with ``step`` greater than it
            are removed from an existing ``metrics.jsonl``. None starts a fresh file.
        report_to: the trackers (:data:`rlalign.trackers.TRACKERS`) the numbers also go to.
        config: the run's resolved config, for the trackers that record it.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        enabled: bool = True,
        resume_step: int | None = None,
        report_to: Sequence[str] = ("tensorboard",),
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.trackers: list[Any] = []
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("", encoding="utf-8")
        elif self.path.exists():
            kept = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash mid-write
                if int(row.get("step", 0)) <= resume_step:
                    kept.append(line + "\n")
            atomic_write_text(self.path, "".join(kept))
        self.trackers = make_trackers(
            report_to, self.path.parent, config=config, resume_step=resume_step
        )

    def log(self, step: int, **values: Any) -> dict[str, Any]:
        row = {"step": int(step), **{k: _plain(v) for k, v in values.items()}}
        if not self.enabled:
            return row
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
        numbers = {
            key: value
            for key, value in row.items()
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)
        }
        for tracker in self.trackers:
            tracker.log(step, numbers)
        return row

    def close(self) -> None:
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            tracker.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All rows of ``run_dir/metrics.jsonl`` (torn trailing lines are skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows
