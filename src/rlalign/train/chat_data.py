"""Conversations as SFT training examples: tokens with assistant-only labels, in batches.

The rendering and labelling rules are :mod:`rlalign.lm.chat`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rlalign.lm.chat import IGNORE_INDEX, pad_right, tokenize_with_labels
from rlalign.train.data import BlockBatches


@dataclass
class ChatExample:
    input_ids: list[int]
    labels: list[int]


def encode_conversation(
    tokenizer: Any, messages: list[dict[str, str]], max_length: int | None
) -> ChatExample | None:
    """Tokens and assistant-only labels, truncated to ``max_length`` (None: whole); None if no
    label is left."""
    ids, labels = tokenize_with_labels(tokenizer, messages)
    return truncate_example(ChatExample(ids, labels), max_length)


def truncate_example(example: ChatExample, max_length: int | None) -> ChatExample | None:
    """``example`` cut to its first ``max_length`` tokens; None if no label is left."""
    ids, labels = example.input_ids[:max_length], example.labels[:max_length]
    if all(x == IGNORE_INDEX for x in labels[1:]):
        return None
    return ChatExample(ids, labels)


def encode_pair(tokenizer: Any, prompt: str, response: str, max_length: int) -> ChatExample | None:
    """A single user prompt and assistant response (preference pairs, RL prompts)."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return encode_conversation(tokenizer, messages, max_length)


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
    """A seeded held-out split: at least one held-out example when ``fraction > 0``, and at
    least one to train on."""
    if fraction <= 0 or len(examples) < 2:
        return list(examples), []
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(examples), generator=gen).tolist()
    n_eval = min(max(1, round(len(examples) * fraction)), len(examples) - 1)  # one left to train
    return [examples[i] for i in order[n_eval:]], [examples[i] for i in order[:n_eval]]
