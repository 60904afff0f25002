"""What every training stage does after building its data and loss: train, then save final/.

A stage (pretrain, SFT, reward model, RL) hands its model, loss, batch source and config to
:func:`train_and_save`, which runs the shared :class:`~rlalign.train.loop.Trainer` and, when the
run was not interrupted, writes ``output_dir/final/`` atomically: safetensors weights, config
and tokenizer, loadable with ``from_pretrained``; then the run's plots and ``report.html``
(:mod:`rlalign.report.run_report`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn


@dataclass
class StageResult:
    """How a stage ended and where its final model is."""

    final_dir: Path
    step: int
    interrupted_by: int | None
    eval_metrics: dict[str, float]


def save_final(model: nn.Module, tokenizer: Any, output_dir: str | Path) -> Path:
    """Write ``output_dir/final/`` atomically: safetensors weights, config and tokenizer."""
    from rlalign.io import atomic_directory
    from rlalign.train.checkpoint import save_model_weights

    final_dir = Path(output_dir) / "final"
    with atomic_directory(final_dir) as tmp:
        save_model_weights(model, tmp)
        tokenizer.save_pretrained(tmp)
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
    **trainer_kwargs: Any,
) -> StageResult:
    """Train with the shared loop, then save ``final_model`` (default ``model``) and the
    tokenizer as ``final/``. ``trainer_kwargs`` go to :class:`~rlalign.train.loop.Trainer`
    (``count_fn``, ``eval_fn``, ``item_name``, ``rank``, ``log_extra``)."""
    from rlalign.train.loop import Trainer

    trainer = Trainer(
        model, loss_fn, data, cfg, save_extra=tokenizer.save_pretrained, **trainer_kwargs
    )
    result = trainer.fit(resume=resume)
    final_dir = Path(cfg.output_dir) / "final"
    if result.interrupted_by is None and trainer.rank.is_main:
        save_final(final_model if final_model is not None else model, tokenizer, cfg.output_dir)
    if trainer.rank.is_main:  # plots and report.html, also for a run stopped by a signal
        from rlalign.report.run_report import write_run_report

        write_run_report(cfg.output_dir)
    return StageResult(final_dir, result.step, result.interrupted_by, result.eval_metrics)
