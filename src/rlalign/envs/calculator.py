"""A calculator tool in the built-in world: one sum an episode, a tool to compute it.

An episode is one question too large for a small model to know by heart, drawn from the
episode seed (``reset(seed=s)`` is deterministic in ``s``)::

    user:      What is 4 8 2 1 plus 3 9 0 7?
    assistant: calc 4 8 2 1 plus 3 9 0 7
    user:      = 8 7 2 8
    assistant: It is 8 7 2 8.

- **Question**: ``a plus b`` or ``a minus b`` (``a >= b``, so no answer is negative), with
  ``digits``-digit operands (default 4). Numbers are written digit by digit, one space apart:
  the byte-level BPE groups a run of digits into one pre-token and merges frequent pairs
  (``" 87"`` is one token, ``"28"`` two), so ``8728`` would be spelled differently from number
  to number; ``" 8 7 2 8"`` is always one token a digit, whatever the tokenizer learned.
- **Tool call**: a message whose first word is ``calc``, then ``number op number`` (``op``:
  ``plus``, ``minus``, ``+`` or ``-``; a number's digits may be spaced or not). The next
  observation is the tool's output, ``= result``, with reward 0. A call that does not parse
  is answered ``calc: cannot parse ...`` and counted in ``info["invalid_tool_calls"]``.
  With ``tool=False`` every call is answered ``calc: no calculator here ...``.
- **Answer**: any other message ends the episode (``terminated``): reward 1.0 when its first
  number (digits one space apart read as one number, as the env writes them) is the answer,
  else 0.0.
- **Turn limit**: at most ``max_turns`` messages (default 3); a tool call as the last one
  ends the episode ``truncated``, reward 0.
- **Info** at the end: ``correct`` (bool), ``tool_calls`` (every ``calc`` message, valid or
  not), ``invalid_tool_calls`` and ``turns``.

Held-out questions: a question ``(a, op, b)`` is an evaluation question when a hash of its text
falls in the evaluation bucket (:data:`EVAL_FRACTION` of all questions). Seeds below
:data:`EVAL_SEED_START` draw training questions only, seeds from it on evaluation questions
only (each by rejection from the seed's own generator), so training and evaluation episodes
never share a question, for any seeds. :func:`train_seeds` and :func:`eval_seeds` give
seeds of each side; :func:`balanced_train_seeds` training seeds whose answer lengths come in
equal shares, for expert transcripts.
"""

from __future__ import annotations

import difflib
import hashlib
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlalign.errors import UserError
from rlalign.io import write_jsonl

EVAL_SEED_START = 1_000_000_000
"""Seeds ``>= EVAL_SEED_START`` are evaluation episodes; seeds below it training episodes."""
EVAL_FRACTION = 0.1
"""The share of all questions held out for evaluation (by a hash of the question)."""
OPS = ("plus", "minus")
MAX_DIGITS = 18  # a longer number in a tool call is an error, not a huge int to print

_OP_WORDS = {"plus": "plus", "+": "plus", "minus": "minus", "-": "minus"}
_NUMBER = r"\d(?: ?\d)*"
_CALL_RE = re.compile(
    rf"calc\s+(?P<a>{_NUMBER})\s*(?P<op>plus|minus|\+|-)\s*(?P<b>{_NUMBER})\s*",
    re.IGNORECASE,
)
_ANSWER_RE = re.compile(rf"(?:- ?)?{_NUMBER}")
NO_TOOL = "calc: no calculator here; answer with the number"


@dataclass(frozen=True)
class Question:
    """One episode's question: ``a op b`` and its ``answer``."""

    a: int
    op: str
    b: int

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "plus" else self.a - self.b

    @property
    def expression(self) -> str:
        return f"{spell(self.a)} {self.op} {spell(self.b)}"

    @property
    def text(self) -> str:
        return f"What is {self.expression}?"


def spell(n: int) -> str:
    """``8728`` -> ``"8 7 2 8"``: one token a digit (see the module docstring)."""
    sign = "-" if n < 0 else ""
    return sign + " ".join(str(abs(n)))


def read_number(text: str) -> int | None:
    """The first number of ``text``, digits one space apart read as one (``"8 7 2 8"`` ->
    8728, ``"-1 2"`` and ``"- 1 2"`` -> -12), or None when there is none."""
    found = _ANSWER_RE.search(text)
    return int(found.group().replace(" ", "")) if found else None


def is_eval_question(q: Question) -> bool:
    """Whether ``q`` is held out: ``blake2b("a op b") mod 10_000 < EVAL_FRACTION * 10_000``.

    A hash of the question, not of the seed, so that no two seeds on different sides can
    draw the same question."""
    digest = hashlib.blake2b(f"{q.a} {q.op} {q.b}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 < EVAL_FRACTION * 10_000


def question(seed: int, *, digits: int = 4, ops: Sequence[str] = OPS) -> Question:
    """The question of episode ``seed``: drawn from ``random.Random(seed)`` until it is on the
    seed's side (training below :data:`EVAL_SEED_START`, evaluation from it on)."""
    _check_shape(digits, ops)
    rng = random.Random(seed)
    held_out = seed >= EVAL_SEED_START
    low, high = 10 ** (digits - 1), 10**digits - 1
    while True:
        op = rng.choice(tuple(ops))
        a, b = rng.randint(low, high), rng.randint(low, high)
        if op == "minus" and a < b:
            a, b = b, a
        q = Question(a, op, b)
        if is_eval_question(q) == held_out:
            return q


def train_seeds(n: int, seed: int = 0) -> list[int]:
    """``n`` distinct training seeds, sampled (by ``seed``) below :data:`EVAL_SEED_START`."""
    if n < 0:
        raise UserError(f"the number of episodes must be >= 0, got {n}")
    return random.Random(seed).sample(range(EVAL_SEED_START), n)


def balanced_train_seeds(
    n: int, seed: int = 0, *, digits: int = 4, ops: Sequence[str] = OPS
) -> list[int]:
    """``n`` distinct training seeds whose answers have ``digits - 1``, ``digits`` and
    ``digits + 1`` digits in equal shares (shorter answers as they come).

    Uniform operands make some answer lengths rare (a 3-digit difference of two 4-digit numbers
    is one question in ten), and a small model copies a number of a length it rarely saw
    wrongly. Seeds are drawn as in :func:`train_seeds`; a seed is kept while its answer length
    ``L`` has fewer than ``ceil(n / 3)`` seeds, so the split rule is untouched: every seed is a
    training seed. The ``digits + 1`` and ``digits`` quotas fill first, so the last third goes
    to ``digits - 1`` and the few shorter answers together."""
    if n < 0:
        raise UserError(f"the number of episodes must be >= 0, got {n}")
    _check_shape(digits, ops)
    quota = -(-n // 3)
    rng, seen, kept = random.Random(seed), set(), []
    counts: dict[int, int] = {}
    while len(kept) < n:
        s = rng.randrange(EVAL_SEED_START)
        if s in seen:
            continue
        seen.add(s)
        length = len(str(question(s, digits=digits, ops=ops).answer))
        if counts.get(length, 0) < quota:
            counts[length] = counts.get(length, 0) + 1
            kept.append(s)
    return kept


def eval_seeds(n: int) -> list[int]:
    """The first ``n`` evaluation seeds: ``EVAL_SEED_START, EVAL_SEED_START + 1, ...``."""
    if n < 0:
        raise UserError(f"the number of episodes must be >= 0, got {n}")
    return list(range(EVAL_SEED_START, EVAL_SEED_START + n))


def _check_shape(digits: int, ops: Sequence[str]) -> None:
    # From 2 digits on, each side of the split holds thousands of questions to draw from.
    if not isinstance(digits, int) or not 2 <= digits <= 9:
        raise UserError(f"calculator: digits must be an integer in 2..9, got {digits!r}")
    if isinstance(ops, str) or not ops or any(op not in OPS for op in ops):
        raise UserError(
            f"calculator: ops must be a non-empty list of {', '.join(OPS)}, got {ops!r}"
        )


def calc(message: str) -> str | None:
    """The tool: ``"calc 1 2 plus 3 4"`` -> ``"= 4 6"``; None when the call does not parse."""
    match = _CALL_RE.fullmatch(message.strip())
    if match is None:
        return None
    a, b = (match.group(k).replace(" ", "") for k in ("a", "b"))
    if len(a) > MAX_DIGITS or len(b) > MAX_DIGITS:
        return None
    op = _OP_WORDS[match.group("op").lower()]
    return "= " + spell(Question(int(a), op, int(b)).answer)


def is_tool_call(message: str) -> bool:
    """A message whose first word is ``calc`` (any case) calls the tool."""
    words = message.split(maxsplit=1)
    return bool(words) and words[0].lower() == "calc"


class CalculatorEnv:
    """The calculator episode as a :class:`~rlalign.envs.base.TextEnv` (see the module)."""

    actions: tuple[str, ...] | None = None

    def __init__(
        self,
        *,
        tool: bool = True,
        max_turns: int = 3,
        digits: int = 4,
        ops: Sequence[str] = OPS,
        seed: int = 0,
    ) -> None:
        if not isinstance(max_turns, int) or max_turns < 1:
            raise UserError(f"calculator: max_turns must be an integer >= 1, got {max_turns!r}")
        _check_shape(digits, ops)
        self.tool = bool(tool)
        self.max_turns = max_turns
        self.digits = digits
        self.ops = tuple(ops)
        self._seeds = random.Random(seed)  # seeds for reset(seed=None): training ones
        self._question: Question | None = None
        self._done = True

    def reset(self, *, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        if seed is None:
            seed = self._seeds.randrange(EVAL_SEED_START)
        self._question = question(seed, digits=self.digits, ops=self.ops)
        self._turns = self._tool_calls = self._invalid = 0
        self._done = False
        split = "eval" if seed >= EVAL_SEED_START else "train"
        return self._question.text, {"question": self._question.text, "split": split}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._done or self._question is None:
            raise RuntimeError("step() on a finished episode: call reset() first")
        self._turns += 1
        if is_tool_call(action):
            self._tool_calls += 1
            output = calc(action) if self.tool else NO_TOOL
            if output is None:
                self._invalid += 1
                shown = action.strip()
                shown = shown if len(shown) <= 40 else shown[:37] + "..."  # short observations
                output = f"calc: cannot parse {shown!r}; write e.g. calc 1 2 plus 3 4"
            truncated = self._turns >= self.max_turns
            return output, 0.0, False, truncated, self._info(truncated, correct=False)
        correct = read_number(action) == self._question.answer
        return "", float(correct), True, False, self._info(True, correct=correct)

    def _info(self, done: bool, *, correct: bool) -> dict[str, Any]:
        info: dict[str, Any] = {"tool_calls": self._tool_calls, "invalid_tool_calls": self._invalid}
        if done:
            self._done = True
            info.update(correct=correct, turns=self._turns)
        return info

    def eval_seeds(self, n: int) -> list[int]:
        """The seeds of ``n`` held-out episodes (:func:`eval_seeds`): RL evaluates on them."""
        return eval_seeds(n)

    def close(self) -> None:
        self._done = True


_OPTIONS = ("tool", "max_turns", "digits", "ops", "seed")


def make_env(**kwargs: Any) -> CalculatorEnv:
    """A :class:`CalculatorEnv`; options ``tool`` (default True), ``max_turns`` (3),
    ``digits`` (4), ``ops`` (``("plus", "minus")``) and ``seed`` (0, the source of seeds for
    ``reset(seed=None)``)."""
    for key in kwargs:
        if key not in _OPTIONS:
            close = difflib.get_close_matches(key, _OPTIONS, n=1)
            hint = f", did you mean '{close[0]}'?" if close else f" (known: {', '.join(_OPTIONS)})"
            raise UserError(f"calculator: unknown option '{key}'{hint}")
    return CalculatorEnv(**kwargs)


def expert_messages(
    seed: int, tool: bool = True, *, digits: int = 4, ops: Sequence[str] = OPS
) -> list[dict[str, str]]:
    """The ideal conversation of episode ``seed``: question, tool call, tool output, answer
    (without the tool: question, answer). User turns are the env's observations."""
    q = question(seed, digits=digits, ops=ops)
    answer = {"role": "assistant", "content": f"It is {spell(q.answer)}."}
    if not tool:
        return [{"role": "user", "content": q.text}, answer]
    return [
        {"role": "user", "content": q.text},
        {"role": "assistant", "content": f"calc {q.expression}"},
        {"role": "user", "content": f"= {spell(q.answer)}"},
        answer,
    ]


def write_expert_transcripts(
    path: str | Path,
    episodes: int,
    seed: int = 0,
    *,
    tool: bool = True,
    digits: int = 4,
    ops: Sequence[str] = OPS,
    balanced: bool = False,
) -> int:
    """Write the expert conversations of ``train_seeds(episodes, seed)`` (``balanced``:
    :func:`balanced_train_seeds`) as SFT JSONL rows ``{"messages": [...], "seed": s}``
    (atomically); returns the number of rows."""
    if episodes < 1:
        raise UserError(f"calculator transcripts: episodes must be >= 1, got {episodes}")
    if balanced:
        seeds = balanced_train_seeds(episodes, seed, digits=digits, ops=ops)
    else:
        seeds = train_seeds(episodes, seed)
    rows = [
        {"messages": expert_messages(s, tool, digits=digits, ops=ops), "seed": s} for s in seeds
    ]
    write_jsonl(path, rows)
    return len(rows)


def play_episode(
    env: Any, respond: Callable[[list[dict[str, str]]], str], seed: int
) -> dict[str, Any]:
    """Play episode ``seed`` of ``env`` with ``respond(messages) -> next message``.

    ``messages`` is the conversation so far in chat format (observations as user turns, the
    player's messages as assistant turns). Returns ``{"return", "turns", "correct",
    "tool_calls", "invalid_tool_calls", "messages"}``.
    """
    observation, _ = env.reset(seed=seed)
    messages = [{"role": "user", "content": observation}]
    total, turns, info = 0.0, 0, {}
    while True:
        action = respond(list(messages))
        messages.append({"role": "assistant", "content": action})
        observation, reward, terminated, truncated, info = env.step(action)
        total += reward
        turns += 1
        if terminated or truncated:
            break
        messages.append({"role": "user", "content": observation})
    return {
        "return": total,
        "turns": turns,
        "correct": bool(info.get("correct", False)),
        "tool_calls": int(info.get("tool_calls", 0)),
        "invalid_tool_calls": int(info.get("invalid_tool_calls", 0)),
        "messages": messages,
    }
