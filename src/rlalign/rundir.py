"""A run directory: one writer at a time, and never a directory of someone else's files.

- :func:`lock_run_directory`: an exclusive ``flock`` on ``DIR/.rlalign.lock``, held while the
  run writes. A second run on the same directory is refused at once, naming the process that
  holds it. The operating system drops the lock when its process ends, however it ends
  (``kill -9`` included), so a lock is never stale. The file stays; it also marks the
  directory as an rlalign run.
- :func:`lock_scope`: a lock taken inside the block is released when the outermost block
  ends (a stage function, or the command around it that also writes the report).
- :func:`foreign_entries`: the files of a directory that is not an rlalign run; a run starts
  only in a new or empty directory or in a run's own, never over someone else's files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

from rlalign.errors import UserError

LOCK_FILE = ".rlalign.lock"


class RunDirectoryBusy(UserError):
    """Another process is writing to the run directory."""


_held: dict[str, int] = {}  # resolved directory -> file descriptor holding its lock
_scoped: list[str] = []  # directories locked while a lock_scope was open
_depth = 0


def _key(directory: Path) -> str:
    return str(directory.resolve())


def lock_run_directory(directory: str | Path) -> None:
    """Take the exclusive lock of ``directory`` (created if missing) for this process.

    Inside a :func:`lock_scope` it is released when the scope ends, otherwise when the
    process exits. Taking a lock this process already holds does nothing. Raises
    :class:`RunDirectoryBusy` when another process holds it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = _key(directory)
    if key in _held:
        return
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise RunDirectoryBusy(
            f"{directory}: another rlalign run is writing to this directory "
            f"({_holder(path)}); wait for it to end, or choose another directory"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    _held[key] = fd
    if _depth:
        _scoped.append(key)


def _holder(path: Path) -> str:
    """Who holds the lock, as its holder wrote it down (it may not have yet)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text.splitlines()[0] if text else "process id not known yet"


def unlock_run_directory(directory: str | Path) -> None:
    """Release this process's lock of ``directory`` (nothing when it holds none)."""
    fd = _held.pop(_key(Path(directory)), None)
    if fd is not None:
        os.close(fd)  # closing the last descriptor releases the flock


@contextlib.contextmanager
def lock_scope() -> Iterator[None]:
    """Locks taken inside the block are released when the outermost open scope ends."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            while _scoped:
                key = _scoped.pop()
                fd = _held.pop(key, None)
                if fd is not None:
                    os.close(fd)


@contextlib.contextmanager
def locked_run_directory(directory: str | Path) -> Iterator[None]:
    """Hold the lock of ``directory`` for the block."""
    with lock_scope():
        lock_run_directory(directory)
        yield


def foreign_entries(directory: str | Path) -> list[str]:
    """The names in ``directory`` (sorted) unless it is missing, empty, or a run directory:
    marked by its lock file, or holding a run's ``checkpoints/``, ``final/`` or the car's
    ``policy.safetensors`` (as runs made before the lock file existed do). A ``config.yaml``
    alone is no sign of a run: it may be the user's own."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    names = sorted(p.name for p in directory.iterdir())
    if not names or LOCK_FILE in names:
        return []
    if any((directory / name).exists() for name in ("checkpoints", "final", "policy.safetensors")):
        return []
    return names


def refuse_foreign_directory(directory: str | Path, key: str = "output_dir") -> None:
    """Raise when ``directory`` holds files that are not an rlalign run's."""
    found = foreign_entries(directory)
    if found:
        shown = ", ".join(found[:4]) + (f", ... ({len(found)} entries)" if len(found) > 4 else "")
        raise UserError(
            f"{key}={directory} holds files that are not an rlalign run ({shown}); a run never "
            f"writes over them: choose a new or empty {key}"
        )


def remove_run_outputs(directory: str | Path, names: Iterable[str]) -> None:
    """Delete an earlier run's outputs ``names`` (files or directories) from ``directory``, so
    that nothing of it is mixed with a run started over in the same place."""
    for name in names:
        path = Path(directory) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
