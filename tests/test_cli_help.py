"""``rlalign STAGE --help`` lists every config key with its type, default and description."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Literal

import pytest
from pydantic import Field

from rlalign.cli import main
from rlalign.commands.keys_help import (
    CONTROL_GROUPS,
    GROUPS,
    description,
    group_of,
    key_entries,
    keys_help,
    type_name,
)
from rlalign.config import Config
from rlalign.control.train_config import CommonConfig, PPOConfig, ReinforceConfig
from rlalign.demo import DemoConfig
from rlalign.demo_drive import DriveDemoConfig
from rlalign.demo_tool import ToolDemoConfig
from rlalign.train.pretrain import PretrainConfig
from rlalign.train.reward_model import RewardConfig
from rlalign.train.rl_config import RLConfig
from rlalign.train.sft import SFTConfig

STAGES = {"pretrain": PretrainConfig, "sft": SFTConfig, "reward": RewardConfig, "rl": RLConfig}
EVERY_CONFIG = [*STAGES.values(), PPOConfig, ReinforceConfig, DemoConfig, DriveDemoConfig,
                ToolDemoConfig]  # fmt: skip


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("cls", EVERY_CONFIG, ids=lambda c: c.__name__)
def test_every_key_is_described(cls):
    missing = [key for key, _, _, text in key_entries(cls) if not text]
    assert not missing, f"{cls.__name__}: keys without a description: {missing}"


@pytest.mark.parametrize("cls", list(STAGES.values()), ids=lambda c: c.__name__)
def test_every_stage_key_has_a_group(cls):
    assert [k for k, *_ in key_entries(cls) if group_of(k) == "other"] == []


@pytest.mark.parametrize("cls", [PPOConfig, ReinforceConfig], ids=lambda c: c.__name__)
def test_every_control_key_has_a_group(cls):
    assert [k for k, *_ in key_entries(cls) if group_of(k, CONTROL_GROUPS) == "other"] == []


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_help_lists_every_key_with_type_and_default(capsys, stage):
    text = help_text(capsys, stage)
    cls = STAGES[stage]
    for key, info in cls.model_fields.items():
        default = info.get_default(call_default_factory=True)
        shown = "required" if info.is_required() else "empty" if default in ([], {}) else None
        line = f"  {key}={type_name(info.annotation)}  ({shown or f'default {default}'})"
        assert line in text, line
        assert " ".join(description(cls, key).split()[:4]) in " ".join(text.split())
    # the groups appear in GROUPS' order, each once
    titles = [line[:-1] for line in text.splitlines() if line[:-1] in GROUPS]
    assert titles == sorted(titles, key=list(GROUPS).index) and len(titles) == len(set(titles))


def test_rl_help_reads_as_documented(capsys):
    text = help_text(capsys, "rl")
    rollout = text.split("\nrollout:\n")[1].split("\n\n")[0]
    assert "  num_generations=INT  (default 4)\n      completions per prompt (the group)" in rollout
    assert "  beta=FLOAT  (default 0.04)" in text.split("\nobjective:\n")[1]
    assert "  loss_type={grpo,dapo,dr_grpo}  (default dapo)" in text
    assert "  lora.r=INT  (default 8)" in text.split("\nmodel:\n")[1].split("\n\n")[0]
    # an inherited key keeps its base description under the stage's own default
    assert "  learning_rate=FLOAT  (default 0.0001)\n      peak learning rate of AdamW" in text


def test_control_and_demo_help_list_their_keys(capsys):
    text = help_text(capsys, "control", "train")
    for key in CommonConfig.model_fields:
        assert f"  {key}=" in text.split("--algo ppo adds:")[0], key
    ppo_part = text.split("--algo ppo adds:")[1].split("--algo reinforce")[0]
    assert "  n_steps=INT  (default 128)" in ppo_part and "  seed=" not in ppo_part
    assert "  learning_rate=FLOAT  (default 0.003)" in text.split("--algo reinforce")[1]
    text = help_text(capsys, "demo")
    for cls in (DemoConfig, DriveDemoConfig, ToolDemoConfig):
        for key in cls.model_fields:
            assert f"  {key}=" in text, (cls.__name__, key)


class Sample(Config):
    n: int = Field(3, description="a count")
    kind: Literal["a", "b"] = Field("a", description="a choice")
    maybe: float | None = Field(None, description="an optional number")
    names: list[str] = Field(default_factory=list, description="a list")
    extra: dict[str, Any] = Field(default_factory=dict, description="a mapping")
    path: str = Field(..., description="a required path")


class Child(Sample):
    n: int = 5  # a new default, the description of the base


def test_keys_help_by_hand():
    text = keys_help(Child, groups=None, title="keys", width=80)
    assert text == (
        "keys:\n\n"
        "  n=INT  (default 5)\n      a count\n"
        "  kind={a,b}  (default a)\n      a choice\n"
        "  maybe=FLOAT  (default None)\n      an optional number\n"
        "  names=LIST  (empty)\n      a list\n"
        "  extra=MAPPING  (empty)\n      a mapping\n"
        "  path=STR  (required)\n      a required path"
    )
    assert keys_help(Child, groups={"g": ("path",)}, title="k").startswith(
        "k:\n\ng:\n  path=STR  (required)\n      a required path\n\nother:\n  n=INT"
    )


def test_top_level_help_imports_no_config_class():
    """The keys are read only when a stage's help is printed: ``rlalign --help`` stays fast."""
    code = (
        "import sys, contextlib, io\n"
        "from rlalign.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('rlalign.train', 'torch'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
