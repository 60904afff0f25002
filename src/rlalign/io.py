"""File I/O that never loses data and reports bad input as ``file:line: what is wrong``.

- :func:`atomic_write_text` / :func:`atomic_write_bytes`: write to a temporary file in the same
  directory, fsync, then ``os.replace`` -- a crash leaves either the old file or the new one.
- :func:`atomic_directory`: build a directory under a temporary name and rename it into place
  (checkpoints): a reader never sees a half-written checkpoint.
- A full disk (ENOSPC/EDQUOT) during either becomes a one-line
  :class:`~rlalign.errors.DiskFullError`; the partial copy is deleted, the old version stays.
- :func:`read_lines` / :func:`read_text` / :func:`read_jsonl`: a user's text files (UTF-8, a
  byte-order mark allowed) with line-numbered :class:`rlalign.errors.UserError` s: bytes that
  are not UTF-8, a binary format such as Parquet, invalid JSON.
- :func:`check_safetensors`: a truncated or corrupt weights file is one line naming it, not the
  safetensors library's traceback.
- :func:`remove_temporaries`: delete what the atomic writes of a killed process left behind.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
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


@contextlib.contextmanager
def _naming(directory: Path) -> Iterator[None]:
    """An OSError (a read-only disk, no permission) names ``directory``, which the user chose,
    not the random temporary name inside it."""
    try:
        yield
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, str(directory)) from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _naming(path.parent):
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


# what a file system says when it has no fsync (nothing to wait for), unlike a failed one
_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (before it is renamed into place).

    A file's fsync error (EIO, a full disk or quota, as network file systems report them
    only here) is raised: the tree may not be on disk, so it must not replace a good one.
    Directories are synced where the file system allows it (some refuse to open them)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            except OSError as exc:
                if exc.errno not in _FSYNC_UNSUPPORTED:
                    raise
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


@contextlib.contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it is fsynced and renamed to ``final``.

    If ``final`` exists it is replaced only after the new one is complete. On an exception the
    temporary directory is removed and ``final`` is untouched (an interruption between the two
    renames that replace it puts the old one back; a kill there leaves ``.NAME.old``, which
    :func:`remove_temporaries` puts back).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with _naming(final.parent):
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        tmp.chmod(0o777 & ~_UMASK)
        yield tmp
        fsync_tree(tmp)
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            try:
                os.replace(tmp, final)
            except BaseException:
                if not final.exists():
                    os.replace(old, final)
                raise
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
    expression ``targets``; a ``.NAME.old`` whose ``NAME`` is missing (killed between the two
    renames that replace it) is renamed back instead. Any other name is left alone (it is not
    ours to delete)."""
    ours = re.compile(rf"\.(?:{targets})\.(?:[a-z0-9_]+\.tmp|old)")
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        if ours.fullmatch(path.name):
            # killed between the renames that replace NAME: the old NAME is the only copy
            name = path.name[1:].removesuffix(".old")
            if path.name.endswith(".old") and not (directory / name).exists():
                os.replace(path, directory / name)
                continue
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


# What a file that is not text starts with: its kind, and what to do instead. Parquet has its
# own entry so that a Parquet reader removes one line here.
_NOT_TEXT: tuple[tuple[bytes, str, str], ...] = (
    (b"PAR1", "a Parquet file", "give it the .parquet suffix (data is read by its suffix)"),
    (b"\xff\xfe", "UTF-16 text", "save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text", "save it as UTF-8"),
    (b"\x1f\x8b", "a gzip-compressed file", "decompress it first (gunzip)"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file", "decompress it first (unzstd)"),
    (b"\xfd7zXZ\x00", "an xz-compressed file", "decompress it first (unxz)"),
    (b"PK\x03\x04", "a zip archive (or .xlsx, .docx)", "extract or export the data as JSONL"),
    (b"ARROW1", "an Arrow file", "convert it to JSONL"),
    (b"\x93NUMPY", "a NumPy array file", "convert it to JSONL"),
    (b"SQLite format 3\x00", "an SQLite database", "export the table as JSONL"),
)  # fmt: skip


_UNDECODED = re.compile("[\udc80-\udcff]")  # a byte surrogateescape could not decode


def _refuse_non_text(path: Path, head: bytes) -> None:
    for magic, kind, advice in _NOT_TEXT:
        if head.startswith(magic):
            raise UserError(f"{path}: this is {kind}, not text; {advice}")


def read_lines(
    path: str | Path, *, what: str = "data", kinds: str = "JSONL"
) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` of a UTF-8 text file, line endings kept.

    A byte-order mark at the start is dropped (files saved by Windows editors have one).
    Raises :class:`UserError` for a missing path, a directory, a binary format (named:
    Parquet, gzip, ...) and bytes that are not UTF-8 (``file:line``, with the byte offset).
    Lines end at ``\n``, ``\r\n`` or ``\r``, as Python's text files split them.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: {what} file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a {what} file ({kinds})")
    with path.open("rb") as raw:
        head = raw.read(16)
    _refuse_non_text(path, head)
    # surrogateescape turns each undecodable byte into one lone surrogate, so a bad byte is
    # found per line (with its offset) without holding the whole file in memory
    offset = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        for lineno, line in enumerate(f, start=1):
            if line.isascii():
                offset += len(line)
                yield lineno, line
                continue
            bad = _UNDECODED.search(line)
            if bad is not None:
                at = offset + len(line[: bad.start()].encode("utf-8", "surrogateescape"))
                byte = ord(bad.group()) - 0xDC00
                raise UserError(
                    f"{path}:{lineno}: not UTF-8 text: byte 0x{byte:02x} at byte offset {at} "
                    "(save the file as UTF-8, e.g. iconv -f latin1 -t utf-8)"
                )
            offset += len(line.encode("utf-8"))
            yield lineno, line


def read_text(path: str | Path, *, what: str = "data", kinds: str = "text") -> str:
    """The whole of a UTF-8 text file, with :func:`read_lines`'s checks and messages."""
    return "".join(line for _, line in read_lines(path, what=what, kinds=kinds))


def read_jsonl(path: str | Path, *, what: str = "data") -> list[tuple[int, dict[str, Any]]]:
    """Read a JSON Lines file into ``[(line_number, object), ...]``; blank lines are skipped.

    Raises :class:`UserError` naming the file and line for a missing/empty file, text that is
    not UTF-8, invalid JSON or a line that is not a JSON object (see :func:`read_lines`).
    """
    path = Path(path)
    rows: list[tuple[int, dict[str, Any]]] = []
    for lineno, line in read_lines(path, what=what, kinds="JSONL"):
        if not line.strip():
            continue
        try:  # without its newline, a line cut short reads "Unterminated string"
            obj = json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            problem = exc.msg
            if problem.startswith("Unexpected UTF-8 BOM"):  # Python's hint is for its own API
                problem = "a byte-order mark (U+FEFF) inside the file; delete it"
            raise UserError(
                f"{path}:{lineno}: invalid JSON: {problem} (column {exc.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        rows.append((lineno, obj))
    if not rows:
        raise UserError(f"{path}: {what} file is empty")
    return rows


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
