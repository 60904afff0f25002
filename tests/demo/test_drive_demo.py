"""`rlalign demo drive --quick`: the car's language-model flow end to end, and a table whose
rows agree with evaluating each driver again on its own."""

from __future__ import annotations

import json

import pytest

from rlalign.cli import main
from rlalign.control.baselines import make_baseline
from rlalign.control.envs import env_factory
from rlalign.control.evaluate import evaluate
from rlalign.control.runs import eval_policy
from rlalign.demo_drive import QUICK_DRIVE, DriveDemoConfig, format_table
from rlalign.io import read_jsonl


@pytest.fixture(scope="module")
def drive_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("drive") / "run"
    assert main(["demo", "drive", "--quick", "--out", str(out), "rl_steps=1", "num_threads=1"]) == 0
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_drive_demo_writes_every_stage_and_one_table(drive_run):
    out, report = drive_run
    for path in ("tokenizer/tokenizer.json", "sft/final/config.json", "rl/final/config.json"):
        assert (out / path).is_file(), path
    kw = QUICK_DRIVE["env_kwargs"]
    transcripts = read_jsonl(out / "transcripts.jsonl")
    assert len(transcripts) <= QUICK_DRIVE["transcript_episodes"] * kw["max_steps"]

    drivers = report["drivers"]
    assert list(drivers) == ["rule_based", "constant_speed", "random", "lm sft (bc)", "lm sft",
                             "lm rl"]  # fmt: skip
    for name, row in drivers.items():
        assert row["episodes"] == QUICK_DRIVE["eval_episodes"]
        assert 0 < row["episode_length"] <= kw["max_steps"]
        assert ("invalid_actions_per_episode" in row) == name.startswith("lm")
    assert format_table(drivers) in (out / "report.md").read_text()
    for stage in ("sft", "rl"):
        card = (out / stage / "final" / "README.md").read_text()
        assert format_table(drivers) in card.split("## Driving (rlalign demo drive)")[1]
    stages = {k: v for k, v in report["seconds"].items() if k != "total"}
    assert {"transcripts", "tokenizer", "sft", "dagger_1_drive", "dagger_1_sft", "rl",
            "eval_lm_sft_bc", "eval_lm_sft", "eval_lm_rl"} <= set(stages)  # fmt: skip
    assert report["seconds"]["total"] >= sum(stages.values()) - 1.0
    assert all(stages[k] > 0 for k in ("sft", "rl", "eval_lm_sft", "eval_lm_rl"))
    rl = report["rl"]
    assert rl["rollouts"] >= 1 and rl["env_steps"] > 0
    assert rl["env_steps_per_second"] == pytest.approx(rl["env_steps"] / stages["rl"], rel=0.05)


@pytest.mark.slow
def test_the_table_agrees_with_evaluating_each_driver_again(drive_run):
    out, report = drive_run
    n, kw = QUICK_DRIVE["eval_episodes"], QUICK_DRIVE["env_kwargs"]
    make_env = env_factory("rlalign/Driving-v0", kw)
    rule = make_baseline("rule_based", make_env().unwrapped.cfg, 0)
    assert report["drivers"]["rule_based"] == evaluate(make_env, rule, n, 0).summary()
    # the RL run directory drives the car it was trained in (its config's env_kwargs)
    again = eval_policy(out / "rl", n, 0)
    assert again["policy"] == "lm" and again["episode_length"] <= kw["max_steps"]
    assert {k: again[k] for k in report["drivers"]["lm rl"]} == report["drivers"]["lm rl"]
    # DAgger: the model of the round drove its episodes, the expert's words are the labels,
    # and the next SFT started from it and read every transcript so far
    labelled = [row for _, row in read_jsonl(out / "dagger_1.jsonl")]
    assert len(read_jsonl(out / "transcripts_dagger_1.jsonl")) == len(
        read_jsonl(out / "transcripts.jsonl")
    ) + len(labelled)  # fmt: skip
    import yaml

    dagger_cfg = yaml.safe_load((out / "sft_dagger_1" / "config.yaml").read_text())
    assert dagger_cfg["model"] == str(out / "sft" / "final")
    rl_cfg = yaml.safe_load((out / "rl" / "config.yaml").read_text())
    assert rl_cfg["model"] == str(out / "sft_dagger_1" / "final")
    assert rl_cfg["scale_rewards"] == DriveDemoConfig().scale_rewards == "batch"
