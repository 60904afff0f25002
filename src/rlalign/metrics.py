"""Metrics of a run: one JSON object per logged step in ``metrics.jsonl``, plus TensorBoard.

Rank-aware: only the process that owns the run directory (rank 0) writes; other ranks get a
logger that does nothing. On resume, pass the step of the checkpoint: lines logged after it
(by the run that died) are dropped, so ``metrics.jsonl`` holds each step exactly once, and
TensorBoard is told to discard them as well (``purge_step``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rlalign.io import atomic_write_text


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLogger:
    """Append metrics to ``run_dir/metrics.jsonl`` and TensorBoard event files.

    Args:
        run_dir: the run directory.
        enabled: False on non-zero ranks (no file is touched).
        resume_step: when resuming, the checkpoint's step; lines with ``step`` greater than it
            are removed from an existing ``metrics.jsonl``. None starts a fresh file.
        tensorboard: also write TensorBoard events under ``run_dir/tensorboard``.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        enabled: bool = True,
        resume_step: int | None = None,
        tensorboard: bool = True,
    ) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
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
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # on resume, TensorBoard drops the killed run's events after the checkpoint too
            purge = resume_step + 1 if resume_step is not None else None
            self._tb = SummaryWriter(
                log_dir=str(self.path.parent / "tensorboard"), purge_step=purge
            )

    def log(self, step: int, **values: Any) -> dict[str, Any]:
        row = {"step": int(step), **{k: _plain(v) for k, v in values.items()}}
        if not self.enabled:
            return row
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)
        return row

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None

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
