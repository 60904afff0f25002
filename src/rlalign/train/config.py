"""The config keys every training stage shares, named as Hugging Face ``TrainingArguments``.

A stage's config subclasses :class:`TrainingConfig` and adds its own keys (``block_size`` for
pretraining, ``beta`` for RL, ...); :class:`rlalign.train.loop.Trainer` reads only these.
"""

from __future__ import annotations

import os
from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from rlalign.config import Config, Seed
from rlalign.errors import UserError

# the keys of every stage that name a file or directory (a stage validates those it has)
PATH_KEYS = ("model", "data", "output_dir", "tokenizer", "eval_data", "replay_data",
             "reward_model", "ptx_data")  # fmt: skip


class TrainingConfig(Config):
    """Optimisation, logging and checkpointing settings of one training run."""

    # What ``--resume`` may change: when the run ends, how often it logs, evaluates and saves,
    # and where it runs -- never the model, the data or the optimisation (see
    # docs/how-to/resuming.md).
    resume_may_change: ClassVar[frozenset[str]] = frozenset(
        {
            "max_steps",
            "logging_steps",
            "eval_steps",
            "save_steps",
            "save_total_limit",
            "per_device_eval_batch_size",
            "disable_tqdm",
            "device",
            "distributed",
            "attn_implementation",
            "torch_compile",
            "overwrite_output_dir",
            "report_to",
        }
    )

    model: str = Field("tiny", description="a preset name (tiny, small) or a local HF model dir")
    data: str = Field(..., description="path to the training file")
    output_dir: str = Field(
        "runs/train", description="the run directory (checkpoints, final/, metrics, report)"
    )
    overwrite_output_dir: bool = Field(
        False, description="start over in an output_dir that holds an earlier run"
    )
    seed: Seed = Field(
        42, description="seed of every random choice: same seed, same weights on CPU"
    )

    max_steps: int = Field(1000, gt=0, description="optimizer steps")
    learning_rate: float = Field(3e-4, gt=0, description="peak learning rate of AdamW")
    warmup_steps: int = Field(0, ge=0, description="steps of linear warm-up to learning_rate")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine floor, as a fraction of lr")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW: decay of the first moment")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="AdamW: decay of the second moment")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW: added to the denominator")
    max_grad_norm: float = Field(1.0, ge=0, description="0 disables clipping")
    per_device_train_batch_size: int = Field(8, gt=0, description="examples per micro-batch")
    per_device_eval_batch_size: int | None = Field(
        None, gt=0, description="examples per evaluation batch; None: the training one"
    )
    gradient_accumulation_steps: int = Field(
        1, gt=0, description="micro-batches summed into one optimizer step"
    )
    global_batch_size: int | None = Field(
        None,
        gt=0,
        description="examples per optimizer step over all ranks; gradient accumulation fills "
        "what per_device_train_batch_size x world size leaves (None: per-device batch x "
        "gradient_accumulation_steps x world size)",
    )
    distributed: Literal["ddp", "fsdp"] = Field(
        "ddp", description="data parallelism under torchrun: ddp (replicas) or fsdp (FSDP2 shards)"
    )

    logging_steps: int = Field(10, gt=0, description="steps between metrics lines")
    eval_steps: int = Field(100, gt=0, description="steps between evaluations")
    save_steps: int = Field(500, gt=0, description="steps between checkpoints")
    save_total_limit: int | None = Field(2, gt=0, description="checkpoints kept; None keeps all")

    bf16: bool | Literal["auto"] | None = Field(
        None,
        description="bf16 autocast; None: on for CUDA, off on CPU; auto: on where a short "
        "timing finds it faster than fp32 on this machine (remembered per machine)",
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    attn_implementation: str = Field(
        "auto", description="attention kernels while training: auto, eager, sdpa, ..."
    )
    torch_compile: bool = Field(
        False,
        description="torch.compile the model for training (forward and backward; pays on "
        "pre-training's fixed-size blocks of small models after about 30 s of compiling, not where "
        "batches change shape, as in SFT and RL; close to eager, not bit-equal)",
    )
    disable_tqdm: bool = Field(False, description="no progress bar")
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "none"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="where metrics go besides metrics.jsonl: tensorboard, wandb, mlflow (their "
        "own libraries: pip install 'rlalign[trackers]'), or none",
    )

    @field_validator(*PATH_KEYS, check_fields=False)
    @classmethod
    def _path_given(cls, value: str | None, info: ValidationInfo) -> str | None:
        # `data=` would otherwise become Path(""), the current directory
        if value is not None and not value.strip():
            field = cls.model_fields[info.field_name]
            if field.is_required():
                raise ValueError("the path is empty; give one")
            default = "" if field.default is None else f" ({field.default})"
            raise ValueError(
                f"the path is empty; give one, or leave the key out for its default{default}"
            )
        # a YAML file or a quoted override keeps ~ as typed; the shell would have expanded it
        if value is not None and value.startswith("~"):
            return os.path.expanduser(value)
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        base = value.split(":", 1)[0]
        if base not in {"auto", "cpu", "cuda", "mps", "xpu"}:
            raise ValueError("expected auto, cpu, cuda, cuda:N, mps or xpu")
        return value

    @field_validator("attn_implementation")
    @classmethod
    def _known_attention(cls, value: str) -> str:
        known = {
            "auto",
            "eager",
            "sdpa",
            "flash_attention_2",
            "flash_attention_3",
            "flex_attention",
        }
        if value not in known:
            raise ValueError(f"expected one of {', '.join(sorted(known))}")
        return value

    def accumulation_steps(self, world_size: int) -> int:
        """Micro-batches per rank per optimizer step, so that every step sees the same global
        batch at any world size."""
        per_device = self.per_device_train_batch_size
        if self.global_batch_size is None:
            return self.gradient_accumulation_steps
        share, rest = divmod(self.global_batch_size, world_size * per_device)
        if rest or share == 0:
            raise UserError(
                f"global_batch_size={self.global_batch_size} is not a multiple of world size "
                f"{world_size} x per_device_train_batch_size={per_device}; pick a "
                f"global_batch_size divisible by {world_size * per_device} or change the "
                "per-device batch"
            )
        if self.gradient_accumulation_steps not in (1, share):
            raise UserError(
                f"gradient_accumulation_steps={self.gradient_accumulation_steps} contradicts "
                f"global_batch_size={self.global_batch_size} (which needs {share} at world size "
                f"{world_size}); leave gradient_accumulation_steps unset"
            )
        return share

    @property
    def eval_batch_size(self) -> int:
        return self.per_device_eval_batch_size or self.per_device_train_batch_size
