"""Make a text environment from a spec: a built-in id, or the user's ``make_env``.

``make_text_env("rlalign/Driving-v0")`` builds a built-in env; ``make_text_env("envs.py:make_env",
{"level": 2})`` imports the user's file and calls ``make_env(level=2)``. Every env comes back
wrapped by :func:`checked`, so an env that returns something other than text, a finite reward
and a dict stops the run with one line naming it, instead of failing deep inside a rollout.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from rlalign.envs.base import TextEnv
from rlalign.errors import UserError
from rlalign.plugins import load_callable, raised_at

# Built-in ids -> "module:function". Resolved when asked for, so this layer does not import the
# packages above it (the car lives in rlalign.control), and `rlalign --help` stays fast.
BUILTIN_TEXT_ENVS: dict[str, str] = {
    "rlalign/Driving-v0": "rlalign.control.driving_text:make_driving_text_env",
    "rlalign/Calculator-v0": "rlalign.envs.calculator:make_env",
}

_SPEC_HELP = "give a built-in id or 'path/to/file.py:make_env' or 'package.module:make_env'"


def _short(value: Any, limit: int = 80) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _factory(spec: str) -> Callable[..., Any]:
    if spec in BUILTIN_TEXT_ENVS:
        module_name, _, name = BUILTIN_TEXT_ENVS[spec].partition(":")
        return getattr(importlib.import_module(module_name), name)
    if ":" not in spec:
        close = difflib.get_close_matches(spec, list(BUILTIN_TEXT_ENVS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(
            f"environment '{spec}': no such text environment; {hint}built-in: "
            f"{', '.join(BUILTIN_TEXT_ENVS)}; or {_SPEC_HELP}"
        )
    return load_callable(spec, "environment")


def _check_kwargs(spec: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        return
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        accepted = [
            p.name
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        name = getattr(factory, "__name__", "make_env")
        raise UserError(
            f"environment '{spec}': env_kwargs do not fit {name}({', '.join(accepted)}): {exc}"
        ) from None


def make_text_env(spec: str, env_kwargs: dict[str, Any] | None = None) -> TextEnv:
    """The text environment named by ``spec``, called with ``**env_kwargs``, wrapped by
    :func:`checked`.

    Args:
        spec: a built-in id (:data:`BUILTIN_TEXT_ENVS`), ``path/to/file.py:make_env`` or
            ``package.module:make_env``.
        env_kwargs: keyword arguments of ``make_env``.

    Raises:
        UserError: an unknown id, a spec that does not import, keyword arguments ``make_env``
            does not take, ``make_env`` raising, or returning something that is not a text env.
    """
    if not isinstance(spec, str) or not spec:
        raise UserError(f"environment {spec!r}: {_SPEC_HELP}")
    kwargs = dict(env_kwargs or {})
    factory = _factory(spec)
    _check_kwargs(spec, factory, kwargs)
    try:
        env = factory(**kwargs)
    except UserError as exc:
        raise UserError(f"environment '{spec}': {exc}") from exc
    except Exception as exc:
        raise UserError(f"environment '{spec}': make_env failed: {_one_line(exc)}") from exc
    missing = [m for m in ("reset", "step") if not callable(getattr(env, m, None))]
    if missing:
        raise UserError(
            f"environment '{spec}': make_env returned {type(env).__name__} {_short(env)}, which "
            f"has no {' or '.join(m + '()' for m in missing)}; it must return a text environment "
            "(reset(seed=...) -> (str, dict), step(text) -> (str, reward, terminated, truncated, "
            "dict))"
        )
    return checked(env, spec=spec)


class CheckedTextEnv:
    """A text env whose every ``reset``/``step`` result is checked (see :func:`checked`).

    Attributes the wrapper does not define (``env``, ``last_obs``, ``action_index``, ...) are the
    wrapped env's; ``unwrapped`` is the wrapped env itself.
    """

    def __init__(self, env: Any, spec: str) -> None:
        self.unwrapped = env
        self.spec = spec
        actions = getattr(env, "actions", None)
        if actions is not None:
            if isinstance(actions, str) or not all(isinstance(a, str) for a in actions):
                raise UserError(
                    f"environment '{spec}': actions must be None or a sequence of str, got "
                    f"{_short(actions)}"
                )
            actions = tuple(actions)
        self.actions: tuple[str, ...] | None = actions

    def __getattr__(self, name: str) -> Any:
        if name == "unwrapped":  # not set yet (during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.unwrapped, name)

    def _bad(self, call: str, what: str, value: Any, rule: str) -> UserError:
        return UserError(
            f"environment '{self.spec}': {call} returned {what} {_short(value)} "
            f"({type(value).__name__}); {rule}"
        )

    def _observation(self, call: str, obs: Any) -> str:
        if not isinstance(obs, str):
            raise self._bad(
                call,
                "observation",
                obs,
                "it must be a str (a Gymnasium env joins through rlalign.envs.GymTextEnv)",
            )
        return obs

    def _info(self, call: str, info: Any) -> dict[str, Any]:
        if not isinstance(info, dict):
            raise self._bad(call, "info", info, "it must be a dict")
        return info

    def _run(self, call: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``method(*args, **kwargs)`` of the wrapped env; an exception in the env's own code
        becomes one line naming the env, the call and where it was raised."""
        try:
            return method(*args, **kwargs)
        except UserError:
            raise
        except Exception as exc:
            where = raised_at(exc, method)
            raise UserError(
                f"environment '{self.spec}': {call} raised {_one_line(exc)}"
                + (f" at {where}" if where else "")
            ) from exc

    def _tuple(self, call: str, result: Any, n: int, shape: str) -> tuple:
        if not isinstance(result, tuple) or len(result) != n:
            raise UserError(
                f"environment '{self.spec}': {call} returned {_short(result)}; it must return "
                f"a tuple {shape}"
            )
        return result

    def reset(self, *, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        call = f"reset(seed={seed!r})"
        result = self._run(call, self.unwrapped.reset, seed=seed)
        obs, info = self._tuple(call, result, 2, "(observation, info)")
        return self._observation(call, obs), self._info(call, info)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        call = f"step({_short(action, 40)})"
        obs, reward, terminated, truncated, info = self._tuple(
            call,
            self._run(call, self.unwrapped.step, action),
            5,
            "(observation, reward, terminated, truncated, info)",
        )
        obs = self._observation(call, obs)
        if (
            isinstance(reward, bool)
            or not isinstance(reward, numbers.Real)
            or not math.isfinite(float(reward))
        ):
            raise self._bad(call, "reward", reward, "it must be a finite real number")
        for name, flag in (("terminated", terminated), ("truncated", truncated)):
            if not isinstance(flag, bool | np.bool_):
                raise self._bad(call, name, flag, "it must be a bool")
        return obs, float(reward), bool(terminated), bool(truncated), self._info(call, info)

    def close(self) -> None:
        close = getattr(self.unwrapped, "close", None)
        if callable(close):
            close()


def checked(env: Any, *, spec: str | None = None) -> TextEnv:
    """``env`` wrapped so that each ``reset``/``step`` result is validated: the observation a
    str, the reward a finite real number, ``terminated``/``truncated`` bools, ``info`` a dict.
    A bad value is a :class:`UserError` naming the env (``spec``, else its type), the call and
    the value. An env already checked is returned as it is."""
    if isinstance(env, CheckedTextEnv):
        return env
    return CheckedTextEnv(env, spec if spec is not None else type(env).__name__)
