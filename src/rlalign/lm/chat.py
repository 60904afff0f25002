"""Conversations as training examples: chat-template rendering with assistant-only labels.

A conversation is rendered with the tokenizer's chat template and tokenized once. The label of
a token is the token itself inside an assistant turn (its content and the end-of-turn token the
template writes, e.g. ``<|eos|>``) and ``-100`` everywhere else, so SFT learns to answer, not
to predict the user's questions. Turn boundaries are found on the rendered *string*: rendering
``messages[:i]`` with the generation prompt is a prefix of rendering ``messages[:i+1]``, and the
token offsets map the assistant's characters to tokens (no assumption that BPE splits the same
way at the boundary).
"""

from __future__ import annotations

from typing import Any

import torch
from jinja2 import TemplateError

from rlalign.errors import UserError

IGNORE_INDEX = -100  # the label of a token that carries no loss (PyTorch's cross_entropy default)


def _render(tokenizer: Any, messages: list[dict[str, str]], **kwargs: Any) -> str:
    """The chat template's text; a template that refuses the conversation (Llama-2's and
    Mistral's insist on alternating roles, Gemma's has no system role) is a user error."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    except TemplateError as exc:
        raise UserError(
            f"the tokenizer's chat template refuses this conversation ({exc}); reorder its "
            "turns as the template requires, or use a model whose template accepts them"
        ) from None


def render_with_spans(
    tokenizer: Any, messages: list[dict[str, str]]
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant turn."""
    text = _render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        through = _render(tokenizer, messages[: i + 1])
        if i:
            before = _render(tokenizer, messages[:i], add_generation_prompt=True)
        else:
            # An opening assistant turn starts where the template puts its content, not at
            # character 0: the begin-of-text token and the turn's header are the template's.
            # Found with a marker no text holds (transformers renders no empty conversation).
            marker = "\x00content\x00"
            probe = _render(tokenizer, [{**message, "content": marker}])
            before = through[: probe.index(marker)] if marker in probe else ""
        if not text.startswith(through) or not through.startswith(before):
            raise UserError(
                "the tokenizer's chat template does not render conversations turn by turn "
                "(a prefix of the conversation renders differently); use a template whose "
                "rendering of the first turns is a prefix of the whole"
            )
        spans.append((len(before), len(through.rstrip())))
    return text, spans


def tokenize_with_labels(
    tokenizer: Any, messages: list[dict[str, str]], *, strip: bool = False
) -> tuple[list[int], list[int]]:
    """The rendered conversation's tokens (``strip``: without trailing whitespace) and their
    labels: the token itself inside an assistant turn, ``IGNORE_INDEX`` elsewhere."""
    text, spans = render_with_spans(tokenizer, messages)
    enc = tokenizer(
        text.rstrip() if strip else text, add_special_tokens=False, return_offsets_mapping=True
    )
    labels = [
        token
        if any(lo <= start and end <= hi and end > start for lo, hi in spans)
        else IGNORE_INDEX
        for token, (start, end) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
    ]
    return enc["input_ids"], labels


def pad_right(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into ``(ids, attention_mask)`` tensors."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask
