"""User-facing errors.

A :class:`UserError` is a mistake the user can fix (a wrong path, a malformed line, an unknown
config key). The CLI prints its message on one line and exits with status 2, without a
traceback (``--debug`` shows one). Library callers get an ordinary exception they can catch.
"""

from __future__ import annotations

import errno


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


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS
