"""``rlalign pretrain`` end to end: run layout, learning, bad input (kill -9 + resume:
tests/stages/test_kill9.py)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlalign.checkpoint import list_checkpoints
from rlalign.cli import main
from rlalign.metrics import read_metrics

from .helpers import repetitive_corpus

FAST = [
    "model=tiny",
    "vocab_size=300",
    "block_size=32",
    "per_device_train_batch_size=4",
    "warmup_steps=2",
    "logging_steps=1",
    "eval_steps=4",
    "save_steps=4",
    "disable_tqdm=true",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return repetitive_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", lines=200)


def pretrain(*args, resume=False):
    return main(["pretrain", *(["--resume"] if resume else []), *FAST, *args])


def final_weights(run: Path):
    return load_file(str(run / "final" / "model.safetensors"))


def test_cli_writes_the_run_layout_and_a_loadable_final_model(tmp_path, corpus, capsys):
    run = tmp_path / "run"
    assert pretrain(f"data={corpus}", f"output_dir={run}", "max_steps=6", "seed=3") == 0
    out = capsys.readouterr().out
    assert "held-out loss" in out and "perplexity" in out
    assert (run / "config.yaml").is_file() and "max_steps: 6" in (run / "config.yaml").read_text()
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all("loss" in r for r in rows)
    assert "eval_loss" in rows[3] and "eval_perplexity" in rows[5]
    assert rows[5]["eval_perplexity"] == pytest.approx(math.exp(rows[5]["eval_loss"]), rel=1e-5)
    assert [s for s, _ in list_checkpoints(run)] == [4, 6]
    assert any((run / "tensorboard").iterdir())
    final = run / "final"
    assert (final / "model.safetensors").is_file() and not list(final.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    ids = tok("The president of Valdoria is", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape == (1, ids.shape[1], len(tok))


@pytest.mark.slow
def test_pretraining_drives_held_out_loss_far_below_uniform(tmp_path, corpus):
    run = tmp_path / "run"
    args = [f"data={corpus}", f"output_dir={run}", "max_steps=150", "learning_rate=3e-3"]
    assert pretrain(*args, "eval_steps=150", "save_steps=150", "logging_steps=50") == 0
    vocab = len(AutoTokenizer.from_pretrained(run / "final"))
    eval_loss = read_metrics(run)[-1]["eval_loss"]
    # uniform guessing scores ln(vocab) (~5.6 here); this corpus is nearly deterministic
    assert eval_loss < 0.25 * math.log(vocab), (eval_loss, math.log(vocab))


def test_continues_pretraining_from_a_model_directory_with_its_tokenizer(tmp_path, corpus):
    first, second = tmp_path / "first", tmp_path / "second"
    assert pretrain(f"data={corpus}", f"output_dir={first}", "max_steps=4") == 0
    # vocab_size is ignored: the tokenizer comes with the model directory.
    args = [f"data={corpus}", f"output_dir={second}", f"model={first / 'final'}", "vocab_size=999"]
    assert pretrain(*args, "max_steps=2", "learning_rate=1e-9", "warmup_steps=0") == 0
    assert (second / "final" / "tokenizer.json").read_text() == (
        first / "final" / "tokenizer.json"
    ).read_text()
    before, after = final_weights(first), final_weights(second)
    for name, value in before.items():  # started from those weights (lr ~ 0: nearly unmoved)
        torch.testing.assert_close(after[name], value, atol=1e-6, rtol=0)


def test_refuses_to_overwrite_a_run_without_resume(tmp_path, corpus, capsys):
    run = tmp_path / "run"
    assert pretrain(f"data={corpus}", f"output_dir={run}", "max_steps=4") == 0
    capsys.readouterr()
    assert pretrain(f"data={corpus}", f"output_dir={run}", "max_steps=4") == 2
    assert "--resume" in capsys.readouterr().err
    assert pretrain(f"data={corpus}", f"output_dir={run}", "max_steps=4", resume=True) == 0


def _bad_inputs(tmp: Path, corpus: Path) -> list[tuple[list[str], str]]:
    bad_json = tmp / "bad.jsonl"
    bad_json.write_text('{"text": "fine"}\n{"text": oops}\n', encoding="utf-8")
    empty = tmp / "empty.txt"
    empty.write_text("", encoding="utf-8")
    no_config = tmp / "model_dir"
    no_config.mkdir()
    out = f"output_dir={tmp / 'out'}"
    return [
        ([f"data={tmp / 'missing.txt'}", out], "missing.txt: corpus file not found"),
        ([f"data={empty}", out], "empty.txt: corpus is empty"),
        ([f"data={bad_json}", out], "bad.jsonl:2: invalid JSON"),
        ([f"data={corpus}", out, "learning_rat=1e-3"], "did you mean 'learning_rate'?"),
        ([f"data={corpus}", out, f"model={no_config}"], "no config.json"),
        ([f"data={corpus}", out, "model=huge"], "neither a preset"),
        ([f"data={corpus}", out, "max_steps=0"], "max_steps"),
        ([out], "data: Field required"),
    ]


def test_bad_input_gives_one_line_and_exit_2(tmp_path, corpus, capsys):
    for args, message in _bad_inputs(tmp_path, corpus):
        assert main(["pretrain", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err, (args, err)
        assert err.count("\n") == 1 and "Traceback" not in err, err


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rlalign", "pretrain", f"data={tmp_path / 'nope.jsonl'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("corpus file not found")
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
