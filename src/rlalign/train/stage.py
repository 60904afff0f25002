"""What every training stage does after building its data and loss: train, then save final/.

A stage (pretrain, SFT, reward model, RL) hands its model, loss, batch source and config to
:func:`train_and_save`, which runs the shared :class:`~rlalign.train.loop.Trainer` and, when the
run was not interrupted, writes ``output_dir/final/`` atomically: safetensors weights, config,
tokenizer and model card (README.md), loadable with ``from_pretrained``; then the run's plots and ``report.html``
(:mod:`rlalign.report.run_report`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from rlalign.checkpoint import save_model_weights
from rlalign.dist import barrier
from rlalign.io import atomic_directory
from rlalign.trackers import report_model_card
from rlalign.train.loop import Trainer
from rlalign.train.lora import is_lora, save_lora_final, trainable_parameters
from rlalign.train.model_card import model_card, write_model_card


@dataclass
class StageResult:
    """How a stage ended and where its final model is."""

    final_dir: Path
    step: int
    interrupted_by: int | None
    eval_metrics: dict[str, float]


def save_final(
    model: nn.Module,
    save_extra: Callable[[Path], None],
    output_dir: str | Path,
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """Write ``output_dir/final/`` atomically: safetensors weights and config, then
    ``save_extra(directory)`` (the tokenizer, and whatever else the stage adds) in the same
    atomic step (``state_dict``: the weights to write instead of the model's own, e.g. gathered
    shards)."""

    final_dir = Path(output_dir) / "final"
    with atomic_directory(final_dir) as tmp:
        save_model_weights(model, tmp, state_dict)
        save_extra(tmp)
    return final_dir


def train_and_save(
    model: nn.Module,
    tokenizer: Any,
    loss_fn: Any,
    data: Any,
    cfg: Any,
    *,
    resume: bool,
    final_model: nn.Module | None = None,
    final_extra: Callable[[Path], None] | None = None,
    **trainer_kwargs: Any,
) -> StageResult:
    """Train with the shared loop, then save ``final_model`` (default ``model``) and the
    tokenizer as ``final/``; ``final_extra(directory)``, when given, writes more files into
    it inside the same atomic step (e.g. a reward model's prior). ``trainer_kwargs`` go to
    :class:`~rlalign.train.loop.Trainer` (``count_fn``, ``eval_fn``, ``item_name``, ``rank``)."""

    def write_extras(directory: Path) -> None:
        tokenizer.save_pretrained(directory)
        write_model_card(directory, card())
        if final_extra is not None:
            final_extra(directory)

    trainer = Trainer(
        model, loss_fn, data, cfg, save_extra=tokenizer.save_pretrained, **trainer_kwargs
    )

    if trainer.rank.is_main and is_lora(model if final_model is None else final_model):
        trainable, total = trainable_parameters(model)
        print(
            f"LoRA: trainable params: {trainable:,d} || all params: {total:,d} || "
            f"trainable%: {100 * trainable / total:.4f}"
        )
    result = trainer.fit(resume=resume)

    def card() -> str:
        return model_card(cfg, step=result.step, eval_metrics=result.eval_metrics)

    final_dir = Path(cfg.output_dir) / "final"
    if result.interrupted_by is None:
        part = final_model if final_model is not None else model
        trainer.require_finite_weights()  # e.g. a resume past max_steps trains no step
        state = trainer.full_state_of(part)  # collective under torchrun
        if trainer.rank.is_main:
            if is_lora(part):
                with atomic_directory(final_dir) as tmp:
                    save_lora_final(part, state or part.state_dict(), tmp, cfg.lora)
                    write_extras(tmp)
            else:
                save_final(part, write_extras, cfg.output_dir, state)
            report_model_card(cfg.report_to, cfg.output_dir, card(), step=result.step)
        barrier()
    return StageResult(final_dir, result.step, result.interrupted_by, result.eval_metrics)
