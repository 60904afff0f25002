"""Checkpoints of a control run, taken between rollouts, and the stop signals that ask for one.

A checkpoint is written with the shared atomic helpers (:func:`rlalign.io.atomic_directory`:
temporary directory, fsync, rename; the naming, listing, pruning and safe loading of
:mod:`rlalign.checkpoint`), as ``RUN_DIR/checkpoints/step_<env steps>/``:

- ``model.safetensors``: the actor-critic (policy and value net);
- ``best.safetensors``: the best evaluated policy so far, when ``keep_best`` tracks one;
- ``trainer_state.pt``: optimizer, observation/reward normalisation statistics, the states of
  every generator (torch, numpy, python, the sampling generator, each env's own), every env's
  simulator state and current observation, the loop counters and the monitor (evaluations,
  recent episodes, the metrics step). Tensors and plain containers only: it is read back with
  ``torch.load(weights_only=True)``, so a file carrying a pickle payload is refused.

Because it is taken at a rollout boundary and holds everything the next rollout reads, a run
resumed from it continues exactly as if it had not stopped (bit for bit on CPU).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from rlalign import checkpoint as ckpt
from rlalign.errors import DiskFullError, UserError
from rlalign.io import atomic_directory, check_safetensors
from rlalign.runtime import StopSignals  # noqa: F401  (the car's trainer stops the same way)

FORMAT = "rlalign-control-checkpoint"
WEIGHTS = "model.safetensors"
BEST_WEIGHTS = "best.safetensors"


def save(
    run_dir: str | Path,
    step: int,
    net: nn.Module,
    state: dict[str, Any],
    best: nn.Module | None,
    keep: int | None,
) -> Path:
    """Write ``checkpoints/step_<step>/`` atomically and prune to the ``keep`` newest."""
    final = ckpt.checkpoint_root(run_dir) / f"step_{step}"
    try:
        with atomic_directory(final) as tmp:
            save_model(net, str(tmp / WEIGHTS))
            if best is not None:
                save_model(best, str(tmp / BEST_WEIGHTS))
            # Last: a directory without its state file is never taken for a checkpoint.
            torch.save({"format": FORMAT, **state}, tmp / ckpt.STATE_FILE)
    except (OSError, RuntimeError, DiskFullError) as exc:  # torch.save raises RuntimeError
        why = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        # Exit 1 like the language-model stages: the run failed for a reason outside its input.
        raise DiskFullError(
            f"{final}: could not write the checkpoint ({why}); the previous checkpoints are "
            "intact: free space, then continue with --resume"
        ) from None
    ckpt.prune_checkpoints(run_dir, keep)
    return final


def latest(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (half-written ones left by a kill are deleted first)."""
    ckpt.remove_stale_temporaries(run_dir)
    return ckpt.latest_checkpoint(run_dir)


def resumable(run_dir: str | Path) -> Path | None:
    """The newest whole checkpoint to resume from: half-written ones left by a kill are deleted
    first; a damaged newer one is kept as ``step_N.damaged``, said in one line on stderr."""
    ckpt.remove_stale_temporaries(run_dir)
    found = ckpt.resumable_checkpoint(run_dir)
    if found is None:
        return None
    note = ckpt.move_damaged_aside(found)
    if note is not None:
        print(note, file=sys.stderr)
    return found.path


def load(path: Path, net: nn.Module, algo: str, env_id: str) -> dict[str, Any]:
    """Load the weights of ``path`` into ``net`` and return its trainer state."""
    state = ckpt.load_trainer_state(path)
    if state.get("format") != FORMAT:
        raise UserError(f"{path}: not a checkpoint of 'rlalign control train'")
    if state.get("algo") != algo or state.get("env_id") != env_id:
        raise UserError(
            f"{path}: this checkpoint is of {state.get('algo')} on {state.get('env_id')!r}, not "
            f"{algo} on {env_id!r}; resume with the command line that started the run"
        )
    _load_weights(net, path / WEIGHTS)
    return state


def load_best(path: Path, net: nn.Module) -> bool:
    """Load the best evaluated policy of a checkpoint into ``net``; False when it has none."""
    if not (path / BEST_WEIGHTS).is_file():
        return False
    _load_weights(net, path / BEST_WEIGHTS)
    return True


def _load_weights(net: nn.Module, file: Path) -> None:
    check_safetensors(file, ckpt.DAMAGED_CHECKPOINT)
    try:
        load_model(net, str(file))
    except (RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{file}: does not hold this run's network ({first}); was the config changed?"
        ) from None


def has_checkpoints(run_dir: str | Path) -> bool:
    return bool(ckpt.list_checkpoints(run_dir))
