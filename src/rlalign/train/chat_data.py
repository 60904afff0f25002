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

from dataclasses import dataclass
from typing import Any

import torch

from rlalign.errors import UserError
from rlalign.train.data import BlockBatches
from rlalign.train.losses import IGNORE_INDEX


@dataclass
class ChatExample:
    input_ids: list[int]
    labels: list[int]


def render_with_spans(
    tokenizer: Any, messages: list[dict[str, str]]
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant turn."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = (
            tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
            if i
            else ""
        )
        through = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
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


def encode_conversation(
    tokenizer: Any, messages: list[dict[str, str]], max_length: int
) -> ChatExample | None:
    """Tokens and assistant-only labels, truncated to ``max_length``; None if no label is left."""
    ids, labels = tokenize_with_labels(tokenizer, messages)
    ids, labels = ids[:max_length], labels[:max_length]
    if all(x == IGNORE_INDEX for x in labels[1:]):
        return None
    return ChatExample(ids, labels)


def encode_pair(tokenizer: Any, prompt: str, response: str, max_length: int) -> ChatExample | None:
    """A single user prompt and assistant response (preference pairs, RL prompts)."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return encode_conversation(tokenizer, messages, max_length)


def pad_right(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into ``(ids, attention_mask)`` tensors."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def collate(examples: list[ChatExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of examples into ``input_ids``, ``attention_mask``, ``labels``."""
    ids, mask = pad_right([e.input_ids for e in examples], pad_id)
    labels, _ = pad_right([e.labels for e in examples], IGNORE_INDEX)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class ExampleBatches:
    """Endless, resumable, shuffled micro-batches of variable-length examples.

    The epoch order and position come from :class:`~rlalign.train.data.BlockBatches` over the
    example indices, so resuming is exact; ``collate_fn`` builds each padded batch.
    """

    def __init__(self, examples: list[Any], batch_size: int, *, seed: int, collate_fn) -> None:
        self.examples = examples
        self.collate_fn = collate_fn
        # BlockBatches shuffles and resumes rows of tensors; here each row is an example index
        # (stored under the key it counts rows by).
        self._index = BlockBatches(
            {"input_ids": torch.arange(len(examples))}, batch_size, seed=seed
        )

    def __iter__(self) -> ExampleBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        rows = next(self._index)["input_ids"].tolist()
        return self.collate_fn([self.examples[i] for i in rows])

    def state_dict(self) -> dict[str, Any]:
        return self._index.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._index.load_state_dict(state)


def split_examples(examples: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """A seeded held-out split (at least one held-out example when ``fraction > 0``)."""
    if fraction <= 0 or len(examples) < 2:
        return list(examples), []
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(examples), generator=gen).tolist()
    n_eval = max(1, round(len(examples) * fraction))
    return [examples[i] for i in order[n_eval:]], [examples[i] for i in order[:n_eval]]
