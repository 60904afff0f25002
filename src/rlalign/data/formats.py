"""Readers for the dataset formats of the Hugging Face ecosystem, with ``file:line`` errors.

Each reader takes what :func:`rlalign.data.tables.read_rows` reads (a ``.jsonl``, ``.json``,
``.parquet``, ``.csv`` file, a ``save_to_disk`` directory, a ``datasets.Dataset`` or a list of
dicts) and checks every row the same way, naming the row (``file:line`` or ``file: row i``):

- SFT: ``{"messages": [{"role": "user"|"system"|"assistant", "content": str}, ...]}`` (ending
  with an assistant turn; no assistant turn empty), ``{"prompt": str, "completion": str}``
  (a non-empty completion), or TRL's conversational prompt-completion (``prompt`` and
  ``completion`` as lists of messages, one conversation).
- Preferences and RL prompts also take TRL's conversational forms where a field is one message
  (``"prompt": [{"role": "user", "content": ...}]``, ``"chosen": [{"role": "assistant", ...}]``)
  and its implicit-prompt preference form (``chosen``/``rejected`` as a user and an assistant
  message each, no ``prompt``); longer conversations in those fields are refused.
- Preferences: ``{"prompt": str, "chosen": str, "rejected": str}`` (optional ``margin``, and
  ``kind``: a label the reward model's held-out accuracy is broken down by).
- RL prompts: ``{"prompt": str, ...}``; every other field reaches the reward functions as a
  keyword argument, so none may be named ``prompts`` or ``completions``.
"""

from __future__ import annotations

import math
from typing import Any

from rlalign.data.tables import read_rows
from rlalign.errors import UserError

ROLES = ("system", "user", "assistant")
RESERVED_FIELDS = ("prompts", "completions")  # a reward function's own arguments
FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max


def _require_str(where: str, row: dict[str, Any], key: str, hint: str = "") -> str:
    if key not in row:
        raise UserError(f"{where}: missing field '{key}'{hint}")
    value = row[key]
    if not isinstance(value, str):
        raise UserError(f"{where}: field '{key}' must be a string, got {type(value).__name__}")
    return value


def _conversation(where: str, messages: Any) -> list[dict[str, str]]:
    """A checked conversation: a non-empty list of ``{"role", "content"}`` ending with a
    non-empty assistant turn."""
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: 'messages' must be a non-empty list")
    turns = []
    for j, m in enumerate(messages):
        if not isinstance(m, dict):
            raise UserError(f"{where}: messages[{j}] must be an object")
        role = m.get("role")
        if role not in ROLES:
            raise UserError(
                f"{where}: messages[{j}].role must be one of {', '.join(ROLES)}, got {role!r}"
            )
        if not isinstance(m.get("content"), str):
            raise UserError(f"{where}: messages[{j}].content must be a string")
        turns.append({"role": role, "content": m["content"]})
    if not any(t["role"] == "assistant" for t in turns):
        raise UserError(f"{where}: conversation has no assistant turn (nothing to learn)")
    if turns[-1]["role"] != "assistant":
        raise UserError(
            f"{where}: conversation ends with a {turns[-1]['role']} turn "
            f"(messages[{len(turns) - 1}]) that no assistant turn answers; end it with "
            "the assistant's reply, or drop the last turn"
        )
    for j, t in enumerate(turns):
        if t["role"] == "assistant" and not t["content"].strip():
            raise UserError(
                f"{where}: messages[{j}] is an assistant turn with empty content "
                "(it would teach the model to say nothing); fill it in or drop the row"
            )
    return turns


def _one_message(where: str, row: dict[str, Any], key: str, role: str) -> None:
    """TRL's conversational form of a field holding one message (``[{"role": "user",
    "content": ...}]``) replaced, in ``row``, by its text; a string is left as it is."""
    value = row.get(key)
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        return  # not messages: the field's own check says what is wrong
    if (
        len(value) != 1
        or not isinstance(value[0], dict)
        or value[0].get("role") != role
        or not isinstance(value[0].get("content"), str)
    ):
        raise UserError(
            f"{where}: field '{key}' is a conversation of {len(value)} message(s); rlalign reads "
            f"a {key} that is one {role} message (or a string)"
        )
    row[key] = value[0]["content"]


