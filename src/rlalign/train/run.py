"""Setting up a run directory: what every stage does before its first step.

- refuse a directory that holds files no rlalign run wrote (they are never written over);
- take the directory's lock (:mod:`rlalign.rundir`) for the stage's life, so that a second
  run on it is refused instead of mixing its files with this one's;
- refuse to start a fresh run on top of an old run's checkpoints or ``final/`` (unless
  ``overwrite_output_dir``), and say how to continue it instead;
- on ``--resume``, keep the run's settings: a changed key is refused, except those of
  ``resume_may_change`` (when the run ends, how often it logs and saves, where it runs), which
  are applied, announced and recorded; ``max_steps`` never goes below the checkpoint's step;
- write the resolved config to ``output_dir/config.yaml`` (rank 0, atomically);
- seed python, numpy and torch from ``seed``.

Under torchrun rank 0 does all of this (only it writes files and holds the lock); every rank
then raises rank 0's error, if any, so that none waits for the others.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import yaml

from rlalign.checkpoint import latest_checkpoint
from rlalign.config import load_config
from rlalign.dist import RankInfo, all_gather_objects, barrier
from rlalign.errors import UserError
from rlalign.io import atomic_write_text
from rlalign.rundir import (
    lock_run_directory,
    lock_scope,
    refuse_foreign_directory,
    remove_run_outputs,
)
from rlalign.train.config import TrainingConfig

# What a fresh start with overwrite_output_dir=true removes: the old run's own outputs.
OLD_RUN_OUTPUTS = (
    "checkpoints",
    "final",
    "tensorboard",
    "rollouts",
    "plots",
    "report.html",
    "metrics.jsonl",
)

F = TypeVar("F", bound=Callable[..., Any])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def holds_run_directory(stage: F) -> F:
    """Decorates a stage: the run directory's lock, taken by :func:`prepare_run`, is released
    when the stage returns or fails (or later, when a caller holds a wider
    :func:`~rlalign.rundir.lock_scope`)."""

    @functools.wraps(stage)
    def run(*args: Any, **kwargs: Any) -> Any:
        with lock_scope():
            return stage(*args, **kwargs)

    return run  # type: ignore[return-value]


def prepare_run(cfg: TrainingConfig, *, resume: bool, rank: RankInfo) -> Path | None:
    """Check and initialise ``cfg.output_dir``; returns the checkpoint to resume from, if any."""
    outcome: tuple[str | None, str | None] = (None, None)  # (error, checkpoint)
    if rank.is_main:
        try:
            found = _set_up(cfg, resume)
            outcome = (None, str(found) if found is not None else None)
        except UserError as exc:
            if not rank.distributed:
                raise
            outcome = (str(exc), None)
    error, found_text = all_gather_objects(outcome)[0]  # rank 0's, on every rank
    if error is not None:
        raise UserError(error)
    seed_everything(cfg.seed)
    barrier()  # under torchrun: no rank starts before rank 0 has set the directory up
    return Path(found_text) if found_text is not None else None


def _set_up(cfg: TrainingConfig, resume: bool) -> Path | None:
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"output_dir={out} exists and is not a directory")
    refuse_foreign_directory(out)
    lock_run_directory(out)
    found = check_start(cfg, resume)
    if resume and found is not None:
        notes = _resume_changes(cfg, out, found)
        _write_config(cfg, out / "config.yaml", notes, history=True)
        return found
    # A fresh start: nothing of an earlier run (finished, or killed before its first
    # checkpoint) stays to be mixed with this one's.
    remove_run_outputs(out, OLD_RUN_OUTPUTS)
    _write_config(cfg, out / "config.yaml", [], history=False)
    return None


def check_start(cfg: TrainingConfig, resume: bool) -> Path | None:
    """Raise when a run may not start (or resume) in ``cfg.output_dir`` as asked; else the
    checkpoint a resume continues from (None for a fresh start). Writes nothing."""
    out = Path(cfg.output_dir)
    found = latest_checkpoint(out)
    if resume and found is not None:
        return found
    if found is not None or (out / "final").exists():
        what = f"checkpoints (newest: {found.name})" if found is not None else "final/"
        if resume:  # final/ without a checkpoint: nothing to continue, a model to lose
            raise UserError(
                f"--resume: {out} holds final/ but no checkpoint to continue from; "
                "overwrite_output_dir=true (without --resume) starts over, or choose another "
                "output_dir"
            )
        if not cfg.overwrite_output_dir:
            hint = "pass --resume to continue that run, or " if found is not None else ""
            raise UserError(
                f"{out} already holds a run's {what}; {hint}overwrite_output_dir=true to "
                "start over, or choose another output_dir"
            )
    return None


def _checkpoint_step(path: Path) -> int:
    return int(path.name.rpartition("_")[2])


def _resume_changes(cfg: TrainingConfig, out: Path, found: Path) -> list[str]:
    """The settings this resume changes, as comment lines for config.yaml (also printed);
    raises when it would change one it may not (see ``resume_may_change``)."""
    step = _checkpoint_step(found)
    if cfg.max_steps < step:
        raise UserError(
            f"--resume with max_steps={cfg.max_steps}, but the run is at step {step} ({found}) "
            f"and cannot go back; give max_steps>={step}, or start a new run in another "
            "output_dir"
        )
    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        print(
            f"resuming {out} at step {step}: it has no config.yaml to compare with; the settings "
            "given now are recorded as the run's"
        )
        return [f"# resumed at step {step} with the settings below (no earlier config.yaml)"]
    saved = load_config(type(cfg), saved_path).model_dump(mode="json")
    now = cfg.model_dump(mode="json")
    # output_dir is where the run is now (it may have been moved since)
    changed = [k for k in now if k != "output_dir" and saved.get(k) != now[k]]
    refused = [k for k in changed if k not in cfg.resume_may_change]
    if refused:
        shown = ", ".join(f"{k}={_text(now[k])} (the run's: {_text(saved[k])})" for k in refused)
        allowed = ", ".join(sorted(cfg.resume_may_change))
        raise UserError(
            f"--resume continues {out} with the settings in its config.yaml, but these differ: "
            f"{shown}; drop them to continue the run, or start a new run in another output_dir "
            f"(a resume may change only {allowed})"
        )
    if not changed:
        return []
    change = ", ".join(f"{k} {_text(saved[k])} -> {_text(now[k])}" for k in changed)
    print(f"resuming {out} at step {step} with {change} (recorded in config.yaml)")
    return [f"# resumed at step {step} with {change}"]


def _text(value: Any) -> str:
    """A setting as YAML on one line (``0.001``, ``null``, ``[a.py:f]``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text.removesuffix("...").strip()


def _write_config(cfg: TrainingConfig, path: Path, notes: list[str], *, history: bool) -> None:
    """The resolved config; on a resume (``history``), below the comment lines that earlier
    resumes left, and ``notes``."""
    header: list[str] = []
    if history and path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            header.append(line)
    header += notes
    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    atomic_write_text(path, "".join(f"{line}\n" for line in header) + text)
