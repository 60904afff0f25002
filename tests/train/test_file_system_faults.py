"""The file system refusing a write, through the CLI: a full disk while torch or safetensors
writes a checkpoint, an output_dir that cannot be written (no permission, a read-only disk) or
that lies below a file. Each is one line naming the path and the cause, never a traceback."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from rlalign import checkpoint as ckpt
from rlalign.cli import main
from rlalign.errors import DiskFullError, UserError, file_system_problem, is_disk_full

from .helpers import FillsUp, repetitive_corpus

FAST = ["model=tiny", "vocab_size=300", "block_size=32", "per_device_train_batch_size=4",
        "logging_steps=1", "eval_steps=100", "save_steps=1", "disable_tqdm=true",
        "max_steps=1"]  # fmt: skip

# what safetensors (Rust) raised on a full tmpfs, word for word
SAFETENSORS_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return repetitive_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", lines=60)


def torch_disk_full() -> RuntimeError:
    """What torch.save raises when its file's write fails with ENOSPC (torch's own object)."""
    path = Path(os.devnull)
    with path.open("wb") as f:
        try:
            torch.save({"w": torch.zeros(4096)}, FillsUp(f, room=100))
        except RuntimeError as exc:
            return exc
    raise AssertionError("torch.save did not fail")


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    ("exc", "want"),
    [
        (torch_disk_full(), ("No space left on device; free some space", 1)),
        (SafetensorError(SAFETENSORS_FULL), ("No space left on device; free some space", 1)),
        (OSError(errno.EDQUOT, "Disk quota exceeded", "/q/f"), ("/q/f: Disk quota exceeded", 1)),
        (PermissionError(errno.EACCES, "Permission denied", "/r"), ("/r: Permission denied", 2)),
        (OSError(errno.EROFS, "Read-only file system", "/ro"), ("/ro: Read-only file system", 2)),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/f/x"), ("/f/x: Not a dir", 2)),
    ],
    ids=["torch", "safetensors", "quota", "permission", "read-only", "below-a-file"],
)
def test_file_system_errors_are_recognised_behind_library_wrappers(exc, want):
    message, code = file_system_problem(exc)
    assert message.startswith(want[0]) and code == want[1]
    assert is_disk_full(exc) == (code == 1)


def test_other_errors_are_not_taken_for_file_system_ones():
    assert file_system_problem(RuntimeError("unexpected pos 704 vs 598")) is None  # no errno
    assert file_system_problem(OSError(errno.ECONNREFUSED, "Connection refused")) is None
    assert file_system_problem(ValueError("bad")) is None
    # a message of ours quoting a library's text is not a disk error, nor is a cause it hid
    assert file_system_problem(UserError("it said (os error 28)")) is None
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise ValueError("unrelated") from None
    except ValueError as hidden:
        assert file_system_problem(hidden) is None


@pytest.mark.parametrize("writer", ["torch", "safetensors"])
def test_a_full_disk_while_a_checkpoint_is_written_is_one_line(
    tmp_path, corpus, monkeypatch, capsys, writer
):
    """The first checkpoint runs out of space: torch.save (the trainer state) or safetensors
    (the weights) fails as each does on a full disk; nothing half-written is left."""
    run = tmp_path / "run"
    real_save = torch.save

    def torch_fills_up(obj, f, *args, **kwargs):
        is_path = isinstance(f, str | os.PathLike)
        if ".step_1." not in (os.fspath(f) if is_path else f.name):
            return real_save(obj, f, *args, **kwargs)
        if is_path:
            # torch's own C++ writer: the error carries no errno (what a real full disk gave)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5 vs 3")
        return real_save(obj, FillsUp(f, room=1000), *args, **kwargs)

    def safetensors_fills_up(model, directory, *args, **kwargs):
        (Path(directory) / "model.safetensors").write_bytes(b"half a file")
        raise SafetensorError(SAFETENSORS_FULL)

    if writer == "torch":
        monkeypatch.setattr(ckpt.torch, "save", torch_fills_up)
    else:
        monkeypatch.setattr(ckpt, "save_model_weights", safetensors_fills_up)
    capsys.readouterr()
    assert (
        main(["pretrain", *FAST, f"data={corpus}", f"output_dir={run}"]) == DiskFullError.exit_code
    )
    err = one_line(capsys)
    assert (
        f"no space left on device while writing checkpoint {run / 'checkpoints' / 'step_1'}" in err
    )
    assert "--resume" in err
    assert list((run / "checkpoints").iterdir()) == []  # no partial copy


def test_an_output_dir_below_a_file_is_one_line(tmp_path, corpus, capsys):
    (tmp_path / "notes.txt").write_text("a file\n")
    out = tmp_path / "notes.txt" / "run"
    capsys.readouterr()
    assert main(["pretrain", *FAST, f"data={corpus}", f"output_dir={out}"]) == 2
    err = one_line(capsys)
    assert f"error: {out}: Not a directory; a part of the path above it is a file" in err


@pytest.mark.parametrize(
    ("code", "cause", "advice"),
    [
        (errno.EACCES, "Permission denied", "check its permissions"),
        (errno.EROFS, "Read-only file system", "choose a path on a writable disk"),
    ],
)
def test_an_output_dir_that_cannot_be_written_is_one_line(
    tmp_path, corpus, monkeypatch, capsys, code, cause, advice
):
    """The kernel refuses to create anything inside ``locked`` (root ignores permission bits,
    so the refusal is simulated where rlalign creates files and directories)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_open, real_mkdir = os.open, os.mkdir

    def refuse(path):  # creating an entry in ``locked`` (or below it) fails
        if Path(path).parent.is_relative_to(locked):
            raise OSError(code, os.strerror(code), os.fspath(path))

    def guarded_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def guarded_mkdir(path, *args, **kwargs):
        if not os.path.lexists(path):  # the kernel reports EEXIST first
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
    monkeypatch.setattr(os, "mkdir", guarded_mkdir)
    for out in (locked, locked / "run"):  # an existing output_dir, and a new one inside
        capsys.readouterr()
        assert main(["pretrain", *FAST, f"data={corpus}", f"output_dir={out}"]) == 2
        err = one_line(capsys)
        named = err.split("error: ", 1)[1].split(f": {cause}")[0]
        assert named.startswith(str(out)) and ".tmp" not in named, err  # not a temporary name
        assert f": {cause}; {advice}" in err
