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


class Weights(Config):
    reward_weights: list[float] | None = None


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
    assert load_config(Weights, None, ["reward_weights=1"]).reward_weights == [1.0]
    assert load_config(Weights, None, ["reward_weights=0.5,2"]).reward_weights == [0.5, 2.0]


def test_an_override_is_the_text_typed_where_yaml_1_1_would_change_it():
    """A # would start a comment, 010 be octal, yes a boolean (and 1 as an int), a date a
    date: the value typed is what the field gets, or refuses with its own message."""
    cfg = load_config(TrainConfig, None, ["model=runs/exp #3", "max_steps=010", "bf16=yes"])
    assert cfg.model == "runs/exp #3" and cfg.max_steps == 10 and cfg.bf16 is True
    assert load_config(TrainConfig, None, ["model=2024-01-01"]).model == "2024-01-01"
    assert load_config(TrainConfig, None, ["model=no"]).model == "no"
    assert load_config(TrainConfig, None, ['model="quoted #1"']).model == "quoted #1"
    for bad in ("max_steps=yes", "max_steps=1:30"):
        with pytest.raises(ConfigError, match="max_steps"):
            load_config(TrainConfig, None, [bad])


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


def test_a_nested_override_fills_a_section_the_file_leaves_empty(tmp_path):
    """A run's config.yaml says ``lora: null``; ``lora.r=4`` over it turns LoRA on, as it does
    without a file, while a scalar is still no section."""
    path = tmp_path / "c.yaml"
    dump_config(TrainConfig(), path)
    assert "lora: null" in path.read_text()
    assert load_config(TrainConfig, path, ["lora.r=4"]).lora == Lora(r=4)
    with pytest.raises(ConfigError, match="'model' is not a section"):
        load_config(TrainConfig, path, ["model.r=4"])


def test_dump_round_trip(tmp_path):
    cfg = load_config(TrainConfig, None, ["lora.r=2", "learning_rate=3e-4"])
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_config(TrainConfig, tmp_path / "config.yaml") == cfg


# --- keys renamed to one name per knob --------------------------------------------------------


def test_an_old_key_is_accepted_with_a_warning_that_names_the_new_one(tmp_path):
    from rlalign.config import RenamedKeyWarning
    from rlalign.control.train_config import PPOConfig

    with pytest.warns(RenamedKeyWarning, match=r"override 'clip_eps=0.3'.*now 'epsilon'"):
        cfg = load_config(PPOConfig, None, ["clip_eps=0.3"])
    assert cfg.epsilon == 0.3
    path = tmp_path / "ppo.yaml"
    path.write_text("seed: 1\ngae_lambda: 0.8\n")
    with pytest.warns(
        RenamedKeyWarning, match=r"ppo\.yaml:2: config key 'gae_lambda' is now 'lam'"
    ):
        assert load_config(PPOConfig, path).lam == 0.8
    with pytest.warns(RenamedKeyWarning, match="'n_epochs' is now 'num_iterations'"):
        assert PPOConfig(n_epochs=3).num_iterations == 3


def test_an_old_key_overrides_a_default_given_by_the_new_name():
    from rlalign.control.train_config import PPOConfig

    with pytest.warns(FutureWarning):
        cfg = load_config(PPOConfig, None, ["clip_value=0.5"], defaults={"cliprange_value": 0.1})
    assert cfg.cliprange_value == 0.5


def test_old_and_new_name_together_is_an_error(tmp_path):
    from pydantic import ValidationError

    from rlalign.control.train_config import PPOConfig

    with pytest.raises(ValidationError, match="give 'epsilon' only"):
        PPOConfig(clip_eps=0.2, epsilon=0.1)
    path = tmp_path / "ppo.yaml"
    path.write_text("epsilon: 0.1\nclip_eps: 0.2\n")
    with pytest.warns(FutureWarning), pytest.raises(ConfigError, match=r"ppo\.yaml:2: 'clip_eps'"):
        load_config(PPOConfig, path)


def test_the_cli_prints_one_line_for_an_old_key(tmp_path, capsys):
    from rlalign.cli import main

    argv = ["control", "train", "--env", "CartPole-v1", "--steps", "64", "--out", str(tmp_path),
            "--no-progress", "--no-baselines", "--no-report", "n_steps=16", "minibatch_size=32",
            "final_eval_episodes=1", "eval_every=64", "n_epochs=1"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "rlalign control: warning: override 'n_epochs=1': config key 'n_epochs' is now "
        "'num_iterations' (the old name is accepted until the next release)"
    ]
    assert "num_iterations: 1" in (tmp_path / "config.yaml").read_text()


def test_a_typo_of_an_old_key_suggests_the_current_name():
    from rlalign.control.train_config import PPOConfig

    with pytest.raises(
        ConfigError, match=r"unknown key 'clip_ep', did you mean 'epsilon' \(once 'clip_eps'\)\?"
    ):
        load_config(PPOConfig, None, ["clip_ep=0.1"])


def test_a_path_with_a_tilde_is_the_users_home(monkeypatch, tmp_path):
    """A YAML file (or a quoted override) keeps ~ as typed, which the shell would expand."""
    from rlalign.train.sft import SFTConfig

    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(SFTConfig, None, ["data=~/sft.jsonl", "output_dir=~/runs/sft"])
    assert cfg.data == str(tmp_path / "sft.jsonl")
    assert cfg.output_dir == str(tmp_path / "runs" / "sft")
    assert load_config(SFTConfig, None, ["data=a~b.jsonl"]).data == "a~b.jsonl"
