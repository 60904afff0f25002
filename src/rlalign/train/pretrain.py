"""The pretraining stage: a causal LM learns next-token prediction on a text corpus.

corpus -> documents -> held-out split -> tokenizer (trained on the training documents, or
taken from ``tokenizer`` / the model directory / the checkpoint being resumed) -> packed
blocks -> the shared :class:`~rlalign.train.loop.Trainer` with :func:`causal_lm_loss` ->
``output_dir/final/`` (model + tokenizer, loadable with ``AutoModelForCausalLM`` /
``AutoTokenizer``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import Field

from rlalign.checkpoint import latest_checkpoint
from rlalign.dist import RankInfo
from rlalign.lm.models import resolve_model
from rlalign.lm.tokenizer import load_tokenizer, train_tokenizer
from rlalign.runtime import resolve_device, uses_bf16
from rlalign.train.config import TrainingConfig
from rlalign.train.data import (
    BlockBatches,
    fixed_batches,
    pack_documents,
    read_corpus,
    split_documents,
)
from rlalign.train.losses import causal_lm_loss, count_label_tokens, evaluate_causal_lm
from rlalign.train.run import holds_run_directory, prepare_run
from rlalign.train.sizes import check_fits_in_memory, check_length
from rlalign.train.stage import StageResult, train_and_save

NEW_MODEL_CONTEXT = 1024  # positions of a new model when max_position_embeddings is not given


class PretrainConfig(TrainingConfig):
    """``rlalign pretrain`` settings (the shared training keys plus data/tokenizer/model size)."""

    output_dir: str = "runs/pretrain"
    tokenizer: str | None = Field(None, description="a tokenizer dir; default: train one")
    vocab_size: int = Field(4096, gt=0, description="target size of a trained tokenizer")
    min_frequency: int = Field(2, gt=0, description="BPE: minimum count of a merged pair")
    block_size: int = Field(128, ge=2, description="tokens per packed training sequence")
    max_position_embeddings: int | None = Field(
        None,
        gt=0,
        description=f"context of a new model (default {NEW_MODEL_CONTEXT}); block_size may "
        "not exceed it",
    )
    eval_fraction: float = Field(0.05, ge=0, lt=1, description="held-out share of documents")
    max_eval_blocks: int | None = Field(None, gt=0, description="cap on held-out blocks")

    max_steps: int = Field(1000, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    adam_beta2: float = Field(0.95, ge=0, lt=1)
    per_device_train_batch_size: int = Field(16, gt=0)
    save_steps: int = Field(200, gt=0)


def _tokenizer_for(cfg: PretrainConfig, resume_from: Path | None, train_docs: list[str]) -> Any:
    if resume_from is not None and (resume_from / "tokenizer.json").is_file():
        return load_tokenizer(resume_from)  # the exact tokenizer the run started with
    if cfg.tokenizer is not None:
        return load_tokenizer(cfg.tokenizer)
    model_dir = Path(cfg.model)
    if model_dir.is_dir() and any(
        (model_dir / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")
    ):
        return load_tokenizer(model_dir)
    return train_tokenizer(train_docs, cfg.vocab_size, min_frequency=cfg.min_frequency)


def _model_for(cfg: PretrainConfig, tokenizer: Any, resume_from: Path | None) -> Any:
    special = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    context = cfg.max_position_embeddings or NEW_MODEL_CONTEXT
    saved = resume_from / "config.json" if resume_from is not None else None
    if cfg.max_position_embeddings is None and saved is not None and saved.is_file():
        # the run's own model again (one made when the default context was another)
        context = json.loads(saved.read_text(encoding="utf-8")).get("max_position_embeddings")
        context = context or NEW_MODEL_CONTEXT
    model = resolve_model(
        cfg.model, len(tokenizer), max_position_embeddings=context, seed=cfg.seed, **special
    )
    new = not Path(cfg.model).is_dir()
    remedy = f", or max_position_embeddings={cfg.block_size} for a new model" if new else ""
    check_length("block_size", cfg.block_size, model, remedy)
    return model


@holds_run_directory
def run_pretrain(cfg: PretrainConfig, *, resume: bool = False) -> StageResult:
    """Run (or continue) pretraining as configured; returns where the final model is."""

    rank = RankInfo.detect()
    docs = read_corpus(cfg.data)  # validate the input before touching output_dir
    train_docs, eval_docs = split_documents(docs, cfg.eval_fraction, cfg.seed)
    # the tokenizer and the model first: a size they cannot train at is refused before any write
    peek = latest_checkpoint(cfg.output_dir) if resume else None
    tokenizer = _tokenizer_for(cfg, peek, train_docs)
    model = _model_for(cfg, tokenizer, peek)
    device = resolve_device(cfg.device, rank)
    check_fits_in_memory(
        model,
        sequences=cfg.per_device_train_batch_size,
        length=cfg.block_size,
        length_key="block_size",
        device=device,
        bf16=uses_bf16(cfg.bf16, device, model),
    )
    resume_from = prepare_run(cfg, resume=resume, rank=rank)
    if resume_from != peek:  # a newer checkpoint arrived before the directory was locked
        tokenizer = _tokenizer_for(cfg, resume_from, train_docs)
        model = _model_for(cfg, tokenizer, resume_from)

    train_blocks = pack_documents(train_docs, tokenizer, cfg.block_size)
    data = BlockBatches(train_blocks, cfg.per_device_train_batch_size, seed=cfg.seed)

    eval_fn = None
    if eval_docs:
        eval_blocks = pack_documents(eval_docs, tokenizer, cfg.block_size)
        if cfg.max_eval_blocks is not None:
            eval_blocks = {k: v[: cfg.max_eval_blocks] for k, v in eval_blocks.items()}
        eval_batches = fixed_batches(eval_blocks, cfg.eval_batch_size)

        def eval_fn(m: Any) -> dict[str, float]:
            return evaluate_causal_lm(m, eval_batches, next(m.parameters()).device)

    return train_and_save(
        model,
        tokenizer,
        causal_lm_loss,
        data,
        cfg,
        resume=resume_from is not None,
        count_fn=count_label_tokens,
        eval_fn=eval_fn,
        item_name="tokens",
        rank=rank,
    )


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf
