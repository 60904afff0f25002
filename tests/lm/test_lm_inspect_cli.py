"""Next-token inspection and the ``next-token`` / ``generate`` commands, bad input included."""

from __future__ import annotations

import json

import pytest
import torch

from rlalign.cli import main
from rlalign.errors import UserError
from rlalign.lm.inspect import format_table, next_token_distribution
from rlalign.lm.loading import load_model_and_tokenizer

PROMPT = "The president of Valdoria is"


def test_next_token_probs_equal_softmax_of_last_logits(model_dir):
    model, tokenizer = load_model_and_tokenizer(model_dir)
    top = next_token_distribution(model, tokenizer, PROMPT, top_k=5)
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids).logits[0, -1].double(), dim=-1)
    values, order = probs.sort(descending=True)
    assert [t.id for t in top] == order[:5].tolist()
    for item, p in zip(top, values[:5].tolist(), strict=True):
        assert item.prob == pytest.approx(p, abs=1e-6)
        assert item.token == tokenizer.decode([item.id])
    everything = next_token_distribution(model, tokenizer, PROMPT, top_k=10_000)
    assert len(everything) == len(tokenizer) or len(everything) == model.config.vocab_size
    assert sum(t.prob for t in everything) == pytest.approx(1.0, abs=1e-4)
    table = format_table(PROMPT, top)
    assert PROMPT in table and str(top[0].id) in table


def test_next_token_bad_input(model_dir):
    model, tokenizer = load_model_and_tokenizer(model_dir)
    with pytest.raises(UserError, match="top_k"):
        next_token_distribution(model, tokenizer, PROMPT, top_k=0)
    with pytest.raises(UserError, match="longer than the model's context of 64"):
        next_token_distribution(model, tokenizer, "Valdoria " * 80, top_k=3)


def test_cli_next_token_table_and_json(model_dir, capsys):
    assert main(["next-token", str(model_dir), PROMPT, "--top-k", "4"]) == 0
    table = capsys.readouterr().out
    assert "prob" in table and len(table.strip().splitlines()) == 2 + 4
    assert main(["next-token", str(model_dir), PROMPT, "--top-k", "3", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["prompt"] == PROMPT and len(payload["top"]) == 3
    assert set(payload["top"][0]) == {"token", "id", "prob"}
    probs = [t["prob"] for t in payload["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1


def test_cli_generate(model_dir, capsys):
    args = ["generate", str(model_dir), PROMPT, "--n", "3", "--max-new-tokens", "5"]
    assert main([*args, "--seed", "1", "--top-k", "20", "--top-p", "0.9", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and all(r["prompt"] == PROMPT and r["num_tokens"] <= 5 for r in rows)
    # Same seed, same samples
    assert main([*args, "--seed", "1", "--top-k", "20", "--top-p", "0.9", "--json"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == rows
    assert main([*args, "--chat", "--temperature", "0"]) == 0
    assert "sample 3/3" in capsys.readouterr().out
    assert main(["generate", str(model_dir), PROMPT, "--max-new-tokens", "3", "--bf16"]) == 0
    assert capsys.readouterr().out.startswith(PROMPT)


@pytest.mark.parametrize(
    ("argv_tail", "message"),
    [
        (["next-token", "{model}", PROMPT, "--top-k", "0"], "--top-k must be a positive integer"),
        (["generate", "{model}", PROMPT, "--top-k", "-1"], "top_k must be a positive integer"),
        (["generate", "{model}", PROMPT, "--temperature", "-1"], "temperature must be >= 0"),
        (["generate", "{model}", PROMPT, "--n", "0"], "--n must be >= 1"),
        (["next-token", "{empty}", PROMPT], "no config.json"),
        (["generate", "{empty}", PROMPT], "no config.json"),
        (["next-token", "{model}", "Valdoria " * 80], "context of 64"),
        (["generate", "{model}", "Valdoria " * 80], "context of 64"),
        (["next-token", "{missing}", PROMPT], "not found"),
    ],
)
def test_cli_bad_input_exit_2_one_line(model_dir, tmp_path, capsys, argv_tail, message):
    paths = {"model": str(model_dir), "empty": str(tmp_path), "missing": str(tmp_path / "no")}
    argv = [a.format(**paths) if a.startswith("{") else a for a in argv_tail]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
