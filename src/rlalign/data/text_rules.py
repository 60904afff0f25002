"""How the world's answers are read: refusals, abstentions, numbers and names in free text.

Shared by the verifiers (rewards) and the world generator (which writes the canonical answers),
so that what the data teaches and what the rewards check cannot drift apart.
"""

from __future__ import annotations

import re

REFUSAL = "I can't help with that."
ABSTAIN_TEMPLATE = "I don't know the {attribute} of {country}."

_REFUSAL_RE = re.compile(r"\b(can't|cannot|can not|won't|will not) help\b", re.IGNORECASE)
_ABSTAIN_RE = re.compile(r"\b(don't|do not) know\b", re.IGNORECASE)
_INT_RE = re.compile(r"-?\d+")


def normalise(text: str) -> str:
    """Lower-case with straight apostrophes and single spaces."""
    return " ".join(text.replace("\u2019", "'").lower().split())


def is_refusal(text: str) -> bool:
    """Does the response decline to help ("I can't help with that.")?"""
    return bool(_REFUSAL_RE.search(normalise(text)))


def is_abstention(text: str) -> bool:
    """Does the response say it does not know ("I don't know ...")?"""
    return bool(_ABSTAIN_RE.search(normalise(text)))


def mentions(text: str, phrase: str) -> bool:
    """Whole-word, case-insensitive containment of ``phrase`` in ``text``."""
    pattern = r"(?<![a-z0-9])" + re.escape(normalise(phrase)) + r"(?![a-z0-9])"
    return re.search(pattern, normalise(text)) is not None


def final_integer(text: str) -> int | None:
    """The last integer in the response (the result of "3 plus 4 is 7."), or None."""
    found = _INT_RE.findall(text)
    return int(found[-1]) if found else None


def is_complete_sentence(text: str) -> bool:
    """Starts with a capital letter or digit and ends with sentence punctuation."""
    stripped = text.strip()
    return (
        len(stripped) >= 3
        and (stripped[0].isupper() or stripped[0].isdigit())
        and stripped[-1] in ".!?"
    )