def _implicit_prompt(where: str, row: dict[str, Any]) -> None:
    """TRL's implicit-prompt preference rows (``chosen`` and ``rejected`` as whole
    conversations of one user and one assistant message, no ``prompt``) split, in ``row``,
    into the shared prompt and the two answers."""
    if "prompt" in row or not isinstance(row.get("chosen"), list):
        return
    sides = []
    for key in ("chosen", "rejected"):
        value = row.get(key)
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(m, dict) for m in value)
                and [m.get("role") for m in value] == ["user", "assistant"]):  # fmt: skip
            raise UserError(
                f"{where}: without 'prompt', '{key}' must be one user and one assistant message "
                "(TRL's implicit-prompt form)"
            )
        sides.append(value)
    if sides[0][0].get("content") != sides[1][0].get("content"):
        raise UserError(f"{where}: 'chosen' and 'rejected' answer different user messages")
    row["prompt"] = [sides[0][0]]
    row["chosen"], row["rejected"] = [sides[0][1]], [sides[1][1]]


def load_sft(source: Any) -> list[list[dict[str, str]]]:
    """Conversations as lists of ``{"role", "content"}``; prompt/completion rows become a
    user turn and an assistant turn."""
    conversations = []
    for where, row in read_rows(source, what="SFT data"):
        if "messages" in row:
            conversations.append(_conversation(where, row["messages"]))
        elif isinstance(row.get("prompt"), list) or isinstance(row.get("completion"), list):
            # TRL's conversational prompt-completion: two lists of messages, one conversation
            prompt, completion = row.get("prompt"), row.get("completion")
            if not isinstance(prompt, list) or not isinstance(completion, list):
                raise UserError(
                    f"{where}: conversational 'prompt' and 'completion' must both be lists of "
                    "messages"
                )
            conversations.append(_conversation(where, prompt + completion))
        elif "prompt" in row or "completion" in row:
            prompt = _require_str(where, row, "prompt")
            completion = _require_str(where, row, "completion")
            if not completion.strip():
                raise UserError(
                    f"{where}: field 'completion' is empty (it would teach the model to "
                    "say nothing); fill it in or drop the row"
                )
            conversations.append(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
            )
        else:
            raise UserError(
                f"{where}: expected 'messages' or 'prompt'/'completion', got keys {sorted(row)}"
            )
    return conversations


def load_preferences(source: Any) -> list[dict[str, Any]]:
    """Preference pairs ``{"prompt", "chosen", "rejected", "margin", "kind"}`` (margin default
    0, kind default None)."""
    pairs = []
    for where, row in read_rows(source, what="preference data"):
        row = dict(row)
        _implicit_prompt(where, row)
        _one_message(where, row, "prompt", "user")
        _one_message(where, row, "chosen", "assistant")
        _one_message(where, row, "rejected", "assistant")
        pair: dict[str, Any] = {
            key: _require_str(where, row, key) for key in ("prompt", "chosen", "rejected")
        }
        margin = row.get("margin", 0.0)
        if not isinstance(margin, int | float) or isinstance(margin, bool):
            raise UserError(f"{where}: field 'margin' must be a number")
        try:
            margin = float(margin)
        except OverflowError:  # an integer of hundreds of digits
            margin = math.inf
        # JSON readers accept NaN and Infinity; the loss holds margins as float32
        if not abs(margin) <= FLOAT32_MAX:
            raise UserError(
                f"{where}: field 'margin' must be a finite number within float32's "
                f"range (+-3.4e38), got {margin}"
            )
        pair["margin"] = margin
        kind = row.get("kind")
        if kind is not None and not isinstance(kind, str):
            raise UserError(f"{where}: field 'kind' must be a string")
        pair["kind"] = kind
        pairs.append(pair)
    return pairs


def load_prompts(source: Any) -> list[dict[str, Any]]:
    """RL prompt rows; ``prompt`` is required, other fields are kept for the rewards.

    Each row also gets ``_where`` (``file:line`` or ``file: row i``) for error messages; fields
    starting with an underscore are not passed to reward functions.
    """
    rows = []
    for where, row in read_rows(source, what="RL prompt"):
        row = dict(row)
        _one_message(where, row, "prompt", "user")
        _require_str(where, row, "prompt", hint=' (each line needs {"prompt": "..."})')
        for key in (k for k in RESERVED_FIELDS if k in row):
            raise UserError(
                f"{where}: field '{key}' has a reserved name: reward functions are "
                "called as fn(prompts, completions, **fields), so a field may not be named "
                f"{' or '.join(RESERVED_FIELDS)}; rename the field"
            )
        rows.append({**row, "_where": where})
    return rows
