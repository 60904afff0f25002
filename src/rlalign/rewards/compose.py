"""Compose reward functions with weights; validate what each returns.

The reward of a completion is :math:`r = \\sum_j w_j\\, f_j(\\text{prompt}, \\text{completion})`.
Each component is kept (``components[name]``) so that metrics show what moved. A function that
raises, hangs past ``timeout``, returns the wrong number of values, or returns NaN/inf or a
value beyond :data:`MAX_ABS_REWARD` stops the run with a :class:`RewardError` naming the
function and the offending sample.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rlalign.errors import UserError
from rlalign.plugins import raised_at
from rlalign.rewards.loading import load_reward_function
from rlalign.rewards.sandbox import (
    RewardCrash,
    RewardImportError,
    RewardTimeout,
    TimedRewardFunction,
)

MAX_ABS_REWARD = 1e15
"""The largest reward magnitude accepted. Rewards become float32 and the advantage and value
maths square them and sum the squares over a batch: at 1e15 a batch of 1e8 squares stays below
float32's largest value (3.4e38); a reward well beyond it ends in inf/NaN losses, blamed on the
optimiser instead of the reward."""

_BOUND_WHY = (
    f"; a reward must be finite and at most {MAX_ABS_REWARD:g} in size (the advantage maths "
    "squares rewards in float32)"
)


class RewardError(UserError):
    """A reward function misbehaved (raised, hung, wrong length, NaN/inf)."""


@dataclass
class RewardTerm:
    """One weighted component: a callable, or a ``module:function`` / ``file.py:function`` spec."""

    name: str
    fn: Callable[..., Any]
    weight: float = 1.0


IN_PROCESS = "python:"
"""How a run's ``config.yaml`` names a reward that was a Python callable given to
:func:`rlalign.api.align` (``python:my_reward``): it cannot be imported again by name."""


def callable_name(fn: Callable[..., Any]) -> str:
    """A callable's name in metrics and in ``config.yaml`` (``python:NAME``)."""
    return getattr(fn, "__name__", None) or type(fn).__name__


def _short(text: str, n: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _load(spec: str, timeout: float | None, builtins: dict[str, Callable[..., Any]]):
    """A term's callable, imported now so that a bad file fails before training starts."""
    if spec in builtins:
        return builtins[spec]
    if spec.startswith(IN_PROCESS):
        raise UserError(
            f"reward function '{spec}' was a Python callable given to rlalign.align(); it has no "
            "name to import it by: pass it again (rlalign.align(..., reward_funcs=[...])), or name "
            "a function as 'package.module:function' or 'path/to/file.py:function'"
        )
    if ":" not in spec and builtins:  # a name, not module:function: a misspelt verifier?
        close = difflib.get_close_matches(spec, list(builtins), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(
            f"reward function '{spec}' is not a verifier of the built-in world ({hint}the "
            f"verifiers are {', '.join(builtins)}); a function of your own is named "
            "'package.module:function' or 'path/to/file.py:function'"
        )
    if not timeout:
        return load_reward_function(spec)
    fn = TimedRewardFunction(spec, timeout)
    try:  # the import runs in the worker, under the time limit a call gets
        fn.start()
    except RewardCrash as exc:
        raise UserError(f"reward function '{spec}': {exc}") from None
    except OSError as exc:  # the OS refused a new process (EAGAIN, ENOMEM)
        raise UserError(
            f"reward function '{spec}': cannot start its worker process: {exc}"
        ) from None
    return fn


class RewardComposer:
    """Weighted sum of reward terms, with per-term validation and scores.

    Args:
        terms: the components. Build from specs with :meth:`from_specs`.
    """

    def __init__(self, terms: Sequence[RewardTerm]) -> None:
        if not terms:
            raise UserError("no reward function given")
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise UserError(f"reward functions must have distinct names, got {names}")
        self.terms = list(terms)

    @classmethod
    def from_specs(
        cls,
        specs: Sequence[str],
        weights: Sequence[float] | None = None,
        timeout: float | None = 30.0,
        builtins: dict[str, Callable[..., Any]] | None = None,
    ) -> RewardComposer:
        """Terms from ``module:function`` / ``file.py:function`` specs (or names in
        ``builtins``). User functions run in a worker process with a ``timeout`` per call;
        ``timeout=None`` runs them in-process without a limit."""
        weights = list(weights) if weights is not None else [1.0] * len(specs)
        if len(weights) != len(specs):
            raise UserError(
                f"reward_weights has {len(weights)} values for {len(specs)} reward functions"
            )
        terms: list[RewardTerm] = []
        try:
            for spec, weight in zip(specs, weights, strict=True):
                fn = _load(spec, timeout, builtins or {})
                name = spec.rpartition(":")[2] or spec
                if any(t.name == name for t in terms):
                    name = spec
                terms.append(RewardTerm(name=name, fn=fn, weight=float(weight)))
        except BaseException:
            for term in terms:  # the workers already started
                if isinstance(term.fn, TimedRewardFunction):
                    term.fn.close()
            raise
        return cls(terms)

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **fields: Any
    ) -> tuple[list[float], dict[str, list[float]]]:
        """Score completions: ``(total, {name: component scores})``."""
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"{len(prompts)} prompts but {n} completions")
        components: dict[str, list[float]] = {}
        total = [0.0] * n
        for term in self.terms:
            scores = self._call(term, list(prompts), list(completions), fields)
            components[term.name] = scores
            for i, s in enumerate(scores):
                total[i] += term.weight * s
        for i, r in enumerate(total):
            if not abs(r) <= MAX_ABS_REWARD:  # large weights times in-range scores
                weights = ", ".join(f"{t.name}={t.weight:g}" for t in self.terms)
                raise RewardError(
                    f"the weighted reward of sample {i} is {r} (beyond +-{MAX_ABS_REWARD:g}; "
                    f"weights {weights}; prompt '{_short(prompts[i])}'){_BOUND_WHY}: lower the "
                    "reward_weights"
                )
        return total, components

    def _call(self, term: RewardTerm, prompts, completions, fields) -> list[float]:
        try:
            raw = term.fn(prompts, completions, **fields)
        except RewardTimeout as exc:
            raise RewardError(
                f"reward function '{term.name}' timed out ({exc}) on a batch of "
                f"{len(completions)} completions; first prompt: '{_short(prompts[0])}'"
            ) from None
        except RewardImportError:  # a restarted worker: its message names the file
            raise
        except (RewardCrash, Exception, SystemExit) as exc:
            if isinstance(exc, RewardCrash):  # the worker's message names the line already
                detail = str(exc)
            else:
                where = raised_at(exc, term.fn)
                detail = f"{type(exc).__name__}: {exc}" + (f" ({where})" if where else "")
            raise RewardError(
                f"reward function '{term.name}' failed: {detail}"
                + self._offending_sample(term, prompts, completions, fields)
            ) from None
        scores = _as_scores(raw)
        if scores is None:
            raise RewardError(
                f"reward function '{term.name}' must return a list of numbers, one per "
                f"completion in order, got {_described(raw)}"
            )
        if len(scores) != len(completions):
            raise RewardError(
                f"reward function '{term.name}' returned {len(scores)} scores for "
                f"{len(completions)} completions"
            )
        for i, s in enumerate(scores):
            if not abs(s) <= MAX_ABS_REWARD:
                size = "" if not math.isfinite(s) else f" (beyond +-{MAX_ABS_REWARD:g})"
                raise RewardError(
                    f"reward function '{term.name}' returned {s}{size} for sample {i} "
                    f"(prompt '{_short(prompts[i])}', completion '{_short(completions[i])}')"
                    f"{_BOUND_WHY if size else ''}"
                )
        return scores

    @staticmethod
    def _offending_sample(term: RewardTerm, prompts, completions, fields) -> str:
        """Find the first sample on which the function fails alone (to name it in the error)."""
        if len(completions) < 2:
            i = 0
        else:
            for i in range(len(completions)):
                one = {k: [v[i]] if isinstance(v, list | tuple) else v for k, v in fields.items()}
                try:
                    term.fn(prompts[i : i + 1], completions[i : i + 1], **one)
                except (Exception, SystemExit):
                    break
            else:
                return " (on the batch as a whole; every sample alone passes)"
        return (
            f" on sample {i} (prompt '{_short(prompts[i])}', completion '{_short(completions[i])}')"
        )

    def close(self) -> None:
        for term in self.terms:
            close = getattr(term.fn, "close", None)
            if callable(close):
                close()


def _as_scores(raw: Any) -> list[float] | None:
    """``raw`` as a list of floats when it is a sequence of real numbers (a list, a tuple, a
    1-D array or tensor; bools count as 0/1), else None. A set or a dict has no order that
    matches the completions, and a string's characters are not scores: float() would take
    them all (a set reordered, a dict's keys, "10" as [1, 0])."""
    if hasattr(raw, "ndim") and hasattr(raw, "tolist"):  # numpy array, torch tensor
        if raw.ndim != 1:
            return None
        raw = raw.tolist()
    if not isinstance(raw, list | tuple):
        return None
    # a 0-d tensor or array is a number too
    raw = [s.item() if getattr(s, "ndim", None) == 0 and hasattr(s, "item") else s for s in raw]
    if not all(isinstance(s, numbers.Real) for s in raw):
        return None
    return [float(s) for s in raw]


def _described(raw: Any) -> str:
    if isinstance(raw, list | tuple):
        bad = next((s for s in raw if not isinstance(s, numbers.Real)), None)
        return f"a {type(raw).__name__} holding {type(bad).__name__} {_short(repr(bad))}"
    return type(raw).__name__
