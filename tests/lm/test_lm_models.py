"""Models: presets, creation, save/load through plain transformers, resolve, bad directories."""

from __future__ import annotations

import json

import pytest
import torch

from rlalign.errors import UserError
from rlalign.lm.models import PRESETS, count_parameters, create_model, load_model, resolve_model

from .conftest import make_model


def test_preset_sizes():
    # tiny ~1-3M and small ~25M parameters with a 4096-token vocabulary (built on the meta
    # device: only shapes matter, nothing is allocated).
    with torch.device("meta"):
        tiny = create_model("tiny", 4096)
        small = create_model("small", 4096)
    assert 1_000_000 <= count_parameters(tiny) <= 3_000_000
    assert 20_000_000 <= count_parameters(small) <= 30_000_000
    for preset in PRESETS.values():
        assert preset.hidden_size % 64 == 0 and preset.intermediate_size % 64 == 0
        assert (preset.hidden_size // preset.num_attention_heads) % 32 == 0


def test_create_model_seed_and_overrides():
    a = create_model("tiny", 300, seed=3, num_hidden_layers=1)
    b = create_model("tiny", 300, seed=3, num_hidden_layers=1)
    c = create_model("tiny", 300, seed=4, num_hidden_layers=1)
    state = torch.get_rng_state()
    create_model("tiny", 300, seed=5, num_hidden_layers=1)
    assert torch.equal(state, torch.get_rng_state())  # seeding does not disturb the caller
    assert a.config.num_hidden_layers == 1 and a.config.vocab_size == 300
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters(), strict=True))
    assert not a.training


def test_create_model_bad_input():
    with pytest.raises(UserError, match="unknown model preset 'huge'"):
        create_model("huge", 100)
    with pytest.raises(UserError, match="vocab_size"):
        create_model("tiny", 0)
    with pytest.raises(UserError, match="invalid model settings"):
        create_model("tiny", 100, num_attention_heads=3)  # 128 not divisible by 3


def test_save_load_round_trip_with_plain_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    model = create_model("tiny", 300, seed=0, num_hidden_layers=1, max_position_embeddings=64)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    ids = torch.randint(0, 300, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        for loaded in (AutoModelForCausalLM.from_pretrained(tmp_path), load_model(tmp_path)):
            torch.testing.assert_close(loaded(input_ids=ids).logits, ref, rtol=0, atol=0)


@pytest.mark.parametrize("arch_name", ["llama", "qwen2", "gpt2"])
def test_load_and_resolve_any_decoder(tmp_path, arch_name):
    model = make_model(arch_name)
    model.save_pretrained(tmp_path)
    loaded = resolve_model(tmp_path, vocab_size=97)
    assert type(loaded) is type(model)
    bf16 = load_model(tmp_path, dtype=torch.bfloat16)
    assert next(bf16.parameters()).dtype == torch.bfloat16
    # a checkpoint saved in bf16 (as most Hub models are) trains on fp32 weights by default
    bf16.save_pretrained(tmp_path / "bf16")
    assert {p.dtype for p in load_model(tmp_path / "bf16").parameters()} == {torch.float32}
    with pytest.raises(UserError, match="embeds only 97"):
        resolve_model(tmp_path, vocab_size=500)


def test_resolve_preset_and_unknown(tmp_path):
    m = resolve_model("tiny", 256, seed=0, num_hidden_layers=1)
    assert m.config.vocab_size == 256
    with pytest.raises(UserError, match="needs the vocabulary size"):
        resolve_model("tiny")
    with pytest.raises(UserError, match="neither a preset"):
        resolve_model(tmp_path / "missing", 256)


def test_load_model_bad_directories(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_model(tmp_path / "missing")
    with pytest.raises(UserError, match=r"no config\.json"):
        load_model(tmp_path)
    # A config that is not a causal LM (T5 is an encoder-decoder)
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(UserError, match="not a causal"):
        load_model(t5)
    # An encoder (BERT: transformers has a causal head for it, used only with is_decoder=True)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UserError, match="not a causal"):
        load_model(bert)
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "is_decoder": True}))
    with pytest.raises(UserError, match="no \\*\\.safetensors"):
        load_model(bert)  # accepted as a causal LM; fails later, for want of weights
    # A causal LM config without safetensors weights (pickles are refused)
    llama = tmp_path / "llama"
    make_model("llama").config.save_pretrained(llama)
    (llama / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(UserError, match="safetensors"):
        load_model(llama)
