"""``rlalign STAGE --help`` lists every config key: its type, default and one line on what it
does, grouped by what it is about (model, data, optimisation, rollout, reward, logging, ...).

The text comes from the config classes themselves (pydantic ``Field(description=...)``), so help
and config cannot drift apart. A stage that overrides an inherited key's default (RL's
``learning_rate``) keeps the base class's description. The config class is imported only when
help is asked for: ``rlalign --help`` and every command that is not asking for help stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import textwrap
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

# Group title -> the keys it holds, in the order shown; a stage shows the groups it has keys in.
# Every key of every stage config has a group and a description (a test checks it).
GROUPS: dict[str, tuple[str, ...]] = {
    "model": ("model", "tokenizer", "lora", "vocab_size", "min_frequency",
              "max_position_embeddings", "attn_implementation"),
    "data": ("data", "eval_data", "world_seed", "world", "eval_fraction", "max_eval_blocks",
             "block_size", "max_length", "replay_data", "replay_ratio", "ptx_data"),
    "environment": ("env", "env_kwargs", "history", "max_turns", "env_seed", "eval_episodes"),
    "optimisation": ("max_steps", "learning_rate", "warmup_steps", "min_lr_ratio",
                     "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
                     "max_grad_norm", "per_device_train_batch_size",
                     "gradient_accumulation_steps", "global_batch_size", "bf16"),
    "rollout": ("prompts_per_iteration", "num_generations", "max_completion_length",
                "max_prompt_length", "temperature", "top_k", "top_p", "rollout_bf16"),
    "objective": ("algorithm", "beta", "kl_estimator", "loss_type", "num_iterations", "epsilon",
                  "epsilon_high", "scale_rewards", "gamma", "lam", "vf_coef", "cliprange_value",
                  "whiten_advantages", "ptx_coef", "ptx_batch_size", "use_margin",
                  "lm_loss_coef", "prior_coef"),
    "reward": ("reward_funcs", "reward_weights", "reward_model", "reward_model_weight",
               "reward_timeout"),
    "logging and checkpoints": ("output_dir", "overwrite_output_dir", "logging_steps",
                                "eval_steps", "per_device_eval_batch_size", "eval_prompts",
                                "save_rollouts", "save_steps", "save_total_limit",
                                "disable_tqdm", "report_to"),
    "run": ("seed", "device", "distributed", "torch_compile"),
}  # fmt: skip
# The same for the control agents (``rlalign control train``), whose keys are SB3's and the
# language model's where the knob is the same.
CONTROL_GROUPS: dict[str, tuple[str, ...]] = {
    "environment": ("env_kwargs", "n_envs", "total_steps"),
    "policy network": ("hidden_sizes", "activation", "normalize_obs", "log_std_init",
                       "rescale_actions", "use_sde", "sde_sample_freq"),
    "rollout": ("n_steps",),
    "optimisation": ("learning_rate", "anneal_lr", "max_grad_norm", "num_iterations",
                     "minibatch_size", "target_kl"),
    "objective": ("gamma", "lam", "epsilon", "cliprange_value", "vf_coef", "ent_coef",
                  "normalize_reward", "whiten_advantages"),
    "evaluation": ("eval_every", "eval_episodes", "final_eval_episodes", "stop_at_threshold",
                   "keep_best"),
    "checkpoints": ("save_every", "keep_checkpoints"),
    "run": ("seed", "torch_threads"),
}  # fmt: skip


TITLE = "config keys (key=value on the command line, or in the --config YAML file)"


def type_name(annotation: Any) -> str:
    """A key's type as a user types it: ``INT``, ``FLOAT``, ``{grpo,rloo}``, ``LIST``, ...
    (``None`` as a possible value is shown by the default, not the type)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        parts = [type_name(a) for a in typing.get_args(annotation) if a is not type(None)]
        return "|".join(dict.fromkeys(parts))
    if origin is typing.Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(annotation)) + "}"
    if origin in (list, tuple):
        return "LIST"
    if origin is dict or annotation is dict:
        return "MAPPING"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "SECTION"
    names = {int: "INT", float: "FLOAT", bool: "BOOL", str: "STR"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)).upper())


