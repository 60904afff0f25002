"""Causal language models: named size presets, creation from scratch, loading local HF models.

Every model is a Hugging Face ``transformers`` causal LM, saved with ``save_pretrained``
(safetensors), so what rlalign writes loads with ``AutoModelForCausalLM.from_pretrained`` and
anything decoder-only that ``transformers`` can load (Llama, Qwen2, GPT-2, ...) works here.

Presets are Llama-style (RMSNorm, rotary positions, SwiGLU MLP, tied input/output embeddings).
Their widths are multiples of 64/128 so that CPU (oneDNN/AMX) and GPU matmuls run on full tiles;
head_dim is 32 or 64 for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlalign.errors import UserError
from rlalign.io import check_safetensors

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class Preset:
    """Dimensions of a named model size (Llama architecture)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    description: str

    def config_kwargs(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
        }


# Parameter counts below are for a 4096-token vocabulary (tied embeddings count once).
PRESETS: dict[str, Preset] = {
    # ~1.4M parameters: tests, the demo, seconds-long pretraining on CPU.
    "tiny": Preset(128, 4, 4, 384, "~1.4M params (d=128, 4 layers, 4 heads)"),
    # ~26M parameters: a model that learns the built-in world well; minutes to hours on CPU.
    "small": Preset(512, 8, 8, 1280, "~26M params (d=512, 8 layers, 8 heads)"),
}


def preset_shape(model: str) -> tuple[int, int]:
    """The hidden and feed-forward widths of a preset; for a model directory, the ``small``
    preset's (a guess, for the timings that pick the precision and threads at start-up)."""
    preset = PRESETS.get(model, PRESETS["small"])
    return preset.hidden_size, preset.intermediate_size


