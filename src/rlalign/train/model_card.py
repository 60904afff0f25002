"""The model card of a ``final/`` directory: a README.md in the Hugging Face Hub's format.

The card says what the directory holds and how it was made -- the stage, the model it started
from, the data (or environment), the settings that shape the result and the last held-out
metrics -- so that ``final/`` can be shared as it is. Its metadata block is written with
``huggingface_hub.ModelCardData`` (the library the Hub reads cards with), so ``library_name``,
``pipeline_tag`` and ``tags`` are where the Hub looks for them. A flow that measures more (the
demo's report card) appends a section with :func:`add_card_section`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlalign.io import atomic_write_text, read_text
from rlalign.lm.models import PRESETS
from rlalign.version import __version__

CARD_NAME = "README.md"

# config class -> (the stage's command, what the model does, its pipeline tag)
STAGES: dict[str, tuple[str, str, str]] = {
    "PretrainConfig": ("pretrain", "a causal language model, pre-trained", "text-generation"),
    "SFTConfig": ("sft", "a chat model, supervised fine-tuned", "text-generation"),
    "RewardConfig": (
        "reward",
        "a reward model: one score per (prompt, response), trained on preference pairs",
        "text-classification",
    ),
    "RLConfig": ("rl", "a policy, trained by reinforcement learning", "text-generation"),
}

# The settings a reader needs to know what was done, per stage (beside the shared ones).
KEY_SETTINGS: dict[str, tuple[str, ...]] = {
    "pretrain": ("block_size", "vocab_size"),
    "sft": ("max_length", "replay_data", "replay_ratio"),
    "reward": ("max_length", "use_margin", "lm_loss_coef", "prior_coef"),
    "rl": ("algorithm", "num_generations", "prompts_per_iteration", "max_completion_length",
           "temperature", "beta", "loss_type", "num_iterations", "gamma", "reward_funcs",
           "reward_weights", "reward_model", "ptx_data", "ptx_coef", "env", "history",
           "max_turns"),
}  # fmt: skip
SHARED_SETTINGS = ("max_steps", "learning_rate", "warmup_steps", "per_device_train_batch_size",
                   "gradient_accumulation_steps", "seed")  # fmt: skip


def _base_model(model: str) -> str:
    if model in PRESETS:
        return f"none: a `{model}` model ({PRESETS[model].description}) initialised from scratch"
    return f"`{model}`"


def _data(cfg: Any, stage: str) -> str:
    if stage == "rl" and getattr(cfg, "env", None):
        return f"the text environment `{cfg.env}` (multi-turn episodes)"
    if getattr(cfg, "data", None):
        return f"`{cfg.data}`"
    if stage == "rl" and getattr(cfg, "world", None):
        return f"the prompts of the world exported in `{cfg.world}`"
    if stage == "rl":
        return f"the built-in world's prompts (world seed {cfg.world_seed})"
    return "-"  # pragma: no cover - every stage's config has data


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return f"`{value}`" if isinstance(value, (str, list, dict)) else str(value)


def model_card(cfg: Any, *, step: int, eval_metrics: dict[str, float] | None = None) -> str:
    """The card (README.md text) of the ``final/`` a stage with config ``cfg`` wrote after
    ``step`` optimizer steps, with its last held-out metrics."""
    from huggingface_hub import ModelCardData

    # a stage of one's own on the shared loop: a plain causal LM card
    stage, what, pipeline = STAGES.get(
        type(cfg).__name__, ("train", "a causal language model", "text-generation")
    )
    lora = getattr(cfg, "lora", None)
    tags = [
        "rlalign",
        stage,
        *([cfg.algorithm] if stage == "rl" else []),
        *(["lora"] if lora else []),
    ]
    meta = ModelCardData(library_name="transformers", pipeline_tag=pipeline, tags=tags)
    rows = [
        ("stage", f"`rlalign {stage}`"),
        ("started from", _base_model(cfg.model)),
        ("data", _data(cfg, stage)),
        ("optimizer steps", str(step)),
    ]
    names = [*KEY_SETTINGS.get(stage, ()), *SHARED_SETTINGS]
    rows += [(name, _value(getattr(cfg, name))) for name in names
             if getattr(cfg, name, None) not in (None, [], {})]  # fmt: skip
    if lora:
        rows.append(("lora", f"r={lora.r}, alpha={lora.alpha:g}, saved {lora.save}"))
    table = "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])
    lines = [
        "---",
        meta.to_yaml(),
        "---",
        "",
        f"# {Path(cfg.output_dir).name}",
        "",
        f"{what[0].upper()}{what[1:]} with rlalign {__version__}.",
        "",
        "## How it was made",
        "",
        table,
        "",
        f"The complete settings are in `{Path(cfg.output_dir).name}/config.yaml`, beside this "
        "directory; `rlalign "
        f"{stage} --config config.yaml` repeats the run.",
    ]
    if eval_metrics:
        lines += ["", "## Held-out metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in sorted(eval_metrics.items())]
    auto = "AutoModelForSequenceClassification" if stage == "reward" else "AutoModelForCausalLM"
    lines += [
        "",
        "## Use",
        "",
        "```python",
        f"from transformers import {auto}, AutoTokenizer",
        "",
        f'model = {auto}.from_pretrained("path/to/final")',
        'tokenizer = AutoTokenizer.from_pretrained("path/to/final")',
        "```",
        "",
    ]
    return "\n".join(lines)


def write_model_card(directory: str | Path, text: str) -> Path:
    path = Path(directory) / CARD_NAME
    atomic_write_text(path, text)
    return path


def add_card_section(directory: str | Path, title: str, body: str) -> Path:
    """Append (or replace) the section ``## title`` of ``directory``'s card."""
    path = Path(directory) / CARD_NAME
    text = read_text(path)
    head = f"\n## {title}\n"
    if head in text:  # replace: everything up to the next section
        before, _, rest = text.partition(head)
        after = rest.partition("\n## ")
        text = before + (("\n## " + after[2]) if after[1] else "\n")
    return write_model_card(directory, text.rstrip("\n") + f"\n{head}\n{body.strip()}\n")
