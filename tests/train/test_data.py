"""Corpus reading, the held-out split, sequence packing and the resumable block source."""

from __future__ import annotations

import json

import pytest
import torch

from rlalign.errors import UserError
from rlalign.lm.tokenizer import train_tokenizer
from rlalign.train.data import (
    BlockBatches,
    fixed_batches,
    pack_documents,
    read_corpus,
    split_documents,
)


def test_reads_txt_lines_and_jsonl_text(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("first doc\n\n  \nsecond doc\n", encoding="utf-8")
    assert read_corpus(txt) == ["first doc", "second doc"]
    jl = tmp_path / "c.jsonl"
    jl.write_text("\n".join(json.dumps({"text": t}) for t in ["a b", "c\nd"]), encoding="utf-8")
    assert read_corpus(jl) == ["a b", "c\nd"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\n{"text": "broken"\n', r"c\.jsonl:2: invalid JSON"),
        ('{"text": "ok"}\n{"txt": "x"}\n', r'c\.jsonl:2: missing "text" field'),
        ('{"text": 3}\n', r'c\.jsonl:1: "text" must be a string'),
        ("", r"c\.jsonl: corpus file is empty"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "c.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        read_corpus(path)


def test_missing_and_blank_corpus(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_corpus(tmp_path / "nope.txt")
    (tmp_path / "blank.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(UserError, match="empty"):
        read_corpus(tmp_path / "blank.txt")


def test_split_is_seeded_disjoint_and_complete():
    docs = [f"doc {i}" for i in range(40)]
    train, held = split_documents(docs, 0.1, seed=7)
    assert len(held) == 4 and len(train) == 36
    assert sorted(train + held) == sorted(docs)
    assert split_documents(docs, 0.1, seed=7) == (train, held)
    assert split_documents(docs, 0.1, seed=8)[1] != held
    assert split_documents(docs, 0.0, seed=7) == (docs, [])
    with pytest.raises(UserError, match="at least 2"):
        split_documents(["only one"], 0.1, seed=0)


def test_packing_concatenates_bos_text_eos_and_pads_the_tail():
    docs = ["hello world", "a cat", "the end of it"]
    tok = train_tokenizer(docs * 5, 300, min_frequency=1)
    blocks = pack_documents(docs, tok, block_size=8)
    stream = []
    for d in docs:  # reference: each document as <bos> ids <eos>, back to back
        stream += [tok.bos_token_id, *tok(d, add_special_tokens=False)["input_ids"]]
        stream.append(tok.eos_token_id)
    ids, labels = blocks["input_ids"], blocks["labels"]
    assert ids.shape[1] == 8 and ids.shape[0] == -(-len(stream) // 8)
    assert ids.flatten()[: len(stream)].tolist() == stream
    assert labels.flatten()[: len(stream)].tolist() == stream
    assert (labels.flatten()[len(stream) :] == -100).all()


def test_block_batches_cover_each_epoch_and_resume_exactly():
    blocks = {"input_ids": torch.arange(10).view(10, 1), "labels": torch.arange(10).view(10, 1)}
    source = BlockBatches(blocks, 4, seed=1)
    first = [next(source)["input_ids"].flatten().tolist() for _ in range(5)]  # 20 = 2 epochs
    flat = [i for batch in first for i in batch]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert flat[:10] != flat[10:]  # reshuffled per epoch

    source = BlockBatches(blocks, 4, seed=1)
    next(source), next(source)
    state = source.state_dict()
    rest = [next(source)["input_ids"].flatten().tolist() for _ in range(3)]
    again = BlockBatches(blocks, 4, seed=1)
    again.load_state_dict(state)
    assert [next(again)["input_ids"].flatten().tolist() for _ in range(3)] == rest
    assert rest == first[2:]

    other = BlockBatches({k: v[:9] for k, v in blocks.items()}, 4, seed=1)
    with pytest.raises(UserError, match="changed"):
        other.load_state_dict(state)


def test_fixed_batches_keep_order_and_remainder():
    blocks = {"input_ids": torch.arange(5).view(5, 1)}
    sizes = [b["input_ids"].flatten().tolist() for b in fixed_batches(blocks, 2)]
    assert sizes == [[0, 1], [2, 3], [4]]
