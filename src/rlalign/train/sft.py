"""The supervised fine-tuning stage: learn to answer in the chat format.

SFT data (``messages`` or ``prompt``/``completion`` JSONL) -> chat template -> assistant-only
labels -> the shared :class:`~rlalign.train.loop.Trainer` with :func:`causal_lm_loss` (loss on
assistant tokens only; prompt tokens get no gradient) -> ``output_dir/final/``.
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic import Field

from rlalign.data.formats import load_sft
from rlalign.dist import RankInfo
from rlalign.errors import UserError
from rlalign.lm.loading import resolve_model_and_tokenizer
from rlalign.runtime import resolve_device, uses_bf16
from rlalign.train.chat_data import (
    ChatExample,
    ExampleBatches,
    collate,
    encode_conversation,
    split_examples,
    truncate_example,
)
from rlalign.train.config import TrainingConfig
from rlalign.train.data import read_corpus
from rlalign.train.lora import LoraSettings, apply_lora
from rlalign.train.losses import causal_lm_loss, count_label_tokens, evaluate_causal_lm
from rlalign.train.run import holds_run_directory, prepare_run
from rlalign.train.sizes import check_fits_in_memory, check_length
from rlalign.train.stage import StageResult, train_and_save


class SFTConfig(TrainingConfig):
    """``rlalign sft`` settings: the shared training keys plus ``max_length``."""

    output_dir: str = "runs/sft"
    tokenizer: str | None = Field(None, description="tokenizer dir; default: the model's")
    lora: LoraSettings | None = Field(
        None, description="train LoRA adapters instead of every weight (peft)"
    )
    max_length: int = Field(256, ge=2, description="tokens per conversation (longer: truncated)")
    eval_fraction: float = Field(0.05, ge=0, lt=1, description="held-out share of conversations")
    replay_data: str | None = Field(
        None,
        description="a pretraining corpus mixed into SFT (loss on every token), so that "
        "fine-tuning does not overwrite what pretraining taught",
    )
    replay_ratio: float = Field(0.5, ge=0, description="replay documents per SFT conversation")
    max_steps: int = Field(500, gt=0)
    learning_rate: float = Field(5e-4, gt=0)
    warmup_steps: int = Field(20, ge=0)
    per_device_train_batch_size: int = Field(16, gt=0)
    eval_steps: int = Field(100, gt=0)
    save_steps: int = Field(200, gt=0)


def replay_examples(cfg: SFTConfig, tokenizer: Any, max_length: int, count: int) -> list[Any]:
    """``count`` corpus documents as examples with a loss on every token (cycled if needed)."""

    docs = [d for d in read_corpus(cfg.replay_data) if d.strip()]
    if not docs or count == 0:
        return []
    out = []
    for i in range(count):
        text_ids = tokenizer(docs[i % len(docs)])["input_ids"][: max_length - 1]
        ids = [*text_ids, tokenizer.eos_token_id]
        out.append(ChatExample(ids, list(ids)))
    return out


@holds_run_directory
def run_sft(cfg: SFTConfig, *, resume: bool = False) -> StageResult:
    """Run (or continue) supervised fine-tuning as configured."""

    rank = RankInfo.detect()
    conversations = load_sft(cfg.data)  # validate the input before touching output_dir
    model, tokenizer = resolve_model_and_tokenizer(cfg.model, cfg.tokenizer, cfg.seed)
    model = apply_lora(model, cfg.lora, task="causal_lm", seed=cfg.seed)
    check_length("max_length", cfg.max_length, model)
    device = resolve_device(cfg.device, rank)
    check_fits_in_memory(
        model,
        sequences=cfg.per_device_train_batch_size,
        length=cfg.max_length,
        length_key="max_length",
        device=device,
        bf16=uses_bf16(cfg.bf16, device, model),
    )
    max_length = cfg.max_length
    kept, cut, dropped = [], 0, 0
    for i, conversation in enumerate(conversations, start=1):
        try:
            whole = encode_conversation(tokenizer, conversation, None)
        except UserError as exc:
            raise UserError(f"{cfg.data}: conversation {i} (in the file's order): {exc}") from None
        example = whole and truncate_example(whole, max_length)
        if whole is not None and len(whole.input_ids) > max_length:
            cut += example is not None
            dropped += example is None
        if example is not None:
            kept.append(example)
    if not kept:
        raise UserError(
            f"{cfg.data}: no conversation has assistant tokens within max_length={max_length}"
        )
    train, held_out = split_examples(kept, cfg.eval_fraction, cfg.seed)
    if cfg.replay_data is not None:
        train += replay_examples(cfg, tokenizer, max_length, round(len(train) * cfg.replay_ratio))
    prepare_run(cfg, resume=resume, rank=rank)
    if (cut or dropped) and rank.is_main:  # once the run starts: what it will not see
        print(
            f"sft: {cut + dropped} of {len(conversations)} conversations are longer than "
            f"max_length={max_length} tokens: {cut} cut (their last answer ends early, without "
            f"its end-of-turn token), {dropped} dropped (no answer token within it); raise "
            "max_length to keep them whole",
            file=sys.stderr,
        )

    pad_id = tokenizer.pad_token_id
    data = ExampleBatches(
        train,
        cfg.per_device_train_batch_size,
        seed=cfg.seed,
        collate_fn=lambda b: collate(b, pad_id),
    )
    eval_fn = None
    if held_out:
        eval_batches = [
            collate(held_out[i : i + cfg.eval_batch_size], pad_id)
            for i in range(0, len(held_out), cfg.eval_batch_size)
        ]

        def eval_fn(m: Any) -> dict[str, float]:
            return evaluate_causal_lm(m, eval_batches, next(m.parameters()).device)

    return train_and_save(
        model,
        tokenizer,
        causal_lm_loss,
        data,
        cfg,
        resume=resume,
        count_fn=count_label_tokens,
        eval_fn=eval_fn,
        item_name="tokens",
        rank=rank,
    )
