"""Resolve ``package.module:function`` or ``path/to/file.py:function`` to a callable.

A user's code (a reward function, a text environment's ``make_env``) is named by such a spec on
the command line or in a config. Every failure -- a malformed spec, a missing file or module, an
exception or ``sys.exit`` while importing, a missing or non-callable name -- is one
:class:`UserError` line that starts with ``{what} '{spec}':``.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from rlalign.errors import UserError


def _split(spec: str, what: str) -> tuple[str, str]:
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise UserError(
            f"{what} '{spec}': expected 'package.module:function' or 'path/to/file.py:function'"
        )
    return target, name


# The module name of a file loaded by path: it differs between processes (str hashes are
# salted), so another process names such a function by its file instead.
USER_MODULE_PREFIX = "rlalign_user_"


def _load_module(target: str, spec: str, what: str) -> ModuleType:
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_file():
            raise UserError(f"{what} '{spec}': file '{path}' not found")
        # One module per file, whatever it is loaded as: a second spec naming the same file
        # reuses it instead of running its top-level code again.
        module_name = f"{USER_MODULE_PREFIX}{abs(hash(str(path.resolve())))}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise UserError(f"{what} '{spec}': cannot import '{path}'")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            del sys.modules[module_name]
            raise UserError(f"{what} '{spec}': {_failure(path, exc)}") from None
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if _on_path_from_the_working_directory(target, exc):
            return _load_module(target, spec, what)  # once: the directory is on sys.path now
        raise UserError(f"{what} '{spec}': no module named '{exc.name}'") from None
    except (Exception, SystemExit) as exc:
        raise UserError(f"{what} '{spec}': {_failure(target, exc)}") from None


def _on_path_from_the_working_directory(target: str, exc: ModuleNotFoundError) -> bool:
    """Put the working directory on ``sys.path`` when the missing module lies there, and say
    whether it did.

    Why: ``python -m rlalign`` has the working directory on ``sys.path`` and the ``rlalign``
    console script has not, yet the two are one entry point; ``my_rewards:score`` beside the
    user must import from both. Only when the import would fail otherwise, and it stays (a
    reward worker process, spawned later, inherits ``sys.path``)."""
    top = target.split(".")[0]
    cwd = Path.cwd()
    if exc.name != top or str(cwd) in sys.path or "" in sys.path:
        return False
    if not (cwd / f"{top}.py").is_file() and not (cwd / top / "__init__.py").is_file():
        return False
    sys.path.insert(0, str(cwd))
    importlib.invalidate_caches()
    return True


def raised_at(exc: BaseException, fn: Any) -> str | None:
    """``file:line`` of the line in the user function's own file where ``exc`` left it (not
    the library frame it ended in: ``json.loads`` fails in json/decoder.py), else of the
    innermost frame; None without a traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return None
    own = getattr(getattr(fn, "__code__", None), "co_filename", None)
    mine = [f for f in frames if f.filename == own]
    frame = mine[-1] if mine else frames[-1]
    return f"{frame.filename}:{frame.lineno}"


def _failure(where: str | Path, exc: BaseException) -> str:
    """Why importing ``where`` failed; a ``sys.exit()`` in it must not end rlalign."""
    if isinstance(exc, SystemExit):
        return f"importing '{where}' failed: it called sys.exit({exc.code!r}) at import"
    return f"importing '{where}' failed: {type(exc).__name__}: {exc}"


def load_callable(spec: str, what: str) -> Callable[..., Any]:
    """Import the callable named by ``spec`` (the module's top-level code runs; an exception or
    ``sys.exit`` there is a :class:`UserError` naming the file).

    Args:
        spec: ``package.module:function`` or ``path/to/file.py:function``.
        what: what the callable is, for the messages (``"reward function"``, ``"environment"``).
    """
    target, name = _split(spec, what)
    module = _load_module(target, spec, what)
    fn = getattr(module, name, None)
    if fn is None:
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f", did you mean '{close[0]}'?" if close else ""
        raise UserError(f"{what} '{spec}': '{target}' has no function '{name}'{hint}")
    if not callable(fn):
        raise UserError(f"{what} '{spec}': '{name}' is not callable")
    return fn