def _check_preset(preset: str) -> Preset:
    if preset not in PRESETS:
        raise UserError(f"unknown model preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[preset]


def create_model(
    preset: str,
    vocab_size: int,
    *,
    max_position_embeddings: int = 1024,
    seed: int | None = None,
    **overrides: Any,
) -> PreTrainedModel:
    """Create a randomly initialised Llama-style causal LM of a named size.

    Args:
        preset: a key of :data:`PRESETS` (``tiny``, ``small``).
        vocab_size: rows of the embedding matrix; use ``len(tokenizer)``.
        max_position_embeddings: the context length (prompt + completion) the model supports.
        seed: when given, the initial weights depend only on it (the global torch RNG is left
            untouched); when ``None``, the global RNG is used.
        **overrides: any ``LlamaConfig`` field, e.g. ``bos_token_id=0``, ``eos_token_id=1``,
            ``pad_token_id=2``, ``num_hidden_layers=2``, ``attn_implementation="eager"``.

    Returns:
        The model in eval mode, fp32, on CPU.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    dims = _check_preset(preset)
    if vocab_size < 1:
        raise UserError(f"vocab_size must be >= 1, got {vocab_size}")
    if max_position_embeddings < 1:
        raise UserError(f"max_position_embeddings must be >= 1, got {max_position_embeddings}")
    kwargs: dict[str, Any] = {
        **dims.config_kwargs(),
        "vocab_size": vocab_size,
        "max_position_embeddings": max_position_embeddings,
        "tie_word_embeddings": True,  # halves the embedding cost of small models
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": 0.02,
    }
    kwargs.update(overrides)
    attn = kwargs.pop("attn_implementation", "sdpa")
    try:
        config = LlamaConfig(**kwargs)
    except Exception as exc:  # config validators raise assorted types (huggingface_hub's too)
        detail = str(exc).strip().splitlines()[-1].strip()
        raise UserError(f"invalid model settings for preset {preset!r}: {detail}") from exc
    config._attn_implementation = attn
    if seed is None:
        model = LlamaForCausalLM(config)
    else:
        # fork_rng: seeding here must not change the caller's random stream (data order etc.).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(config)
    return model.eval()


def _is_causal_lm_config(config: Any) -> bool:
    """A decoder-only LM: transformers has a causal-LM head for it and, for the encoder families
    that also have one (BERT, RoBERTa, ...: masked LMs first), the config says ``is_decoder``."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_MASKED_LM_MAPPING

    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        return False
    encoder_family = type(config) in MODEL_FOR_MASKED_LM_MAPPING
    return not encoder_family or bool(getattr(config, "is_decoder", False))


REPLACE_WEIGHTS = "copy the model directory again, or rerun the stage that wrote it"


def check_weight_files(directory: Path) -> None:
    """Every ``*.safetensors`` file of a model directory whole, or one line naming the damaged
    one (the safetensors library would raise a bare ``SafetensorError`` mid-load)."""
    for file in sorted(Path(directory).glob("*.safetensors")):
        check_safetensors(file, REPLACE_WEIGHTS)


def _load_merged_adapter(path: Path, dtype: torch.dtype | str | None) -> PreTrainedModel:
    """A LoRA adapter directory (``lora.save=adapter``): its base model with the adapter merged."""
    import json

    from peft import PeftModel

    try:
        base_dir = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
    except (ValueError, KeyError) as exc:
        raise UserError(
            f"{path / 'adapter_config.json'}: unreadable adapter config ({exc})"
        ) from None
    if not base_dir or not Path(base_dir).is_dir():
        raise UserError(
            f"{path} holds a LoRA adapter whose base model {base_dir!r} is not a local directory; "
            "fix base_model_name_or_path in adapter_config.json"
        )
    base = load_model(base_dir, dtype)
    check_weight_files(path)
    return PeftModel.from_pretrained(base, str(path)).merge_and_unload().eval()


def load_model(path: str | Path, dtype: torch.dtype | str | None = None) -> PreTrainedModel:
    """Load any local Hugging Face causal-LM directory (safetensors weights), in eval mode.

    Args:
        path: a directory written by ``save_pretrained`` (``config.json`` + ``*.safetensors``).
        dtype: e.g. ``torch.bfloat16``; ``None`` keeps fp32 (the safe default on CPU).

    Raises:
        UserError: not a directory, no ``config.json``, not a causal LM (e.g. a BERT encoder),
            or no safetensors weights (pickled ``.bin`` files are refused: never unpickle).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"model directory not found: {path}")
    if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        return _load_merged_adapter(path, dtype)
    if not (path / "config.json").is_file():
        raise UserError(
            f"{path} is not a Hugging Face model directory: no config.json "
            "(expected the output of save_pretrained, e.g. a run's final/ directory)"
        )
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot read {path / 'config.json'}: {exc}".splitlines()[0]) from exc
    if not _is_causal_lm_config(config):
        raise UserError(
            f"{path} holds a {type(config).__name__} ({config.model_type!r}), which is not a "
            "causal (decoder-only) language model"
        )
    if not any(path.glob("*.safetensors")):
        raise UserError(
            f"no *.safetensors weights in {path}; rlalign never unpickles .bin files "
            "(convert with save_pretrained(safe_serialization=True))"
        )
    check_weight_files(path)
    try:
        # dtype None would load the checkpoint's own dtype (most Hub models are saved in bf16),
        # and AdamW on bf16 weights rounds most small updates away: fp32 unless asked
        model = AutoModelForCausalLM.from_pretrained(
            str(path),
            dtype=dtype if dtype is not None else torch.float32,
            local_files_only=True,
            use_safetensors=True,
        )
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the model in {path}: {exc}".splitlines()[0]) from exc
    return model.eval()


def resolve_model(
    spec: str | Path,
    vocab_size: int | None = None,
    *,
    max_position_embeddings: int = 1024,
    seed: int | None = None,
    dtype: torch.dtype | str | None = None,
    **overrides: Any,
) -> PreTrainedModel:
    """Turn a config's ``model`` value into a model: a preset name or a local HF directory.

    A preset creates a fresh model (``vocab_size`` required; ``max_position_embeddings``,
    ``seed`` and ``overrides`` as in :func:`create_model`). A directory loads it (``dtype`` as in
    :func:`load_model`); its embeddings must hold ``vocab_size`` tokens when that is given.

    Raises:
        UserError: neither a preset nor an existing directory, or a vocabulary mismatch.
    """
    text = str(spec)
    if text in PRESETS:
        if vocab_size is None:
            raise UserError(f"creating a model from preset {text!r} needs the vocabulary size")
        model = create_model(
            text,
            vocab_size,
            max_position_embeddings=max_position_embeddings,
            seed=seed,
            **overrides,
        )
        if dtype is not None:
            model = model.to(dtype=dtype)
        return model
    path = Path(text).expanduser()
    if not path.exists():
        raise UserError(
            f"model {text!r} is neither a preset ({', '.join(PRESETS)}) nor an existing directory"
        )
    model = load_model(path, dtype=dtype)
    rows = model.get_input_embeddings().weight.shape[0]
    if vocab_size is not None and vocab_size > rows:
        raise UserError(
            f"the tokenizer has {vocab_size} tokens but the model in {path} embeds only {rows}"
        )
    return model


def count_parameters(model: PreTrainedModel) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total
