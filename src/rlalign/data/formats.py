"""Readers for the dataset formats of the Hugging Face ecosystem, with ``file:line`` errors.

Each reader takes what :func:`rlalign.data.tables.read_rows` reads (a ``.jsonl``, ``.json``,
``.parquet``, ``.csv`` file, a ``save_to_disk`` directory, a ``datasets.Dataset`` or a list of
dicts) and checks every row the same way, naming the row (``file:line`` or ``file: row i``):

- SFT: ``{"messages": [{"role": "user"|"system"|"assistant", "content": str}, ...]}`` (ending
  with an assistant turn; no assistant turn empty) or ``{"prompt": str, "completion": str}``
  (a non-empty completion).
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


def load_sft(source: Any) -> list[list[dict[str, str]]]:
    """Conversations as lists of ``{"role", "content"}``; prompt/completion rows become a
    user turn and an assistant turn."""
    conversations = []
    for where, row in read_rows(source, what="SFT data"):
        if "messages" in row:
            messages = row["messages"]
            if not isinstance(messages, list) or not messages:
                raise UserError(f"{where}: 'messages' must be a non-empty list")
            turns = []
            for j, m in enumerate(messages):
                if not isinstance(m, dict):
                    raise UserError(f"{where}: messages[{j}] must be an object")
                role = m.get("role")
                if role not in ROLES:
                    raise UserError(
                        f"{where}: messages[{j}].role must be one of "
                        f"{', '.join(ROLES)}, got {role!r}"
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
            conversations.append(turns)
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
        _require_str(where, row, "prompt", hint=' (each line needs {"prompt": "..."})')
        for key in (k for k in RESERVED_FIELDS if k in row):
            raise UserError(
                f"{where}: field '{key}' has a reserved name: reward functions are "
                "called as fn(prompts, completions, **fields), so a field may not be named "
                f"{' or '.join(RESERVED_FIELDS)}; rename the field"
            )
        rows.append({**row, "_where": where})
    return rows
