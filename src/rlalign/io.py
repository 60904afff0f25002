"""File I/O that never loses data and reports bad input as ``file:line: what is wrong``.

- :func:`atomic_write_text` / :func:`atomic_write_bytes`: write to a temporary file in the same
  directory, fsync, then ``os.replace`` -- a crash leaves either the old file or the new one.
- :func:`atomic_directory`: build a directory under a temporary name and rename it into place
  (checkpoints): a reader never sees a half-written checkpoint.
- A full disk (ENOSPC/EDQUOT) during either becomes a one-line
  :class:`~rlalign.errors.DiskFullError`; the partial copy is deleted, the old version stays.
- :func:`read_jsonl`: JSON Lines with line-numbered :class:`rlalign.errors.UserError` s.
- :func:`check_safetensors`: a truncated or corrupt weights file is one line naming it, not the
  safetensors library's traceback.
- :func:`remove_temporaries`: delete what the atomic writes of a killed process left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from rlalign.errors import CorruptFileError, DiskFullError, UserError, is_disk_full

# mkstemp/mkdtemp create 0600/0700 entries; a run's files get the permissions open()/mkdir()
# would give them (read at import: os.umask can only be read by setting it)
_UMASK = os.umask(0)
os.umask(_UMASK)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if is_disk_full(exc):
            raise _disk_full(path, exc) from None
        raise
    _fsync_dir(path.parent)


def _disk_full(path: Path, exc: BaseException) -> DiskFullError:
    return DiskFullError(
        f"{path}: {getattr(exc, 'strerror', None) or 'no space left on device'} while writing "
        "it; the partial copy was removed and any previous version is intact (free some space, "
        "then run again)"
    )


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (before it is renamed into place)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(Path(dirpath))


@contextlib.contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it is fsynced and renamed to ``final``.

    If ``final`` exists it is replaced only after the new one is complete. On an exception the
    temporary directory is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        tmp.chmod(0o777 & ~_UMASK)
        yield tmp
        fsync_tree(tmp)
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise _disk_full(final, exc) from None
        raise


def remove_temporaries(directory: Path, targets: str) -> None:
    """Delete the leftovers of atomic writes into ``directory`` that a killed process left:
    the ``.NAME.XXXXXXXX.tmp`` files and directories and the ``.NAME.old`` directories of
    :func:`atomic_write_bytes` and :func:`atomic_directory`, for ``NAME`` matching the regular
    expression ``targets``. Any other name is left alone (it is not ours to delete)."""
    ours = re.compile(rf"\.(?:{targets})\.(?:[a-z0-9_]+\.tmp|old)")
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        if ours.fullmatch(path.name):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def check_safetensors(path: str | Path, fix: str) -> None:
    """Raise :class:`CorruptFileError` naming ``path`` unless it is a whole safetensors file
    (its header parses and its tensors cover the file exactly, which a file cut short fails);
    ``fix`` says what to do about it. Reads the header only."""
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except SafetensorError as exc:
        why = str(exc).removeprefix("Error while deserializing header: ")
        raise CorruptFileError(
            f"{path}: truncated or corrupt safetensors file ({why}); {fix}"
        ) from None


def read_jsonl(path: str | Path, *, what: str = "data") -> list[tuple[int, dict[str, Any]]]:
    """Read a JSON Lines file into ``[(line_number, object), ...]``; blank lines are skipped.

    Raises :class:`UserError` naming the file and line for a missing/empty file, invalid JSON
    or a line that is not a JSON object.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: {what} file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a {what} file (JSONL)")
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:  # without its newline, a line cut short reads "Unterminated string"
                obj = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                raise UserError(
                    f"{path}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})"
                ) from None
            if not isinstance(obj, dict):
                raise UserError(
                    f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}"
                )
            rows.append((lineno, obj))
    if not rows:
        raise UserError(f"{path}: {what} file is empty")
    return rows


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
