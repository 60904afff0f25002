"""Calling a Hugging Face causal LM the same way across transformers versions and wrappers.

The sampler and the log-prob passes need a few facts about a model that its API spells
differently from version to version, or hides behind a wrapper: the name of the KV-cache
argument, whether the forward can compute logits for the last positions only
(``logits_to_keep``), the causal LM inside DDP / a value head / PEFT, the context length, and a
temporary switch of the attention implementation.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def context_length(model: PreTrainedModel) -> int | None:
    """The model's maximum sequence length, from its config (``None`` when it has none)."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def cache_kwarg(model: PreTrainedModel) -> str:
    """Name of the KV-cache argument: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    params = inspect.signature(innermost(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def keep_logits(model: PreTrainedModel, n: int) -> dict[str, int]:
    """``{"logits_to_keep": n}`` when the model's forward supports it (every HF causal LM since
    transformers 4.45), else ``{}``: the LM head then runs on all positions (slower, correct)."""
    params = inspect.signature(innermost(model).forward).parameters
    return {"logits_to_keep": n} if "logits_to_keep" in params else {}


def innermost(model: Any) -> Any:
    """The causal LM inside wrappers that pass keyword arguments through: DDP (``module``),
    a value-head wrapper (``policy``), a PEFT model (``get_base_model()``)."""
    for _ in range(8):
        inner = getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            inner = getattr(model, "policy", None)
        if not isinstance(inner, torch.nn.Module) and hasattr(model, "get_base_model"):
            inner = model.get_base_model()
        if not isinstance(inner, torch.nn.Module) or inner is model:
            return model
        model = inner
    return model


def returned_cache(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def decode_attention(model: PreTrainedModel) -> str | None:
    """The attention implementation to decode with: ``eager`` on CPU, else the model's own.

    For one-token queries PyTorch's CPU ``scaled_dot_product_attention`` is slower than plain
    matmul + softmax: ~1.3x in fp32 and ~2-5x in bf16 (torch 2.13, batch 32, 4-8 heads, up to
    ~90 cached positions). GPUs keep the model's choice.
    """
    param = next(model.parameters())
    current = getattr(model.config, "_attn_implementation", None)
    if param.device.type == "cpu" and current == "sdpa":
        return "eager"
    return None


@contextlib.contextmanager
def attention_implementation(model: PreTrainedModel, impl: str | None) -> Any:
    """Temporarily switch the model's attention implementation; always restore it."""
    current = getattr(model.config, "_attn_implementation", None)
    can_switch = getattr(model, "_can_set_attn_implementation", None)
    if (
        impl is None
        or impl == current
        or not hasattr(model, "set_attn_implementation")
        or (callable(can_switch) and not can_switch())
    ):
        yield
        return
    model.set_attn_implementation(impl)
    try:
        yield
    finally:
        model.set_attn_implementation(current)