def description(cls: type[BaseModel], key: str) -> str:
    """The key's description, from ``cls`` or the nearest base class that gives one."""
    for klass in cls.__mro__:
        fields = getattr(klass, "__pydantic_fields__", None) or {}
        field = fields.get(key)
        if field is not None and field.description:
            return " ".join(field.description.split())
    return ""


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, (list, dict)) and not value:
        return "empty"
    return f"default {value}"


def section_class(annotation: Any) -> type[BaseModel] | None:
    """The config class of a nested section (``lora: LoraSettings | None``), else ``None``."""
    candidates = typing.get_args(annotation) or (annotation,)
    for a in candidates:
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def key_entries(cls: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """``(key, type, default, description)`` of every key, nested sections as ``lora.r``."""
    rows = []
    for key, info in cls.model_fields.items():
        rows.append((prefix + key, type_name(info.annotation), default_text(info),
                     description(cls, key)))  # fmt: skip
        section = section_class(info.annotation)
        if section is not None:
            rows += key_entries(section, prefix=f"{prefix}{key}.")
    return rows


def group_of(key: str, groups: dict[str, tuple[str, ...]] = GROUPS) -> str:
    """The title of the group holding ``key`` (a nested ``lora.r`` goes with ``lora``)."""
    top = key.split(".")[0]
    return next((title for title, keys in groups.items() if top in keys), "other")


def keys_help(
    cls: type[BaseModel],
    *,
    groups: dict[str, tuple[str, ...]] | None = GROUPS,
    title: str = TITLE,
    only: set[str] | None = None,
    width: int | None = None,
) -> str:
    """The help text listing every key of ``cls`` (those in ``only``, when given), by
    ``groups`` (``None``: one list)."""
    width = width or min(shutil.get_terminal_size((100, 24)).columns, 100)
    entries = [e for e in key_entries(cls) if only is None or e[0].split(".")[0] in only]
    if groups is not None:
        order = [*groups, "other"]
        # a stable sort: within a group, the keys keep the class's order
        entries.sort(key=lambda e: order.index(group_of(e[0], groups)))
    lines = [f"{title}:"]
    current = None
    for key, kind, default, text in entries:
        group = group_of(key, groups) if groups is not None else ""
        if group != current:
            lines += ["", f"{group}:"] if group else [""]
            current = group
        lines.append(f"  {key}={kind}  ({default})")
        if text:
            lines += textwrap.wrap(text, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


@dataclass(frozen=True)
class KeySection:
    """One list of keys in a command's help: the keys of ``config`` (``"module:ClassName"``),
    under ``title``, by ``groups`` (``None``: one list); ``own_only``: only the keys the class
    itself declares (what it adds to, or changes in, its base class)."""

    config: str
    title: str = TITLE
    groups: dict[str, tuple[str, ...]] | None = field(default_factory=lambda: GROUPS)
    own_only: bool = False

    def text(self) -> str:
        module, _, name = self.config.partition(":")
        cls = getattr(importlib.import_module(module), name)
        only = set(cls.__annotations__) if self.own_only else None
        return keys_help(cls, groups=self.groups, title=self.title, only=only)


def add_keys_help(parser: argparse.ArgumentParser, *sections: KeySection | str) -> None:
    """Make ``parser``'s ``--help`` end with the keys of each section (a string is a config
    class with the default section); the classes are imported only when help is printed."""
    format_help = parser.format_help
    parts = [KeySection(s) if isinstance(s, str) else s for s in sections]

    def with_keys() -> str:
        return "\n\n".join([format_help().rstrip("\n")] + [p.text() for p in parts]) + "\n"

    parser.format_help = with_keys  # type: ignore[method-assign]
