"""Resolve ``package.module:function`` or ``path/to/file.py:function`` to a callable."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from rlalign.errors import UserError


def _split(spec: str) -> tuple[str, str]:
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise UserError(
            f"reward function '{spec}': expected 'package.module:function' or "
            "'path/to/file.py:function'"
        )
    return target, name


def _load_module(target: str, spec: str):
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_file():
            raise UserError(f"reward function '{spec}': file '{path}' not found")
        module_name = f"rlalign_user_reward_{abs(hash(str(path.resolve())))}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise UserError(f"reward function '{spec}': cannot import '{path}'")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            del sys.modules[module_name]
            raise UserError(f"reward function '{spec}': {_failure(path, exc)}") from None
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise UserError(f"reward function '{spec}': no module named '{exc.name}'") from None
    except (Exception, SystemExit) as exc:
        raise UserError(f"reward function '{spec}': {_failure(target, exc)}") from None


def _failure(what: str | Path, exc: BaseException) -> str:
    """Why importing ``what`` failed; a ``sys.exit()`` in it must not end rlalign."""
    if isinstance(exc, SystemExit):
        return f"importing '{what}' failed: it called sys.exit({exc.code!r}) at import"
    return f"importing '{what}' failed: {type(exc).__name__}: {exc}"


def load_reward_function(spec: str) -> Callable[..., list[float]]:
    """Import the reward function named by ``spec`` (the module's top level code runs; an
    exception or ``sys.exit`` there is a :class:`UserError` naming the file).

    The function must accept ``(prompts, completions, **fields)`` and return one float per
    completion.
    """
    target, name = _split(spec)
    module = _load_module(target, spec)
    fn = getattr(module, name, None)
    if fn is None:
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f", did you mean '{close[0]}'?" if close else ""
        raise UserError(f"reward function '{spec}': '{target}' has no function '{name}'{hint}")
    if not callable(fn):
        raise UserError(f"reward function '{spec}': '{name}' is not callable")
    return fn
