"""Pretraining data: read a corpus, hold out documents, pack tokens into fixed-length blocks.

- A corpus is a table with a ``text`` column, one document a row (``.jsonl``, ``.json``,
  ``.parquet``, ``.csv``, ``.tsv`` or a ``save_to_disk`` directory, read by
  :func:`rlalign.data.tables.read_rows`), or any other UTF-8 text file, read as one document per
  non-empty line.
- The held-out split is by document (a seeded shuffle), so no held-out sentence is trained on.
- Each document is encoded as ``<bos> text <eos>`` and the documents are concatenated and cut
  into blocks of ``block_size`` tokens (sequence packing: no padding in the middle, every
  position trains). The last, partial block is padded; its padding carries label -100.
- :class:`BlockBatches` is the resumable batch source the training loop draws from.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from rlalign.data.tables import TABLE_READERS, read_rows
from rlalign.errors import UserError
from rlalign.io import read_lines
from rlalign.lm.chat import IGNORE_INDEX

_ENCODE_CHUNK = 4096  # documents per tokenizer call (Rust-side batching, bounded memory)
# tables with a "text" column; any other file is read as plain text, one document a line
TABLE_SUFFIXES = (".jsonl", *TABLE_READERS)


def read_corpus(path: str | Path) -> list[str]:
    """The documents of a corpus; errors name the file (and line or row)."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() in TABLE_SUFFIXES:
        docs = []
        for where, row in read_rows(path, what="corpus"):
            text = row.get("text")
            if text is None:
                raise UserError(f'{where}: missing "text" field (expected {{"text": ...}})')
            if not isinstance(text, str):
                raise UserError(f'{where}: "text" must be a string, got {text!r:.40}')
            if text.strip():
                docs.append(text)
    else:
        # a line may hold several documents: str.splitlines also ends one at \f, \u2028, ...
        lines = read_lines(path, what="corpus", kinds=".txt or .jsonl")
        docs = [doc for _, line in lines for doc in line.splitlines() if doc.strip()]
    if not docs:
        raise UserError(f"{path}: corpus is empty (no non-blank text)")
    return docs


def split_documents(
    docs: Sequence[str], eval_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """``(train, held_out)``; at least one document each when ``eval_fraction > 0``."""
    if eval_fraction <= 0:
        return list(docs), []
    if len(docs) < 2:
        raise UserError(
            f"the corpus has {len(docs)} document(s); a held-out split needs at least 2 "
            "(add lines, or set eval_fraction=0)"
        )
    order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(seed)).tolist()
    n_eval = min(len(docs) - 1, max(1, round(eval_fraction * len(docs))))
    held = set(order[:n_eval])
    train = [d for i, d in enumerate(docs) if i not in held]
    return train, [d for i, d in enumerate(docs) if i in held]


def pack_documents(docs: Sequence[str], tokenizer: Any, block_size: int) -> dict[str, torch.Tensor]:
    """Encode and pack ``docs`` into ``{"input_ids", "labels"}`` of shape (blocks, block_size)."""
    if block_size < 2:
        raise UserError(f"block_size must be >= 2, got {block_size}")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if eos is None:
        raise UserError("the tokenizer has no eos token to separate documents")
    # A packed int64 array, not a Python list: 8 bytes a token, so large corpora fit in memory.
    stream = array("q")
    for start in range(0, len(docs), _ENCODE_CHUNK):
        chunk = list(docs[start : start + _ENCODE_CHUNK])
        for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            if bos is not None:
                stream.append(bos)
            stream.extend(ids)
            stream.append(eos)
    length = len(stream)
    n_blocks = -(-length // block_size)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    stream.extend([pad_id] * (n_blocks * block_size - length))
    ids = torch.frombuffer(stream, dtype=torch.int64).clone().view(n_blocks, block_size)
    labels = ids.clone()
    labels.view(-1)[length:] = IGNORE_INDEX
    return {"input_ids": ids, "labels": labels}


class BlockBatches:
    """Endless micro-batches of packed blocks, reshuffled each epoch, resumable.

    The order of epoch ``e`` is a permutation drawn from a generator seeded with
    ``(seed, e)``, so the state is just ``(epoch, position)`` -- small, exact, and independent
    of the global RNG. Batches run across epoch boundaries (no sample is dropped).
    """

    def __init__(
        self, blocks: dict[str, torch.Tensor], batch_size: int, *, seed: int, shuffle: bool = True
    ) -> None:
        self.blocks = blocks
        self.num_blocks = int(blocks["input_ids"].shape[0])
        if self.num_blocks == 0:
            raise UserError("no training blocks: the corpus produced no tokens")
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_blocks)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_blocks, generator=gen)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        chunks, needed = [], self.batch_size
        while needed:
            if self.position == self.num_blocks:
                self.epoch += 1
                self.position = 0
                self._order = self._epoch_order(self.epoch)
            take = min(needed, self.num_blocks - self.position)
            chunks.append(self._order[self.position : self.position + take])
            self.position += take
            needed -= take
        rows = torch.cat(chunks)
        return {key: value[rows] for key, value in self.blocks.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "num_blocks": self.num_blocks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_blocks"] != self.num_blocks:
            raise UserError(
                f"the checkpoint was made on {state['num_blocks']} training blocks, the data now "
                f"gives {self.num_blocks}: the corpus, tokenizer or block_size changed since"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._epoch_order(self.epoch)


def fixed_batches(blocks: dict[str, torch.Tensor], batch_size: int) -> list[dict[str, Any]]:
    """The held-out blocks in order, as batches (the last may be smaller)."""
    n = int(blocks["input_ids"].shape[0])
    return [
        {key: value[i : i + batch_size] for key, value in blocks.items()}
        for i in range(0, n, batch_size)
    ]


class RankShard:
    """This rank's share of a batch source that every rank reads alike.

    Every rank draws the same global stream of micro-batches (same seed, same order); of each
    run of ``world_size`` consecutive micro-batches, rank ``r`` keeps the ``r``-th. One
    optimizer step of ``k`` micro-batches per rank therefore covers exactly the ``k x
    world_size`` micro-batches a single process would take with ``k x world_size``
    accumulation steps, so the update is the same at any world size, and the source's state
    (a position in the global stream) resumes at any world size too.
    """

    def __init__(self, source: Any, rank: int, world_size: int) -> None:
        self.source = source
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> RankShard:
        return self

    def __next__(self) -> Any:
        mine = None
        for r in range(self.world_size):
            batch = next(self.source)
            if r == self.rank:
                mine = batch
        return mine

    def state_dict(self) -> dict[str, Any]:
        return self.source.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state)
