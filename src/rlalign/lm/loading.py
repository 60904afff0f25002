"""Loading models with their tokenizers: a run's ``final/`` directory, any local HF model
directory, or a preset created from scratch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rlalign.errors import UserError
from rlalign.lm.models import load_model, resolve_model
from rlalign.lm.tokenizer import load_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def load_model_and_tokenizer(
    path: str | Path, dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the model and tokenizer of a run's ``final/`` directory or any local HF model dir.

    Raises:
        UserError: missing config/weights/tokenizer, or a model that is not a causal LM.
    """
    model = load_model(path, dtype=dtype)
    tokenizer = load_tokenizer(path)
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise UserError(
            f"the tokenizer in {path} has {len(tokenizer)} tokens but the model embeds only {rows}"
        )
    return model, tokenizer


def resolve_model_and_tokenizer(
    model_spec: str, tokenizer_spec: str | None, seed: int
) -> tuple[Any, Any]:
    """The model a stage starts from: a model directory (with its tokenizer), or a preset of
    :data:`rlalign.lm.models.PRESETS` created from scratch (which needs ``tokenizer_spec``)."""
    if tokenizer_spec is None:
        if not Path(model_spec).is_dir():
            raise UserError(
                f"model={model_spec!r} is not a directory, so it has no tokenizer; pass "
                "tokenizer=DIR, or model=DIR of a pretrained run (e.g. runs/pretrain/final)"
            )
        tokenizer_spec = model_spec
    tokenizer = load_tokenizer(tokenizer_spec)
    model = resolve_model(
        model_spec,
        len(tokenizer),
        seed=seed,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model, tokenizer
