"""`rlalign eval`: the report card of a model on the held-out questions."""

from __future__ import annotations

import json

from rlalign.cli import main
from rlalign.data.world import World
from rlalign.report_card import eval_rows, evaluate_model, format_card


def test_eval_cli_json_on_an_untrained_model(base_model_dir, world_dir, capsys):
    assert (
        main(
            [
                "eval",
                str(base_model_dir),
                "--data",
                str(world_dir),
                "--json",
                "--max-new-tokens",
                "8",
            ]
        )
        == 0
    )
    card = json.loads(capsys.readouterr().out)
    for key in (
        "fact_accuracy",
        "hallucination_rate",
        "arithmetic_accuracy",
        "harmful_refusal_rate",
        "benign_overrefusal_rate",
    ):
        assert 0.0 <= card[key] <= 1.0
    from rlalign.data.world import KINDS

    n_rows = sum(  # the question sets (eval/ also holds the held-out preference pairs)
        len((world_dir / "eval" / f"{name}.jsonl").read_text().splitlines()) for name in KINDS
    )
    assert sum(c["n"] for c in card["counts"].values()) == n_rows
    # an untrained model neither refuses harmful requests nor answers facts
    assert card["fact_accuracy"] == 0.0 and card["harmful_refusal_rate"] == 0.0


def test_evaluate_model_reads_completions_with_the_verifiers(monkeypatch):
    """With a stand-in generator that answers canonically, the card is perfect."""
    import rlalign.report_card as report_card

    rows = eval_rows(None, seed=0)
    canonical = {
        r["prompt"]: r["response"] for rs in World().questions["eval"].values() for r in rs
    }

    def fake_generate(model, tokenizer, prompts, **kw):
        return [type("S", (), {"completion": canonical[p]})() for p in prompts]

    monkeypatch.setattr(report_card, "generate_text", fake_generate)

    class Model:
        training = False

        def eval(self):
            return self

        def train(self, mode=True):
            return self

    card, completions = evaluate_model(Model(), None, rows, batch_size=7)
    assert completions == [canonical[r["prompt"]] for r in rows]
    assert card["fact_accuracy"] == 1.0 and card["hallucination_rate"] == 0.0
    assert card["harmful_refusal_rate"] == 1.0 and card["benign_overrefusal_rate"] == 0.0
    table = format_card({"sft": card, "rl": card})
    assert "known facts answered correctly" in table and "100.0%" in table


def test_eval_bad_model_dir(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "Traceback" not in capsys.readouterr().err
