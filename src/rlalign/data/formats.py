"""Readers for the JSONL formats of the Hugging Face ecosystem, with ``file:line`` errors.

- SFT: ``{"messages": [{"role": "user"|"system"|"assistant", "content": str}, ...]}`` (at least
  one assistant turn) or ``{"prompt": str, "completion": str}``.
- Preferences: ``{"prompt": str, "chosen": str, "rejected": str}`` (optional ``margin``, and
  ``kind``: a label the reward model's held-out accuracy is broken down by).
- RL prompts: ``{"prompt": str, ...}``; every other field reaches the reward functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlalign.errors import UserError
from rlalign.io import read_jsonl

ROLES = ("system", "user", "assistant")


def _require_str(path: Path, lineno: int, row: dict[str, Any], key: str, hint: str = "") -> str:
    if key not in row:
        raise UserError(f"{path}:{lineno}: missing field '{key}'{hint}")
    value = row[key]
    if not isinstance(value, str):
        raise UserError(
            f"{path}:{lineno}: field '{key}' must be a string, got {type(value).__name__}"
        )
    return value


def load_sft(path: str | Path) -> list[list[dict[str, str]]]:
    """Conversations as lists of ``{"role", "content"}``; prompt/completion rows become a
    user turn and an assistant turn."""
    path = Path(path)
    conversations = []
    for lineno, row in read_jsonl(path, what="SFT data"):
        if "messages" in row:
            messages = row["messages"]
            if not isinstance(messages, list) or not messages:
                raise UserError(f"{path}:{lineno}: 'messages' must be a non-empty list")
            turns = []
            for j, m in enumerate(messages):
                if not isinstance(m, dict):
                    raise UserError(f"{path}:{lineno}: messages[{j}] must be an object")
                role = m.get("role")
                if role not in ROLES:
                    raise UserError(
                        f"{path}:{lineno}: messages[{j}].role must be one of "
                        f"{', '.join(ROLES)}, got {role!r}"
                    )
                if not isinstance(m.get("content"), str):
                    raise UserError(f"{path}:{lineno}: messages[{j}].content must be a string")
                turns.append({"role": role, "content": m["content"]})
            if not any(t["role"] == "assistant" for t in turns):
                raise UserError(
                    f"{path}:{lineno}: conversation has no assistant turn (nothing to learn)"
                )
            conversations.append(turns)
        elif "prompt" in row or "completion" in row:
            prompt = _require_str(path, lineno, row, "prompt")
            completion = _require_str(path, lineno, row, "completion")
            conversations.append(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
            )
        else:
            raise UserError(
                f"{path}:{lineno}: expected 'messages' or 'prompt'/'completion', "
                f"got keys {sorted(row)}"
            )
    return conversations


def load_preferences(path: str | Path) -> list[dict[str, Any]]:
    """Preference pairs ``{"prompt", "chosen", "rejected", "margin", "kind"}`` (margin default
    0, kind default None)."""
    path = Path(path)
    pairs = []
    for lineno, row in read_jsonl(path, what="preference data"):
        pair: dict[str, Any] = {
            key: _require_str(path, lineno, row, key) for key in ("prompt", "chosen", "rejected")
        }
        margin = row.get("margin", 0.0)
        if not isinstance(margin, int | float) or isinstance(margin, bool):
            raise UserError(f"{path}:{lineno}: field 'margin' must be a number")
        pair["margin"] = float(margin)
        kind = row.get("kind")
        if kind is not None and not isinstance(kind, str):
            raise UserError(f"{path}:{lineno}: field 'kind' must be a string")
        pair["kind"] = kind
        pairs.append(pair)
    return pairs


def load_prompts(path: str | Path) -> list[dict[str, Any]]:
    """RL prompt rows; ``prompt`` is required, other fields are kept for the rewards.

    Each row also gets ``_where`` (``file:line``) for error messages; fields starting with an
    underscore are not passed to reward functions.
    """
    path = Path(path)
    rows = []
    for lineno, row in read_jsonl(path, what="RL prompt"):
        _require_str(path, lineno, row, "prompt", hint=' (each line needs {"prompt": "..."})')
        rows.append({**row, "_where": f"{path}:{lineno}"})
    return rows
