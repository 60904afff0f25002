"""`rlalign demo tool --quick`: the calculator flow runs end to end and writes its card."""

from __future__ import annotations

import json
import random

import pytest

from rlalign.cli import main
from rlalign.demo_tool import format_tool_card
from rlalign.envs.calculator import EVAL_SEED_START, expert_messages, train_seeds
from rlalign.lm.tokenizer import train_tokenizer


def test_split_digits_flags_merged_numbers_only():
    from rlalign.demo_tool import split_digits

    rng = random.Random(0)
    whole = [" ".join(str(rng.randrange(10, 10_000)) for _ in range(40)) for _ in range(200)]
    merged = train_tokenizer(whole, vocab_size=400)
    flagged = split_digits(merged, whole[:20])
    assert flagged and all(sum(ch.isdigit() for ch in t) >= 2 for t in flagged)
    spaced = [m["content"] for s in train_seeds(100) for m in expert_messages(s)]
    assert split_digits(train_tokenizer(spaced + whole, vocab_size=400), spaced) == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_tool_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "tool", "--quick", "--out", str(out), "num_threads=1"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    n = report["config"]["eval_episodes"]
    assert report["eval_seeds"] == [EVAL_SEED_START, EVAL_SEED_START + n - 1]  # held out
    assert set(report["stages"]) == {"sft", "rl", "sft_no_tool"}
    for cells in report["stages"].values():
        assert set(cells) == {"tool", "no_tool"}
        for cell in cells.values():
            assert set(cell) == {"accuracy", "tool_calls", "invalid_tool_calls"}
            assert 0.0 <= cell["accuracy"] <= 1.0
            assert (cell["accuracy"] * n) == pytest.approx(round(cell["accuracy"] * n))
            assert 0.0 <= cell["invalid_tool_calls"] <= cell["tool_calls"] <= 3
    stages = ("tokenizer", "sft", "rl", "sft_no_tool", "eval_sft", "eval_rl", "total")
    assert set(stages) <= set(report["seconds"])
    assert report["cpu"] in printed and report["torch_threads"] >= 1
    assert f"accuracy on {n} held-out sums" in printed and "with the tool" in printed
    for label in ("SFT on tool transcripts", "RL in the calculator env", "SFT on answers only"):
        assert label in printed
    for stage in ("sft", "rl", "sft_no_tool"):  # each stage's own run directory
        assert (out / stage / "final" / "config.json").is_file()
        card = (out / stage / "final" / "README.md").read_text()
        section = card.split("## Calculator (rlalign demo tool)")[1]
        assert format_tool_card(report["stages"], n) in section
    assert (out / "tokenizer" / "tokenizer.json").is_file()
