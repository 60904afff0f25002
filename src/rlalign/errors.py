"""User-facing errors.

A :class:`UserError` is a mistake the user can fix (a wrong path, a malformed line, an unknown
config key). The CLI prints its message on one line and exits with status 2, without a
traceback (``--debug`` shows one). Library callers get an ordinary exception they can catch.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, reported as one clear line (what, where, how to fix)."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """An invalid configuration file or ``key=value`` override."""
