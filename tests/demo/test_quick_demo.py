"""`rlalign demo --quick`: the whole flow runs end to end and writes its report."""

from __future__ import annotations

import json

import pytest

from rlalign.cli import main
from rlalign.data.verifiers import REPORT_CARD_KEYS
from rlalign.goals import demo_goals
from rlalign.report_card import format_card


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~3 minutes alone on 2 cores; far longer beside other jobs
def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "known facts answered correctly" in printed
    report = json.loads((out / "report.json").read_text())
    assert set(report["stages"]) == {"pretrained", "sft", "rl"}
    for card in report["stages"].values():
        for key in (*REPORT_CARD_KEYS, "reward_mean"):
            assert key in card
        for key in REPORT_CARD_KEYS:
            assert 0.0 <= card[key] <= 1.0
    # SFT teaches the answer format: its reward is far above the pretrained model's
    assert (
        report["stages"]["sft"]["reward_mean"] > report["stages"]["pretrained"]["reward_mean"] + 0.3
    )
    # and RL improves on SFT where it is rewarded: the composite reward on held-out questions
    assert report["stages"]["rl"]["reward_mean"] > report["stages"]["sft"]["reward_mean"]
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
    for stage in ("pretrain", "sft", "reward", "rl"):  # each stage's own report, linked
        assert (out / stage / "report.html").is_file()
        assert f'href="{stage}/report.html"' in html
