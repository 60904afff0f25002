"""User-facing errors.

A :class:`UserError` is a mistake the user can fix (a wrong path, a malformed line, an unknown
config key). The CLI prints its message on one line and exits with status 2, without a
traceback (``--debug`` shows one). Library callers get an ordinary exception they can catch.
"""

from __future__ import annotations

import errno
import os
import re


class UserError(Exception):
    """A problem with the user's input, reported as one clear line (what, where, how to fix)."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """An invalid configuration file or ``key=value`` override."""


class DiskFullError(UserError):
    """The disk filled up while writing; nothing was half-replaced (see :mod:`rlalign.io`)."""

    exit_code = 1  # the run failed for a reason outside its input, like a NaN loss


class CorruptFileError(UserError):
    """A file is truncated or corrupt: a copy or download cut short, a disk that filled up, a
    process killed while writing it outside rlalign's atomic writes."""


class NonFiniteLossError(UserError):
    """The loss or gradient norm became NaN/inf; the weights were not updated."""

    exit_code = 1


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})  # EDQUOT: disk quota exceeded

# What to do about a file-system error on a path the user chose (an input or output_dir).
_PATH_ADVICE = {
    errno.EACCES: "check its permissions, or choose another path",
    errno.EPERM: "check its permissions, or choose another path",
    errno.EROFS: "choose a path on a writable disk (output_dir)",
    errno.ENOTDIR: "a part of the path above it is a file; choose another path",
    errno.EISDIR: "it is a directory; give a file",
    errno.ENAMETOOLONG: "choose a shorter path",
}

# Rust libraries (safetensors, tokenizers) report an OS error as text: "... (os error 28)"
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _os_error_behind(exc: BaseException) -> tuple[int, str | None] | None:
    """``(errno, filename)`` of the OS error behind ``exc``: its own, or the one it was raised
    from or while handling (torch's writer turns a file's ENOSPC into a RuntimeError), or the
    one a Rust library names in its message."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current.errno, current.filename
        found = _RUST_OS_ERROR.search(str(current))
        if found and not isinstance(current, UserError):
            return int(found.group(1)), None
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return None


def is_disk_full(exc: BaseException) -> bool:
    found = _os_error_behind(exc)
    return found is not None and found[0] in DISK_FULL_ERRNOS


def file_system_problem(exc: BaseException) -> tuple[str, int] | None:
    """``(one-line message, exit status)`` for a file-system error that is not a bug: a full
    disk (status 1, as :class:`DiskFullError`), a path that cannot be written or read (status
    2: the user's to fix). None for any other exception."""
    found = _os_error_behind(exc)
    if found is None or (found[0] not in DISK_FULL_ERRNOS and found[0] not in _PATH_ADVICE):
        return None
    code, filename = found
    where = f"{filename}: " if filename else ""
    cause = os.strerror(code)
    if code in DISK_FULL_ERRNOS:
        return (
            f"{where}{cause}; free some space, then run again (a training stage continues from "
            "its newest checkpoint with --resume)",
            DiskFullError.exit_code,
        )
    return f"{where}{cause}; {_PATH_ADVICE[code]}", UserError.exit_code
