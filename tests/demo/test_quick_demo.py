"""`rlalign demo`: the whole flow runs end to end and writes its report.

At the smallest sizes that run every stage: that the flow learns (SFT far above the pretrained
model, RL above SFT) takes `rlalign demo --quick`'s sizes, 11 minutes on one thread of an
AVX2-only CPU, and is checked on a fresh run by `make goals-quick`, which CI runs after
`make test`.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from rlalign.claims import demo_goals, quick_demo_goals
from rlalign.cli import main
from rlalign.data.verifiers import REPORT_CARD_KEYS
from rlalign.lm.models import load_model
from rlalign.report_card import format_card
from rlalign.train.average import average_weights

# Every stage, a few steps each, on a small world (a fifth of the preference pairs and held-out
# questions, which the reward model's prior and the report cards read in full): the orchestration
# (stages chained, one report, every card and plot), not the learning.
SMALLEST_SIZES = [
    "pretrain_steps=2", "pretrain_batch_size=4", "block_size=64", "sft_steps=2",
    "reward_steps=1", "rl_steps=2", "eval_steps=1", "prompts_per_iteration=4",
    "num_generations=2", "ptx_batch_size=4", "corpus_repeats=1", "vocab_size=300",
    "num_countries=3", "num_unknown=4", "max_operand=3", "arithmetic_repeats=2",
    "rl_only_fraction=0.5", "num_threads=1",  # the other pytest worker has the other core
]  # fmt: skip


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), *SMALLEST_SIZES]) == 0
    printed = capsys.readouterr().out
    assert "known facts answered correctly" in printed
    report = json.loads((out / "report.json").read_text())
    assert set(report["stages"]) == {"pretrained", "sft", "rl"}
    for card in report["stages"].values():
        for key in (*REPORT_CARD_KEYS, "reward_mean"):
            assert key in card
        for key in REPORT_CARD_KEYS:
            assert 0.0 <= card[key] <= 1.0
    assert report["threads"] == {"num_threads": 1}  # given, not timed: no "auto" entry
    # the quick demo's goals (what `make goals-quick` asserts) are judged on this report too
    assert [g.name for g in quick_demo_goals(report)] == [
        "SFT reward ≥ pretrained + 0.3",
        "RL reward above SFT",
    ]
    # the README's goals, judged on this run (what `make goals` asserts on the full demo)
    goals = report["goals"]
    assert [g["name"] for g in goals] == [g.name for g in demo_goals(report, [0.0])]
    assert "the README's goals: " in printed
    html = (out / "report.html").read_text()
    assert (
        "<table>" in html
        and "data:image/png;base64," in html
        and "http" not in html.split("<body>")[1]
    )
    for name in ("rl_reward.png", "rl_kl.png"):
        assert (out / "plots" / name).stat().st_size > 1000
    for stage in ("pretrain", "sft", "reward", "rl"):
        assert (out / stage / "final" / "config.json").is_file()
        assert (out / stage / "metrics.jsonl").is_file()
    for stage in ("pretrain", "sft", "rl"):  # each model's card carries the report card
        card = (out / stage / "final" / "README.md").read_text()
        assert format_card(report["stages"]) in card.split("## Report card (rlalign demo)")[1]
    assert list((out / "rl" / "rollouts").glob("iter_*.jsonl"))
    # the aligned model is the weight average of the run's checkpoints (here: its two steps)
    steps = [load_model(out / "rl" / "checkpoints" / f"step_{k}").state_dict() for k in (1, 2)]
    expected = average_weights(steps)
    got = load_model(out / "rl" / "final").state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert not all(torch.equal(steps[0][k], steps[1][k]) for k in expected)
    # RL asked the exported (small) world's questions, not those of the default world
    asked = {
        json.loads(line)["prompt"]
        for path in (out / "rl" / "rollouts").glob("iter_*.jsonl")
        for line in path.read_text().splitlines()
    }
    exported = {json.loads(line)["prompt"] for line in (out / "world" / "rl_prompts.jsonl").open()}
    assert asked and asked <= exported
    assert sum(1 for _ in (out / "world" / "eval" / "facts.jsonl").open()) < 20  # 3 countries
    # the world knobs reach the world: questions only RL asks are in no SFT conversation
    world = yaml.safe_load((out / "world" / "world.yaml").read_text())
    assert (world["arithmetic_repeats"], world["rl_only_fraction"]) == (2, 0.5)
    sft = {
        json.loads(line)["messages"][0]["content"] for line in (out / "world" / "sft.jsonl").open()
    }
    assert sft and exported - sft
    for stage in ("pretrain", "sft", "reward", "rl"):  # each stage's own report, linked
        assert (out / stage / "report.html").is_file()
        assert f'href="{stage}/report.html"' in html


@pytest.mark.slow
def test_several_rl_runs_end_in_their_weight_average(tmp_path):
    """``rl_runs=2``: two RL runs with their own seeds from one SFT model, each a whole run
    (config, metrics, report), and the card's RL model is exactly the weight average of both
    runs' checkpoints."""
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), *SMALLEST_SIZES, "rl_runs=2"]) == 0
    runs = [out / "rl-1", out / "rl-2"]
    seeds = [yaml.safe_load((d / "config.yaml").read_text())["seed"] for d in runs]
    assert seeds == [0, 1000]
    for run in runs:
        assert (run / "metrics.jsonl").is_file() and (run / "report.html").is_file()
    finals = [load_model(d / "final").state_dict() for d in runs]
    assert not all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])
    members = [
        load_model(d / "checkpoints" / f"step_{k}").state_dict() for d in runs for k in (1, 2)
    ]
    expected = average_weights(members)
    got = load_model(out / "rl" / "final").state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["rl_runs"] == 2 and report["goals"]
