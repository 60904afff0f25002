"""Tokenizer: byte-level BPE round trips, special tokens, chat template, save/load, foreign ones."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlalign.errors import UserError
from rlalign.lm.tokenizer import (
    BOS,
    CHAT_TEMPLATE,
    EOS,
    PAD,
    ensure_pad_and_template,
    load_tokenizer,
    train_tokenizer,
)


def test_special_tokens_and_bos(tokenizer):
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (BOS, EOS, PAD)
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    ids = tokenizer("The president of Valdoria is")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer("x", add_special_tokens=False)["input_ids"][0] != tokenizer.bos_token_id
    # BPE learned merges from the corpus: frequent words are far fewer tokens than bytes
    assert len(ids) < len("The president of Valdoria is") // 2
    assert len(tokenizer) <= 320


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_round_trip_any_text(tokenizer, text):
    # Byte-level: any Unicode text (emoji, accents, control chars) encodes and decodes exactly.
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_chat_template_layout(tokenizer):
    messages = [
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": "5"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == f"{BOS}<|user|>\nWhat is 2 + 3?\n<|assistant|>\n5{EOS}\n"
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == f"{BOS}<|user|>\nWhat is 2 + 3?\n<|assistant|>\n"
    # Role markers are single tokens; eos ends the assistant turn
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<|assistant|>") in ids
    assert ids.count(tokenizer.eos_token_id) == 1
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1


def test_chat_template_rejects_unknown_role(tokenizer):
    with pytest.raises(Exception, match="unknown chat role"):
        tokenizer.apply_chat_template([{"role": "robot", "content": "x"}], tokenize=False)


def test_save_load_round_trip(tmp_path, tokenizer):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    for loaded in (AutoTokenizer.from_pretrained(tmp_path), load_tokenizer(tmp_path)):
        text = "The capital of Ostrava is Lumen. 🚗"
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert loaded.chat_template == CHAT_TEMPLATE
        assert loaded.pad_token_id == tokenizer.pad_token_id
        assert loaded.eos_token_id == tokenizer.eos_token_id
        assert loaded.padding_side == "left"


def test_bad_input():
    with pytest.raises(UserError, match="too small"):
        train_tokenizer(["abc"], vocab_size=100)
    with pytest.raises(UserError, match="empty corpus"):
        train_tokenizer(["", ""], vocab_size=300)
    with pytest.raises(UserError, match="expects strings"):
        train_tokenizer([b"bytes"], vocab_size=300)  # type: ignore[list-item]


def test_load_tokenizer_missing(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(UserError, match="no tokenizer"):
        load_tokenizer(tmp_path)


def test_ensure_pad_and_template_on_foreign_tokenizer(tokenizer):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    # A "foreign" tokenizer: same vocabulary, but no pad token and no chat template.
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    foreign = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS)
    assert foreign.pad_token is None and not foreign.chat_template
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = ensure_pad_and_template(foreign)
    messages = [str(w.message) for w in caught]
    assert any("no pad token" in m for m in messages)
    assert any("no chat template" in m for m in messages)
    assert out.pad_token == EOS and out.padding_side == "left"
    text = out.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|user|>\nhi\n<|assistant|>\n"
    # A tokenizer that has everything is left alone, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ensure_pad_and_template(tokenizer) is tokenizer


def test_ensure_pad_adds_token_when_nothing_to_reuse(tokenizer):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    bare = PreTrainedTokenizerFast(tokenizer_object=backend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ensure_pad_and_template(bare)
    assert any("added" in str(w.message) for w in caught)
    assert bare.pad_token == PAD


def test_a_saved_tokenizer_beside_a_qwen2_config_keeps_its_vocabulary(tmp_path):
    """AutoTokenizer would build a Qwen2Tokenizer there and add <|endoftext|>."""
    from transformers import Qwen2Config

    from rlalign.lm.tokenizer import load_tokenizer, train_tokenizer

    tok = train_tokenizer(["The capital of Valdoria is Orlen."] * 50, vocab_size=300)
    tok.save_pretrained(tmp_path)
    Qwen2Config(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, intermediate_size=64,
    ).save_pretrained(tmp_path)  # fmt: skip
    loaded = load_tokenizer(tmp_path)
    assert len(loaded) == len(tok)
    assert loaded("Valdoria")["input_ids"] == tok("Valdoria")["input_ids"]
    assert loaded.chat_template == tok.chat_template
