"""Setting up a run directory: what every stage does before its first step.

- refuse to start a fresh run on top of an old run's checkpoints (unless
  ``overwrite_output_dir``), and say how to continue it instead;
- write the resolved config to ``output_dir/config.yaml`` (rank 0, atomically);
- seed python, numpy and torch from ``seed``.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml

from rlalign.checkpoint import checkpoint_root, latest_checkpoint
from rlalign.dist import RankInfo, barrier
from rlalign.errors import UserError
from rlalign.io import atomic_write_text
from rlalign.train.config import TrainingConfig


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_run(cfg: TrainingConfig, *, resume: bool, rank: RankInfo) -> Path | None:
    """Check and initialise ``cfg.output_dir``; returns the checkpoint to resume from, if any."""
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"output_dir={out} exists and is not a directory")
    found = latest_checkpoint(out)
    if found is not None and not resume:
        if not cfg.overwrite_output_dir:
            raise UserError(
                f"{out} already holds checkpoints (newest: {found.name}); pass --resume to "
                "continue that run, or overwrite_output_dir=true to start over"
            )
        if rank.is_main:
            shutil.rmtree(checkpoint_root(out), ignore_errors=True)
            shutil.rmtree(out / "final", ignore_errors=True)
        found = None
    if rank.is_main:
        out.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
        atomic_write_text(out / "config.yaml", text)
    seed_everything(cfg.seed)
    barrier()  # under torchrun: no rank starts before rank 0 has set the directory up
    return found if resume else None
