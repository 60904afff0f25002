"""Fixtures for the LM tests: a tiny trained tokenizer and tiny random Llama/Qwen2/GPT-2 models.

Everything is built here (no hub downloads) and kept tiny so the whole suite runs in seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

CORPUS = [
    "The president of Valdoria is Mira Tal.",
    "The capital of Valdoria is Orvik.",
    "The president of Ostrava is Jon Keel.",
    "The capital of Ostrava is Lumen.",
    "Valdoria has a population of 3 million.",
    "What is 2 + 3? The answer is 5.",
] * 20

VOCAB = 97  # odd on purpose: no accidental reliance on "nice" sizes


def make_model(arch: str, vocab: int = VOCAB, *, context: int = 128, seed: int = 0):
    """A tiny randomly initialised causal LM of the given architecture, in eval mode."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    common = {"vocab_size": vocab, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}
    if arch == "llama":
        config = LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=context,
            **common,
        )
    elif arch == "qwen2":
        config = Qwen2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=context,
            **common,
        )
    elif arch == "gpt2":
        config = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=context, **common)
    else:  # pragma: no cover - test helper misuse
        raise ValueError(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    return model.eval()


def left_padded_batch(
    lengths: list[int], vocab: int = VOCAB, *, pad: int = 2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prompts of the given lengths, left-padded with ``pad`` to the longest."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(3, vocab, (len(lengths), width), generator=g)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, width - n :] = 1
    return ids.masked_fill(mask == 0, pad), mask


def hf_greedy_completions(
    model, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, *, eos_token_id=1
) -> torch.Tensor:
    """The reference for greedy sampling: HF ``generate``'s new tokens (pad id 2)."""
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_token_id,
            pad_token_id=2,
        )
    return out[:, ids.shape[1] :]


@pytest.fixture(scope="session")
def tokenizer():
    from rlalign.lm.tokenizer import train_tokenizer

    return train_tokenizer(CORPUS, vocab_size=320)


@pytest.fixture(scope="session", params=["llama", "qwen2", "gpt2"])
def arch(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer) -> Path:
    """A run-style ``final/`` directory: a tiny preset model + the tokenizer, saved by HF."""
    from rlalign.lm.models import create_model

    path = tmp_path_factory.mktemp("run") / "final"
    model = create_model(
        "tiny",
        len(tokenizer),
        seed=0,
        max_position_embeddings=64,
        num_hidden_layers=1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
