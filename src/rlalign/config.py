"""Typed configuration: pydantic models loaded from YAML and ``key=value`` overrides.

Every stage has a config class deriving from :class:`Config` (``extra="forbid"``), so a typo is
an error, not a silently ignored key::

    cfg = load_config(PretrainConfig, "pretrain.yaml", ["learning_rate=3e-4", "model=tiny"])

Overrides use dotted paths for nested sections (``lora.r=8``); values are parsed as YAML
scalars/lists (``reward_funcs=a.py:f,b.py:g`` becomes a list when the field is a list).
Errors name the file and line (for keys from a file) or the override, and suggest the closest
valid key: ``unknown key 'lr', did you mean 'learning_rate'?``.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from rlalign.errors import ConfigError, UserError
from rlalign.io import read_text

__all__ = [
    "Config",
    "ConfigError",
    "RenamedKeyWarning",
    "Seed",
    "dump_config",
    "load_config",
    "parse_overrides",
]


SEED_LIMIT = 2**32


def _check_seed(value: int) -> int:
    # numpy's and gymnasium's seeds are non-negative, numpy's legacy ones below 2**32; derived
    # seeds (seed * 1_000_003 + epoch, 1000 * seed + offset) then stay within torch's 64 bits
    if not 0 <= value < SEED_LIMIT:
        raise ValueError(f"a seed is a whole number from 0 to {SEED_LIMIT - 1} (2**32 - 1)")
    return value


Seed = Annotated[int, AfterValidator(_check_seed)]
"""A random seed, checked to be one that torch, numpy and gymnasium all accept."""

NumThreads = Annotated[
    Annotated[int, Field(ge=1)] | Literal["auto"] | None,
    Field(
        description="torch threads; auto: the count a short timing at start-up finds fastest for "
        "the model's width (remembered per machine); None: torch's default"
    ),
]
"""torch threads: a count, ``auto`` (timed: ``rlalign.precision.choose_threads``) or None
(torch's default); the demos' ``num_threads``."""


def seed_argument(text: str) -> int:
    """``argparse`` type of a ``--seed`` option: :data:`Seed`'s range, argparse's message."""
    try:
        return _check_seed(int(text))
    except ValueError as exc:
        problem = str(exc) if text.strip().lstrip("+-").isdigit() else "not a whole number"
        raise argparse.ArgumentTypeError(f"{problem}, got {text!r}") from None


class RenamedKeyWarning(FutureWarning):
    """A config key given by its old name; the message names the new one."""


class Config(BaseModel):
    """Base class of every rlalign config: unknown keys are errors; assignment is validated;
    a number is finite (``nan`` or ``inf`` is never a setting: ``learning_rate=inf`` would train
    one step into NaN weights).

    ``renamed_keys`` maps old key names to new ones: an old name is still accepted, for one
    release, with a :class:`RenamedKeyWarning` that names the new key.
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False
    )
    renamed_keys: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _accept_renamed_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not cls.renamed_keys:
            return data
        data = dict(data)
        for old, new in cls.renamed_keys.items():
            if old in data:
                if new in data:
                    raise ValueError(f"'{old}' is the old name of '{new}': give '{new}' only")
                data[_current_name(cls, old)] = data.pop(old)
        return data


def current_keys(cls: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with its top-level keys by their current names (a warning for each old one):
    for a layer of settings merged over another, so that an old name overrides the other
    layer's value of the new one instead of clashing with it."""
    return {_current_name(cls, key): value for key, value in data.items()}


def _current_name(cls: type[BaseModel], key: str, where: str = "") -> str:
    """A top-level key by its current name, with a warning when it came by an old one.

    :func:`load_config` renames each layer (defaults, file, overrides) before the layers merge,
    so an old name given by the user overrides a default given by the new one."""
    new = getattr(cls, "renamed_keys", {}).get(key)
    if new is None:
        return key
    warnings.warn(
        f"{where + ': ' if where else ''}config key '{key}' is now '{new}' (the old name is "
        "accepted until the next release)",
        RenamedKeyWarning,
        stacklevel=3,
    )
    return new


C = TypeVar("C", bound=Config)


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path of a YAML mapping document to its 1-based line number."""
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                path = (*prefix, str(key_node.value))
                lines[path] = key_node.start_mark.line + 1
                walk(value_node, path)

    if root is not None:
        walk(root, ())
    return lines


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    if not path.exists():
        raise ConfigError(f"{path}: config file not found (check the path given to --config)")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML config file")
    try:
        text = read_text(path, what="config", kinds="YAML")
    except UserError as exc:  # not UTF-8, or a binary file
        raise ConfigError(str(exc)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}:1: a config file must be a mapping of key: value, got {type(data).__name__}"
        )
    return data, _key_lines(text)


def parse_overrides(overrides: Sequence[str]) -> list[tuple[tuple[str, ...], Any, str]]:
    """Parse ``key=value`` strings into ``(path, value, original)``; values are YAML scalars.

    A comma-separated value without brackets (``a.py:f,b.py:g``) is kept as a string here; it
    is split into a list only when the target field is a list (see :func:`_coerce_lists`).
    """
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override '{item}': expected key=value (for example seed=1)")
        parsed.append((tuple(key.split(".")), _override_value(raw), item))
    return parsed


_LEADING_ZERO = re.compile(r"\s*[+-]?0\d+\s*")  # 010: octal 8 in YAML 1.1
_SEXAGESIMAL = re.compile(r"\s*[+-]?\d+(:[0-5]?\d)+\s*")  # 1:30: 90 in YAML 1.1


def _override_value(raw: str) -> Any:
    """A ``key=value`` value as YAML reads it (numbers, lists, dicts, null, true/false), except
    where YAML 1.1 would change what was typed: a ``#`` would start a comment and cut the text
    (``output_dir=runs/exp #3``), ``010`` would be octal 8 and ``1:30`` 90, ``yes``/``no``/
    ``on``/``off`` booleans (``max_steps=yes`` would be 1), ``2024-01-01`` a date. Those stay
    the text typed, which the field then reads (a bool field takes ``yes``; an int field
    refuses it) or refuses with the field's own message."""
    if not raw.strip():
        return ""
    if _LEADING_ZERO.fullmatch(raw):
        return int(raw.strip(), 10)
    quoted_or_flow = raw.strip()[:1] in ("'", '"', "[", "{")  # YAML reads a # in them as text
    if ("#" in raw and not quoted_or_flow) or _SEXAGESIMAL.fullmatch(raw):
        return raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    yes_no = isinstance(value, bool) and raw.strip().lower() not in ("true", "false")
    return raw.strip() if yes_no or isinstance(value, datetime.date) else value


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any, origin: str) -> None:
    node = data
    for part in path[:-1]:
        if node.get(part) is None:  # absent, or `lora: null` as a run's config.yaml writes it
            node[part] = {}
        child = node[part]
        if not isinstance(child, dict):
            raise ConfigError(f"override '{origin}': '{part}' is not a section")
        node = child
    node[path[-1]] = value


def _field_names(cls: type[BaseModel], path: Sequence[str | int]) -> list[str]:
    """Valid field names at a (possibly nested) location of a config class."""
    model: Any = cls
    for part in path:
        field = model.model_fields.get(part) if isinstance(model, type) else None
        if field is None:
            return []
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            candidates = [
                a
                for a in getattr(ann, "__args__", ())
                if isinstance(a, type) and issubclass(a, BaseModel)
            ]
            if not candidates:
                return []
            model = candidates[0]
    return list(model.model_fields) if isinstance(model, type) else []


def _coerce_lists(cls: type[BaseModel], data: dict[str, Any]) -> None:
    """Split ``a,b`` strings (and a single ``a``) into lists for list-typed top-level fields."""
    for name, field in cls.model_fields.items():
        value = data.get(name)
        annotation = field.annotation
        options = (
            getattr(annotation, "__args__", ())
            if getattr(annotation, "__origin__", None) is not list
            else ()
        )
        is_list = getattr(annotation, "__origin__", None) is list or any(
            getattr(a, "__origin__", None) is list for a in options
        )
        if isinstance(value, str) and is_list:
            data[name] = [v.strip() for v in value.split(",") if v.strip()]
        elif is_list and isinstance(value, int | float) and not isinstance(value, bool):
            data[name] = [value]  # reward_weights=1: a list of one


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> C:
    """Build a validated config: class defaults < ``defaults`` < YAML file < ``key=value``."""
    data: dict[str, Any] = dict(defaults or {})
    lines: dict[tuple[str, ...], int] = {}
    source = "config"
    if path is not None:
        file_data, lines = _read_yaml(Path(path))
        for key, value in file_data.items():
            new = _current_name(cls, key, f"{path}:{lines.get((key,), 1)}")
            if new != key and new in file_data:
                raise ConfigError(
                    f"{path}:{lines.get((key,), 1)}: '{key}' is the old name of '{new}', which "
                    f"the file also sets: keep only '{new}'"
                )
            data[new] = value
            if new != key and (key,) in lines:
                lines[(new,)] = lines.pop((key,))
        source = str(path)
    origins: dict[tuple[str, ...], str] = {}
    for key_path, value, original in parse_overrides(overrides):
        key_path = (_current_name(cls, key_path[0], f"override '{original}'"), *key_path[1:])
        _set_path(data, key_path, value, original)
        origins[key_path] = original
    _coerce_lists(cls, data)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise _friendly(exc, cls, source, lines, origins) from None


def _friendly(
    exc: ValidationError,
    cls: type[BaseModel],
    source: str,
    lines: dict[tuple[str, ...], int],
    origins: dict[tuple[str, ...], str],
) -> ConfigError:
    messages = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc) or "(root)"
        if loc in origins:
            where = f"override '{origins[loc]}'"
        elif loc in lines:
            where = f"{source}:{lines[loc]}"
        else:
            where = source
        if err["type"] == "extra_forbidden":
            valid = _field_names(cls, loc[:-1])
            # A typo of an old key name points to the key's current name.
            renamed = getattr(cls, "renamed_keys", {}) if len(loc) == 1 else {}
            close = difflib.get_close_matches(loc[-1], [*valid, *renamed], n=1, cutoff=0.5)
            if close and close[0] in renamed:
                hint = f", did you mean '{renamed[close[0]]}' (once '{close[0]}')?"
            elif close:
                hint = f", did you mean '{close[0]}'?"
            else:
                hint = f" (valid keys: {', '.join(valid)})"
            messages.append(f"{where}: unknown key '{key}'{hint}")
        else:
            given = err.get("input")
            shown = "" if isinstance(given, dict) else f" (got {given!r})"
            problem = err["msg"].removeprefix("Value error, ")  # pydantic's wrapper of ours
            messages.append(f"{where}: {key}: {problem}{shown}")
    return ConfigError("; ".join(messages))


def dump_config(config: BaseModel, path: str | Path) -> None:
    """Write the resolved config as YAML (so a run records exactly what it ran with)."""
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    Path(path).write_text(text, encoding="utf-8")
