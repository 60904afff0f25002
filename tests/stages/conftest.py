"""Shared fixtures: the world exported once, a tokenizer trained on its corpus, and a tiny
randomly initialised Llama saved as a model directory (no download, a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    from rlalign.data.world import World, WorldConfig

    path = tmp_path_factory.mktemp("world")
    World(WorldConfig(num_countries=8, num_unknown=6)).export(path)
    return path


@pytest.fixture(scope="session")
def base_model_dir(tmp_path_factory, world_dir) -> Path:
    """A tiny untrained causal LM + the world's tokenizer, as a model directory."""
    import json

    from rlalign.lm.models import create_model
    from rlalign.lm.tokenizer import train_tokenizer

    texts = [json.loads(x)["text"] for x in (world_dir / "corpus.jsonl").read_text().splitlines()]
    texts += [
        json.loads(x)["messages"][1]["content"]
        for x in (world_dir / "sft.jsonl").read_text().splitlines()
    ]
    tokenizer = train_tokenizer(texts, vocab_size=400)
    model = create_model(
        "tiny",
        len(tokenizer),
        max_position_embeddings=256,
        seed=0,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    path = tmp_path_factory.mktemp("base")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


WORDS = ["say", "a", "word", "red", "green", "blue", "cat", "dog", "sun", "moon"]


@pytest.fixture(scope="session")
def word_model_dir(tmp_path_factory) -> Path:
    """A bandit-like text task's policy: a word-level tokenizer (17 tokens) and a one-layer
    Llama, so that a random policy says the target word by chance but rarely."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rlalign.lm.models import create_model
    from rlalign.lm.tokenizer import BOS, CHAT_TEMPLATE, EOS, PAD, ROLE_TOKENS

    specials = [BOS, EOS, PAD, *ROLE_TOKENS, "[UNK]"]
    vocab = {tok: i for i, tok in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token="[UNK]",
        additional_special_tokens=list(ROLE_TOKENS),
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    model = create_model(
        "tiny",
        len(tokenizer),
        max_position_embeddings=64,
        seed=0,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    path = tmp_path_factory.mktemp("words")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def word_task(tmp_path_factory) -> dict[str, str]:
    """Prompts and a reward file for the bandit-like task: reward 1 when 'blue' is said."""
    import json

    root = tmp_path_factory.mktemp("word_task")
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": "say a word", "id": i}) + "\n" for i in range(8))
    )
    rewards = root / "rewards.py"
    rewards.write_text(
        "def says_blue(prompts, completions, **fields):\n"
        "    return [1.0 if 'blue' in c.split() else 0.0 for c in completions]\n"
    )
    return {"prompts": str(prompts), "reward": f"{rewards}:says_blue"}
