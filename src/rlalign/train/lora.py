"""LoRA adapters (Hugging Face ``peft``) for SFT, the reward model and RL.

``W x`` becomes ``W x + (alpha / r) * B A x`` on the targeted linear layers, with ``A`` (r x in)
and ``B`` (out x r) the only trained weights of those layers (``B`` starts at zero, so training
starts from the base model exactly). For a layer ``in -> out`` that is ``r * (in + out)`` new
parameters.

- In RL the reference model is the *same* model with its adapters switched off
  (:class:`AdapterDisabled`): no second copy of the weights is held.
- ``final/`` holds the merged model (``W + (alpha / r) B A``, a plain HF model every later
  stage loads) or, with ``lora.save=adapter``, the adapter alone (``adapter_config.json`` +
  ``adapter_model.safetensors``, loadable with ``peft.PeftModel.from_pretrained``).
- Checkpoints hold the whole model (base + adapters) like any other, so resume is exact.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from rlalign.config import Config
from rlalign.errors import UserError

if TYPE_CHECKING:  # torch and peft load only when LoRA is used (keeps `rlalign --help` fast)
    import torch
    from torch import nn


class LoraSettings(Config):
    """The ``lora:`` section of a stage config (absent: full fine-tuning)."""

    r: int = Field(8, gt=0, description="rank of the update B A")
    alpha: float = Field(16.0, gt=0, description="scale: the update is (alpha / r) B A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="names of the linear layers to adapt, or all-linear"
    )
    save: Literal["merged", "adapter"] = Field(
        "merged", description="final/: the merged model, or the adapter alone"
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "all-linear":
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and not value:
            raise ValueError("names no layer: give layer names (e.g. q_proj,v_proj) or all-linear")
        return value


def linear_module_names(model: nn.Module) -> list[str]:
    """The distinct last names of the model's linear layers (what ``target_modules`` takes)."""
    from torch import nn

    return sorted(
        {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    )


def apply_lora(
    model: nn.Module, settings: LoraSettings | None, *, task: str, seed: int = 0
) -> nn.Module:
    """Wrap ``model`` with LoRA adapters (``task``: ``causal_lm`` or ``seq_cls``); freezes the
    base weights. The adapters' random initialisation is drawn from ``seed`` (runs repeat
    exactly). Returns ``model`` unchanged when ``settings`` is None."""
    if settings is None:
        return model
    if task == "seq_cls" and settings.save == "adapter":
        raise UserError(
            "lora.save=adapter: a reward model's final/ must be the whole model (its score head "
            "and config), which rlalign rl reward_model= and AutoModelForSequenceClassification "
            "load; use lora.save=merged"
        )
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    targets = settings.target_modules
    if targets != "all-linear":
        known = set(linear_module_names(model))
        missing = [t for t in targets if t not in known]
        if missing:
            raise UserError(
                f"lora.target_modules: {', '.join(missing)} not found among the model's linear "
                f"layers ({', '.join(sorted(known))}); use names from that list or all-linear"
            )
        _untie_adapted_output(model, targets)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        task_type=TaskType.SEQ_CLS if task == "seq_cls" else TaskType.CAUSAL_LM,
    )
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")  # peft's notes on tied embeddings and fan-in
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def _untie_adapted_output(model: nn.Module, targets: list[str]) -> None:
    """Give the output layer a weight of its own when it is adapted and tied to the input
    embeddings.

    Why: merging adds ``B A`` to the output weight, which a tied model shares with its input
    embeddings, so the merged ``final/`` would move the embeddings too and compute something
    else than the model that was trained (whose adapter changes the output layer only). Untied,
    the base weights stay frozen as they were, training is the same, and the merge is exact.
    """
    from torch import nn

    get_out = getattr(model, "get_output_embeddings", None)
    get_in = getattr(model, "get_input_embeddings", None)
    out = get_out() if callable(get_out) else None
    embed = get_in() if callable(get_in) else None
    if out is None or embed is None or out.weight is not embed.weight:
        return
    names = [name for name, module in model.named_modules() if module is out]
    if not names or names[0].rsplit(".", 1)[-1] not in targets:
        return
    out.weight = nn.Parameter(out.weight.detach().clone(), requires_grad=out.weight.requires_grad)
    model.config.tie_word_embeddings = False


def is_lora(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts, as peft's ``get_nb_trainable_parameters``."""
    if is_lora(model):
        return model.get_nb_trainable_parameters()
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


class AdapterDisabled:
    """The reference model of RL under LoRA: the policy's own weights with the adapters off.

    Called like the model (``ref(input_ids=..., ...)``); nothing is copied.
    """

    def __init__(self, peft_model: nn.Module) -> None:
        self.peft_model = peft_model

    def __call__(self, **kwargs: Any) -> Any:
        with self.peft_model.disable_adapter():
            return self.peft_model(**kwargs)

    def get_base_model(self) -> nn.Module:
        return self.peft_model.get_base_model()

    def parameters(self, recurse: bool = True):
        return self.peft_model.parameters(recurse)

    @property
    def config(self) -> Any:
        return self.peft_model.config


def save_lora_final(
    model: nn.Module, state: dict[str, torch.Tensor], directory: Path, settings: LoraSettings
) -> None:
    """Write a LoRA model's ``final/``: merged weights (default) or the adapter alone.

    Works from ``state`` (the whole model's weights, gathered from every rank when sharded) on a
    fresh CPU copy, so the trained model itself is never modified.
    """
    from peft import get_peft_model

    base = model.get_base_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = type(base)(base.config)
        fresh = get_peft_model(fresh, model.peft_config["default"])
    fresh.load_state_dict(state)
    if settings.save == "adapter":
        fresh.save_pretrained(directory, safe_serialization=True)
        return
    merged = fresh.merge_and_unload()
    merged.save_pretrained(directory, safe_serialization=True)
