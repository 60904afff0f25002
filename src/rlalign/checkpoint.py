"""Atomic, pickle-free checkpoints: everything needed to continue a run bit for bit.

Layout of ``output_dir/checkpoints/step_N/`` (built under a temporary name, fsynced, renamed):

- the model, as ``save_pretrained`` writes it (``config.json`` + ``*.safetensors``), so a
  checkpoint also loads with ``AutoModelForCausalLM.from_pretrained``; a plain ``nn.Module``
  gets ``model.safetensors`` only;
- whatever the stage adds (the tokenizer) through ``save_extra``;
- ``trainer_state.pt``: optimizer, scheduler, RNG states (python, numpy, torch, CUDA), the
  batch source's position (and its generators), the step and the metrics window. Only
  tensors, numbers, strings, lists and dicts: it loads with ``torch.load(weights_only=True)``,
  so a file carrying a pickle payload is rejected, never executed.

A directory whose name is not ``step_<int>`` or that lacks ``trainer_state.pt`` is not a
checkpoint: a crash mid-write leaves only a hidden ``.step_N.*.tmp`` directory, which
:func:`remove_stale_temporaries` deletes (with the other half-written files of the run).

A checkpoint damaged after it was written (a truncated copy, a disk that filled up outside
rlalign) is not resumed from: :func:`resumable_checkpoint` finds the newest whole one, and
:func:`move_damaged_aside` renames the damaged newer ones ``step_N.damaged``.
"""

from __future__ import annotations

import pickle
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file, save_model
from torch import nn

from rlalign.errors import CorruptFileError, DiskFullError, UserError
from rlalign.io import atomic_directory, check_safetensors, remove_temporaries

STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as ``(step, path)``, oldest first."""
    root = checkpoint_root(output_dir)
    found = []
    if root.is_dir():
        for path in root.iterdir():
            match = _STEP_DIR.match(path.name)
            if match and (path / STATE_FILE).is_file():
                found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


# What a run writes atomically, by folder of the run directory: the temporary copies of these
# names are the ones a killed process can leave (and the only ones removed).
RUN_FILES = {
    "checkpoints": r"step_\d+",
    ".": r"final|metrics\.jsonl|config\.yaml|report\.html",
    "rollouts": r"iter_\d+\.jsonl",
}


def remove_stale_temporaries(output_dir: str | Path) -> None:
    """Delete the half-written checkpoints, ``final/`` and files a killed process left in the
    run directory (rlalign's own temporary names only: see :func:`rlalign.io.remove_temporaries`)."""
    for folder, names in RUN_FILES.items():
        remove_temporaries(Path(output_dir) / folder, names)


def prune_checkpoints(output_dir: str | Path, keep: int | None) -> None:
    """Keep the ``keep`` newest checkpoints (all when ``keep`` is None)."""
    if keep is None:
        return
    for _, path in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


# --- RNG states ---------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every global generator's state, as weights_only-loadable values."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npy = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": npy["bit_generator"],
            "state": {"key": npy["key"].numpy().astype(np.uint32), "pos": npy["pos"]},
            "has_gauss": npy["has_gauss"],
            "gauss": npy["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- model weights -------------------------------------------------------------------------


def save_model_weights(
    model: nn.Module, directory: Path, state_dict: dict[str, torch.Tensor] | None = None
) -> None:
    """``save_pretrained`` (safetensors) for HF models; ``model.safetensors`` otherwise.

    ``state_dict``: the weights to write instead of the model's own (the unsharded weights
    gathered from every rank under FSDP)."""
    from transformers import PreTrainedModel

    if state_dict is not None:
        state_dict = _without_tied_copies(model, state_dict)
    # (A PEFT model's own save_pretrained writes the adapter alone; checkpoints hold it all.)
    if isinstance(model, PreTrainedModel):
        from transformers.utils import logging as hf_logging

        was_enabled = hf_logging.is_progress_bar_enabled()  # no "Writing model shards" bar per save
        hf_logging.disable_progress_bar()
        try:
            kwargs = {"state_dict": state_dict} if state_dict is not None else {}
            model.save_pretrained(directory, safe_serialization=True, **kwargs)
        finally:
            if was_enabled:
                hf_logging.enable_progress_bar()
    elif state_dict is not None:
        save_file(
            {k: v.contiguous() for k, v in state_dict.items()}, directory / "model.safetensors"
        )
    else:
        save_model(model, str(directory / "model.safetensors"))


def _without_tied_copies(
    model: nn.Module, state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Drop the entries of weights tied to an earlier one (stored once, as ``save_pretrained``
    does; :func:`read_model_weights` fills them back in)."""
    first: dict[int, str] = {}
    tied = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            tied.add(name)
        else:
            first[id(param)] = name
    return {k: v for k, v in state.items() if k not in tied}


DAMAGED_CHECKPOINT = "the checkpoint is damaged; resume from an older one (delete this one)"


def read_model_weights(model: nn.Module, directory: Path) -> dict[str, torch.Tensor]:
    """The safetensors weights of ``directory`` as a complete state dict of ``model``.

    A weight missing from the files is accepted only when it is tied to a stored one
    (``save_pretrained`` stores tied embeddings once): it is filled in from that one. Anything
    else missing, or anything unexpected, is an error.
    """
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise UserError(f"{directory}: no *.safetensors weights in the checkpoint")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        check_safetensors(file, DAMAGED_CHECKPOINT)
        state.update(load_file(str(file)))
    params = dict(model.named_parameters(remove_duplicate=False))
    by_identity = {id(p): name for name, p in params.items() if name in state}
    expected = set(model.state_dict().keys())
    missing = []
    for key in sorted(expected - set(state)):
        twin = by_identity.get(id(params[key])) if key in params else None
        if twin is None:
            missing.append(key)
        else:
            state[key] = state[twin]
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise UserError(
            f"{directory}: the checkpoint does not match the model "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); was the config changed?"
        )
    return state


def load_model_weights(model: nn.Module, directory: Path) -> None:
    """Load the safetensors weights of ``directory`` into ``model`` (exactly, in place)."""
    model.load_state_dict(read_model_weights(model, directory))


# --- whole checkpoints ---------------------------------------------------------------------


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    model: nn.Module,
    state: dict[str, Any],
    *,
    save_extra: Callable[[Path], None] | None = None,
    keep: int | None = None,
    model_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``checkpoints/step_<step>/`` atomically, then prune to the ``keep`` newest.

    ``model_state``: the weights to save instead of ``model``'s own (gathered under FSDP)."""
    final = checkpoint_root(output_dir) / f"step_{step}"
    try:
        with atomic_directory(final) as tmp:
            save_model_weights(model, tmp, model_state)
            if save_extra is not None:
                save_extra(tmp)
            # through a Python file: a full disk then raises ENOSPC, which torch's own writer
            # reports only as "unexpected pos"
            with open(tmp / STATE_FILE, "wb") as f:
                torch.save(state, f)
    except DiskFullError:
        kept = latest_checkpoint(output_dir)
        raise DiskFullError(
            f"no space left on device while writing checkpoint {final}: it was not kept, the "
            f"newest complete checkpoint is {kept or 'none'} (intact); free some space, then "
            "continue with --resume"
        ) from None
    prune_checkpoints(output_dir, keep)  # only once the new checkpoint is complete
    return final


def load_trainer_state(directory: Path) -> dict[str, Any]:
    """Read ``trainer_state.pt`` safely: tensors and plain containers only, never code."""
    path = directory / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # whole, but asks to run code: refused, not damaged
        raise UserError(
            f"{path}: not a valid rlalign checkpoint ({_load_failure(exc)}); "
            "delete this checkpoint directory to resume from an older one"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CorruptFileError(
            f"{path}: not a valid rlalign checkpoint ({_load_failure(exc)}); "
            "delete this checkpoint directory to resume from an older one"
        ) from None


def check_checkpoint(directory: Path) -> dict[str, Any]:
    """The trainer state of ``directory`` once its files are checked whole (the state loads,
    every weights file is complete: headers only, the weights are not read);
    :class:`CorruptFileError` naming the damaged file otherwise."""
    state = load_trainer_state(directory)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CorruptFileError(f"{directory}: no *.safetensors weights; {DAMAGED_CHECKPOINT}")
    for file in files:
        check_safetensors(file, DAMAGED_CHECKPOINT)
    return state


@dataclass
class Resumable:
    """The checkpoint a run resumes from (its path and trainer state) and the newer ones that
    are damaged (``(path, why)``, newest first)."""

    path: Path
    state: dict[str, Any]
    damaged: list[tuple[Path, str]]


def resumable_checkpoint(output_dir: str | Path) -> Resumable | None:
    """The newest checkpoint whose files are whole (None when the run has none).

    Newer damaged ones are returned too, for the owner of the run directory to move aside
    (:func:`move_damaged_aside`). When every checkpoint is damaged: :class:`CorruptFileError`,
    naming the newest one's damaged file.
    """
    damaged: list[tuple[Path, str]] = []
    for _, path in reversed(list_checkpoints(output_dir)):
        try:
            state = check_checkpoint(path)
        except CorruptFileError as exc:
            damaged.append((path, str(exc).partition("; ")[0]))
            continue
        return Resumable(path, state, damaged)
    if damaged:
        raise CorruptFileError(
            f"{damaged[0][1]}: every checkpoint of {output_dir} is damaged, none to resume "
            "from; start the run over (overwrite_output_dir=true) or restore the checkpoints"
        )
    return None


def move_damaged_aside(found: Resumable) -> str | None:
    """Rename each damaged checkpoint newer than ``found.path`` from ``step_N`` to
    ``step_N.damaged``: kept for a look, no longer taken for a checkpoint (by a resume, or by
    the pruning of old ones). Returns the line that tells the user, or None if none was."""
    moved = []
    for path, _ in found.damaged:
        aside = path.with_name(f"{path.name}.damaged")
        shutil.rmtree(aside, ignore_errors=True)  # an older copy of the same step, damaged too
        path.rename(aside)
        moved.append(aside.name)
    if not moved:
        return None
    return (
        f"rlalign: {found.damaged[0][1]}: resuming from {found.path.name} instead (the damaged "
        f"checkpoints are kept as {', '.join(moved)})"
    )


def _load_failure(exc: BaseException) -> str:
    """What was wrong with a state file, in one line (torch's own message is a page long and
    suggests ``weights_only=False``, which would run the payload)."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (
            f"it asks to call or build the Python object {found.group(1)}, which a checkpoint "
            "never holds; refused to unpickle it, nothing in it was run"
        )
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [x.strip() for x in text.splitlines() if x.strip() and not x.startswith(boilerplate)]
    first = lines[0].split(". ")[0] if lines else type(exc).__name__
    return f"unreadable: {first}"
