"""Sizes a run can never train at, refused before anything is written or computed.

A sequence length above the model's context, or a micro-batch whose activations alone need more
memory than the device has, would otherwise fail (or crawl) only once the first step is under
way, after minutes of setup, in a process that may not even answer a stop signal until its
huge forward pass returns. Both are known from the config and the model's dimensions.
"""

from __future__ import annotations

from typing import Any

import torch

from rlalign.errors import UserError
from rlalign.runtime import device_memory_bytes


def model_context(model: Any) -> int | None:
    """The model's context length in positions (None when its config does not say)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_length(key: str, value: int, model: Any, remedy: str = "") -> None:
    """Refuse ``key=value`` tokens per sequence when the model's context is shorter."""
    limit = model_context(model)
    if limit is not None and value > limit:
        raise UserError(
            f"{key}={value} exceeds the model's context ({limit} positions); use "
            f"{key}<={limit}{remedy}"
        )


def activation_bytes_lower_bound(
    config: Any, sequences: int, length: int, *, bf16: bool, logits: bool = True
) -> int:
    r"""Bytes one forward and backward pass of ``sequences x length`` tokens must hold at once.

    .. math:: M \ge N \left(4V + L\,(4H + 3I)\,a\right), \qquad N = B\,T

    with ``V`` the vocabulary (the fp32 logits the loss reads; 0 for a model without an LM
    head), ``L`` layers of width ``H`` and MLP width ``I``, and ``a`` bytes per activation (2
    under bf16 autocast, else 4). Autograd keeps, per layer and token, at least the attention
    input, queries, keys, values, the attention output and the three MLP activations, so the
    true peak is higher: this bound only refuses sizes that cannot fit.
    """
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0) or 0
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 0) or 0
    inner = (
        getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    )
    vocab = getattr(config, "vocab_size", 0) if logits else 0
    per_token = 4 * vocab + layers * (4 * hidden + 3 * inner) * (2 if bf16 else 4)
    return sequences * length * per_token


def check_fits_in_memory(
    model: Any,
    *,
    sequences: int,
    length: int,
    length_key: str,
    device: torch.device,
    bf16: bool,
    logits: bool = True,
) -> None:
    """Refuse a micro-batch whose activations alone exceed the device's memory (see
    :func:`activation_bytes_lower_bound`)."""
    have = device_memory_bytes(device)
    need = activation_bytes_lower_bound(
        getattr(model, "config", None), sequences, length, bf16=bf16, logits=logits
    )
    if have is None or need <= have:
        return
    gib = 2**30
    raise UserError(
        f"a micro-batch of {sequences} sequences x {length_key}={length} tokens needs at least "
        f"{need / gib:.1f} GiB for its activations, more than the {have / gib:.1f} GiB of "
        f"memory of {device}; lower per_device_train_batch_size (gradient_accumulation_steps "
        f"keeps the batch) or {length_key}"
    )
