"""The pretraining stage: a causal LM learns next-token prediction on a text corpus.

corpus -> documents -> held-out split -> tokenizer (trained on the training documents, or
taken from ``tokenizer`` / the model directory / the checkpoint being resumed) -> packed
blocks -> the shared :class:`~rlalign.train.loop.Trainer` with :func:`causal_lm_loss` ->
``output_dir/final/`` (model + tokenizer, loadable with ``AutoModelForCausalLM`` /
``AutoTokenizer``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import Field

from rlalign.dist import RankInfo
from rlalign.errors import UserError
from rlalign.lm.models import resolve_model
from rlalign.lm.tokenizer import load_tokenizer, train_tokenizer
from rlalign.train.config import TrainingConfig
from rlalign.train.data import (
    BlockBatches,
    fixed_batches,
    pack_documents,
    read_corpus,
    split_documents,
)
from rlalign.train.losses import causal_lm_loss, count_label_tokens, evaluate_causal_lm
from rlalign.train.run import prepare_run
from rlalign.train.stage import StageResult, train_and_save


class PretrainConfig(TrainingConfig):
    """``rlalign pretrain`` settings (the shared training keys plus data/tokenizer/model size)."""

    output_dir: str = "runs/pretrain"
    tokenizer: str | None = Field(None, description="a tokenizer dir; default: train one")
    vocab_size: int = Field(4096, gt=0, description="target size of a trained tokenizer")
    min_frequency: int = Field(2, gt=0, description="BPE: minimum count of a merged pair")
    block_size: int = Field(128, ge=2, description="tokens per packed training sequence")
    max_position_embeddings: int | None = Field(
        None, gt=0, description="context of a new model; default max(block_size, 1024)"
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


def _model_for(cfg: PretrainConfig, tokenizer: Any) -> Any:
    special = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    context = cfg.max_position_embeddings or max(cfg.block_size, 1024)
    model = resolve_model(
        cfg.model, len(tokenizer), max_position_embeddings=context, seed=cfg.seed, **special
    )
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and cfg.block_size > limit:
        raise UserError(
            f"block_size={cfg.block_size} exceeds the model's context ({limit} positions); "
            f"use block_size<={limit}"
        )
    return model


def run_pretrain(cfg: PretrainConfig, *, resume: bool = False) -> StageResult:
    """Run (or continue) pretraining as configured; returns where the final model is."""

    rank = RankInfo.detect()
    docs = read_corpus(cfg.data)  # validate the input before touching output_dir
    train_docs, eval_docs = split_documents(docs, cfg.eval_fraction, cfg.seed)
    resume_from = prepare_run(cfg, resume=resume, rank=rank)

    tokenizer = _tokenizer_for(cfg, resume_from, train_docs)
    train_blocks = pack_documents(train_docs, tokenizer, cfg.block_size)
    model = _model_for(cfg, tokenizer)
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
