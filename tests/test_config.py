"""Typed configs: YAML + key=value overrides, unknown keys with did-you-mean, file:line errors."""

from __future__ import annotations

import pytest

from rlalign.config import Config, ConfigError, dump_config, load_config


class Lora(Config):
    r: int = 8
    alpha: float = 16.0


class TrainConfig(Config):
    model: str = "tiny"
    learning_rate: float = 1e-3
    max_steps: int = 100
    bf16: bool = False
    reward_funcs: list[str] = []
    lora: Lora | None = None


def test_defaults_file_and_overrides_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 0.01\nmax_steps: 5\n")
    cfg = load_config(TrainConfig, path, ["max_steps=7", "bf16=true"])
    assert cfg.learning_rate == 0.01 and cfg.max_steps == 7 and cfg.bf16 is True
    assert cfg.model == "tiny"


def test_nested_override_and_comma_list():
    cfg = load_config(TrainConfig, None, ["lora.r=4", "reward_funcs=a.py:f,b.py:g"])
    assert cfg.lora == Lora(r=4)
    assert cfg.reward_funcs == ["a.py:f", "b.py:g"]
    assert load_config(TrainConfig, None, ["reward_funcs=a.py:f"]).reward_funcs == ["a.py:f"]


def test_unknown_key_in_file_names_line_and_suggests(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: tiny\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, path)
    assert str(info.value) == f"{path}:2: unknown key 'learning_rat', did you mean 'learning_rate'?"


def test_unknown_override_suggests():
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, None, ["max_step=3"])
    assert "override 'max_step=3': unknown key 'max_step', did you mean 'max_steps'?" in str(
        info.value
    )


def test_unknown_nested_key_suggests():
    with pytest.raises(ConfigError, match=r"unknown key 'lora\.alpah', did you mean 'alpha'"):
        load_config(TrainConfig, None, ["lora.alpah=3"])


def test_wrong_type_names_key_and_value(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("max_steps: many\n")
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:1: max_steps:") and "'many'" in msg


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("a: [1, 2\n", "invalid YAML"), ("- 1\n- 2\n", "must be a mapping")],
)
def test_malformed_file(tmp_path, text, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(TrainConfig, path)


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(TrainConfig, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(TrainConfig, None, ["max_steps"])


def test_dump_round_trip(tmp_path):
    cfg = load_config(TrainConfig, None, ["lora.r=2", "learning_rate=3e-4"])
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_config(TrainConfig, tmp_path / "config.yaml") == cfg
