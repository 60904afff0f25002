"""Small models, batch sources and corpora for the training-loop tests."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlalign.train.config import TrainingConfig

VOCAB = 64


def tiny_llama(seed: int = 0, vocab: int = VOCAB) -> LlamaForCausalLM:
    """A ~30k-parameter Llama built here (independent of rlalign.lm presets)."""
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


class RandomTokens:
    """A resumable batch source drawing random sequences from its own torch.Generator.

    Some labels are -100 (a random share per row), so micro-batches carry different numbers
    of loss terms -- the case where per-micro-batch averaging would be wrong.
    """

    def __init__(self, batch_size: int, seq_len: int = 12, seed: int = 0) -> None:
        self.batch_size, self.seq_len = batch_size, seq_len
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> RandomTokens:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        g = self.generator
        ids = torch.randint(0, VOCAB, (self.batch_size, self.seq_len), generator=g)
        keep = torch.rand(self.batch_size, self.seq_len, generator=g) < torch.rand(
            self.batch_size, 1, generator=g
        ).clamp_min(0.2)
        labels = torch.where(keep, ids, torch.full_like(ids, -100))
        return {"input_ids": ids, "labels": labels}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


def loop_config(tmp: Path, **overrides: Any) -> TrainingConfig:
    values: dict[str, Any] = {
        "data": "unused",
        "output_dir": str(tmp),
        "max_steps": 6,
        "learning_rate": 1e-2,
        "warmup_steps": 2,
        "weight_decay": 0.1,
        "per_device_train_batch_size": 4,
        "logging_steps": 1,
        "eval_steps": 1000,
        "save_steps": 1000,
        "disable_tqdm": True,
        "device": "cpu",
    }
    values.update(overrides)
    return TrainingConfig(**values)


def repetitive_corpus(path: Path, lines: int = 400, seed: int = 0) -> Path:
    """Sentences from a tiny grammar: learnable, so the loss must fall far below ln(vocab)."""
    rng = random.Random(seed)
    names = ["Mira Tal", "Oren Vask", "Ila Dune", "Tomas Rell"]
    lands = ["Valdoria", "Kestria", "Ombrel", "Sarnia"]
    text = []
    for _ in range(lines):
        i = rng.randrange(4)
        text.append(f"The president of {lands[i]} is {names[i]}.")
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


class FillsUp:
    """A binary file that runs out of space after ``room`` bytes: the write that does not fit
    stores what fits, then raises ENOSPC, as ``write(2)`` does on a full disk."""

    def __init__(self, file: Any, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            self.file.write(bytes(data[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()
