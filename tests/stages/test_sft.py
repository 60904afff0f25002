"""The SFT stage: assistant-only labels, no gradient from prompt tokens, the CLI end to end."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from rlalign.cli import main
from rlalign.lm.chat import IGNORE_INDEX
from rlalign.lm.tokenizer import load_tokenizer
from rlalign.train.chat_data import collate, encode_conversation, split_examples
from rlalign.train.losses import causal_lm_loss

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 plus 2?"},
    {"role": "assistant", "content": "2 plus 2 is 4."},
    {"role": "user", "content": "And 3 plus 3?"},
    {"role": "assistant", "content": "3 plus 3 is 6."},
]


def test_labels_cover_exactly_the_assistant_turns(base_model_dir):
    tok = load_tokenizer(base_model_dir)
    ex = encode_conversation(tok, CONVERSATION, max_length=512)
    assert len(ex.input_ids) == len(ex.labels)
    labelled = [t for t in ex.labels if t != IGNORE_INDEX]
    # independent reference: the assistant contents, each followed by the end-of-turn token
    want = "".join(m["content"] + tok.eos_token for m in CONVERSATION if m["role"] == "assistant")
    assert tok.decode(labelled) == want
    # and every labelled token is the input token at that position
    assert all(lab in (IGNORE_INDEX, i) for lab, i in zip(ex.labels, ex.input_ids, strict=True))
    # the full text decodes to the chat template's rendering
    assert tok.decode(ex.input_ids) == tok.apply_chat_template(CONVERSATION, tokenize=False)


def test_an_opening_assistant_turn_is_labelled_without_the_templates_header(base_model_dir):
    tok = load_tokenizer(base_model_dir)
    opening = [{"role": "assistant", "content": "Hello."}, *CONVERSATION[1:3]]
    ex = encode_conversation(tok, opening, max_length=512)
    labelled = [t for t in ex.labels if t != IGNORE_INDEX]
    want = "".join(m["content"] + tok.eos_token for m in opening if m["role"] == "assistant")
    assert tok.decode(labelled) == want


def test_prompt_tokens_get_no_gradient(base_model_dir):
    tok = load_tokenizer(base_model_dir)
    batch = collate(
        [
            encode_conversation(tok, CONVERSATION, 512),
            encode_conversation(tok, CONVERSATION[1:3], 512),
        ],
        tok.pad_token_id,
    )
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(*batch["input_ids"].shape, len(tok), generator=g, requires_grad=True)

    class FixedLogits(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return SimpleNamespace(logits=logits)

    loss, _ = causal_lm_loss(FixedLogits(), batch, torch.tensor(1.0))
    (grad,) = torch.autograd.grad(loss, logits)
    # position p predicts token p+1: it has a gradient iff labels[p+1] is not ignored
    target_is_labelled = torch.zeros_like(batch["labels"], dtype=torch.bool)
    target_is_labelled[:, :-1] = batch["labels"][:, 1:] != IGNORE_INDEX
    has_grad = grad.abs().sum(-1) > 0
    assert torch.equal(has_grad, target_is_labelled)
    assert target_is_labelled.any() and (~target_is_labelled).any()


def test_truncation_drops_conversations_without_answer_tokens(base_model_dir):
    tok = load_tokenizer(base_model_dir)
    assert encode_conversation(tok, CONVERSATION, max_length=5) is None
    ex = encode_conversation(tok, CONVERSATION, max_length=30)
    assert ex is not None and len(ex.input_ids) == 30


@pytest.mark.slow
def test_sft_cli_end_to_end(base_model_dir, world_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "sft"
    code = main(
        [
            "sft",
            f"model={base_model_dir}",
            f"data={world_dir / 'sft.jsonl'}",
            f"output_dir={out}",
            "max_steps=40",
            "learning_rate=3e-3",
            "per_device_train_batch_size=8",
            "eval_steps=20",
            "logging_steps=10",
            "save_steps=20",
            "eval_fraction=0.1",
            "disable_tqdm=true",
        ]
    )
    assert code == 0
    assert "held-out loss" in capsys.readouterr().out
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert len(evals) == 2 and evals[-1] < evals[0]
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})
    AutoModelForCausalLM.from_pretrained(out / "final")
    AutoTokenizer.from_pretrained(out / "final")
    assert (out / "final" / "model.safetensors").is_file()


def test_sft_bad_input(base_model_dir, tmp_path, capsys):
    bad = tmp_path / "sft.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    code = main(["sft", f"model={base_model_dir}", f"data={bad}", f"output_dir={tmp_path / 'o'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{bad}:1: conversation has no assistant turn" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing written for a run that could not start
    code = main(["sft", "model=tiny", f"data={bad}", f"output_dir={tmp_path / 'o'}"])
    assert code == 2


def test_a_template_that_refuses_a_conversation_is_one_line(base_model_dir, tmp_path, capsys):
    """Llama-2's and Mistral's templates raise on a role order they do not accept."""
    strict = tmp_path / "strict"
    shutil.copytree(base_model_dir, strict)
    tok = load_tokenizer(base_model_dir)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{{ m['role'] + ': ' + m['content'] + eos_token }}{% endfor %}"
    )
    tok.save_pretrained(strict)
    data = tmp_path / "sft.jsonl"
    ok = {"messages": CONVERSATION[1:3]}
    data.write_text(json.dumps(ok) + "\n" + json.dumps({"messages": CONVERSATION}) + "\n")
    code = main(["sft", f"model={strict}", f"data={data}", f"output_dir={tmp_path / 'o'}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{data}: conversation 2 (in the file's order): the tokenizer's chat template" in err
    assert "System role not supported" in err


def test_conversations_longer_than_max_length_are_counted(base_model_dir, tmp_path, capfd):
    data = tmp_path / "sft.jsonl"
    short = {"messages": CONVERSATION[1:3]}
    data.write_text("\n".join(json.dumps(r) for r in [short, {"messages": CONVERSATION}] * 4))
    tok = load_tokenizer(base_model_dir)
    lengths = [
        len(encode_conversation(tok, c, None).input_ids) for c in (CONVERSATION[1:3], CONVERSATION)
    ]
    max_length = (lengths[0] + lengths[1]) // 2  # the short one fits, the long one is cut
    args = ["sft", f"model={base_model_dir}", f"data={data}", f"output_dir={tmp_path / 'o'}",
            f"max_length={max_length}", "max_steps=1", "disable_tqdm=true"]  # fmt: skip
    assert main(args) == 0
    assert (
        f"sft: 4 of 8 conversations are longer than max_length={max_length} tokens: 4 cut"
        in capfd.readouterr().err
    )


def test_the_held_out_split_leaves_something_to_train_on():
    train, held_out = split_examples(list(range(3)), 0.9, seed=0)
    assert len(train) == 1 and len(held_out) == 2
    assert sorted(train + held_out) == [0, 1, 2]


def test_replay_documents_carry_a_loss_on_every_token(base_model_dir, world_dir):
    from rlalign.train.sft import SFTConfig, replay_examples

    tok = load_tokenizer(base_model_dir)
    cfg = SFTConfig(
        model=str(base_model_dir), data="unused", replay_data=str(world_dir / "corpus.jsonl")
    )
    docs = [json.loads(x)["text"] for x in (world_dir / "corpus.jsonl").read_text().splitlines()]
    examples = replay_examples(cfg, tok, max_length=64, count=len(docs) + 2)
    assert len(examples) == len(docs) + 2
    first = examples[0]
    assert first.labels == first.input_ids  # every token is predicted, as in pretraining
    assert first.input_ids[-1] == tok.eos_token_id and len(first.input_ids) <= 64
    assert tok.decode(first.input_ids, skip_special_tokens=True).startswith(docs[0][:20])
    assert examples[len(docs)].input_ids == first.input_ids  # cycled


def test_the_same_run_from_every_format_gives_identical_weights(
    base_model_dir, world_dir, tmp_path
):
    """JSONL, JSON, Parquet, CSV and a save_to_disk directory: the same run, bit for bit."""
    import datasets
    from safetensors.torch import load_file

    from rlalign.train.sft import SFTConfig, run_sft

    datasets.disable_progress_bars()
    rows = []
    for line in (world_dir / "sft.jsonl").read_text().splitlines()[:24]:
        messages = json.loads(line)["messages"]
        user = next(m["content"] for m in messages if m["role"] == "user")
        rows.append({"prompt": user, "completion": messages[-1]["content"]})
    ds = datasets.Dataset.from_list(rows)
    sources = {
        "jsonl": tmp_path / "d.jsonl",
        "json": tmp_path / "d.json",
        "parquet": tmp_path / "d.parquet",
        "csv": tmp_path / "d.csv",
        "disk": tmp_path / "d_disk",
    }
    sources["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    sources["json"].write_text(json.dumps(rows), encoding="utf-8")
    ds.to_parquet(str(sources["parquet"]))
    ds.to_csv(str(sources["csv"]), index=False)
    ds.save_to_disk(str(sources["disk"]))
    weights = {}
    for fmt, source in sources.items():
        cfg = SFTConfig(model=str(base_model_dir), data=str(source),
                        output_dir=str(tmp_path / f"run_{fmt}"), max_steps=3, eval_steps=3,
                        save_steps=3, per_device_train_batch_size=4, max_length=48,
                        disable_tqdm=True)  # fmt: skip
        result = run_sft(cfg)
        weights[fmt] = load_file(result.final_dir / "model.safetensors")
    reference = weights.pop("jsonl")
    for fmt, state in weights.items():
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference), fmt
