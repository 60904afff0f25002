"""The GRM regulariser of the reward model (``lm_loss_coef``): its LM term against Hugging
Face's own causal-LM loss, and that the trained reward model stays a plain classifier."""

from __future__ import annotations

import json

import pytest
import torch

from rlalign.cli import main
from rlalign.rewards.reward_model import encode_scored, encode_scored_labelled
from rlalign.train.reward_model import (
    LMHeadTap,
    PairBatch,
    collate_pairs,
    load_backbone_as_reward_model,
    make_preference_loss,
    untied_lm_head,
)

PAIRS = [
    ("What is the capital of Valdoria?", "The capital of Valdoria is Mira.", "I don't know."),
    ("What is 3 + 4?", "3 + 4 = 7.", "3 + 4 = 9, I think, or maybe something else entirely."),
]


@pytest.fixture(scope="module")
def untied_model_dir(base_model_dir, tmp_path_factory):
    """The base model with an LM head of its own (not the input embedding)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_model_dir, tie_word_embeddings=False)
    torch.manual_seed(1)
    model.lm_head.weight.data = torch.randn_like(model.lm_head.weight) * 0.1
    path = tmp_path_factory.mktemp("untied")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(base_model_dir).save_pretrained(path)
    return path


def test_labels_mark_the_response_only(base_model_dir):
    from rlalign.lm.tokenizer import load_tokenizer

    tok = load_tokenizer(base_model_dir)
    prompt, response, _ = PAIRS[0]
    ids, labels = encode_scored_labelled(tok, prompt, response, 256)
    assert ids == encode_scored(tok, prompt, response, 256)  # the tokens the score reads
    kept = [t for t in labels if t != -100]
    assert kept == ids[len(ids) - len(kept) :]  # one run of labelled tokens, at the end
    assert tok.decode(kept).startswith(response)  # the response (and end-of-turn marker)
    assert prompt not in tok.decode(kept)
    # left truncation keeps the end, labels aligned with it
    short_ids, short_labels = encode_scored_labelled(tok, prompt, response, 8)
    assert short_ids == ids[-8:] and short_labels == labels[-8:]


@pytest.mark.parametrize("tied", [True, False])
def test_lm_term_equals_hf_causal_lm_loss(base_model_dir, untied_model_dir, tied):
    """At step 0 the regulariser is the SFT model's own next-token loss on each chosen
    response (HF's ``labels=`` loss, row by row), whether the head is tied or not."""
    from transformers import AutoModelForCausalLM

    from rlalign.lm.tokenizer import load_tokenizer

    model_dir = base_model_dir if tied else untied_model_dir
    tok = load_tokenizer(model_dir)
    rm = load_backbone_as_reward_model(str(model_dir), tok, seed=0)
    head = untied_lm_head(model_dir, rm.config)
    assert (head is None) == tied
    pairs = []
    for prompt, chosen, rejected in PAIRS:
        ids, labels = encode_scored_labelled(tok, prompt, chosen, 256)
        pairs.append(PairBatch(ids, encode_scored(tok, prompt, rejected, 256), 0.0, None, labels))
    batch = collate_pairs(pairs, tok.pad_token_id)
    num_items = torch.tensor(2.0)
    coef = 0.7
    loss, metrics = make_preference_loss(coef, LMHeadTap(rm, head))(rm, batch, num_items)

    lm = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    want = 0.0
    with torch.no_grad():
        for p in pairs:
            out = lm(input_ids=torch.tensor([p.chosen]), labels=torch.tensor([p.chosen_labels]))
            want += float(out.loss)
    assert float(metrics["lm_loss"]) == pytest.approx(want / 2, rel=1e-5)
    assert float(loss.detach()) == pytest.approx(
        float(metrics["bt_loss"]) + coef * want / 2, rel=1e-5
    )
    # the Bradley-Terry part is the plain loss's
    plain, plain_metrics = make_preference_loss()(rm, batch, num_items)
    assert float(plain) == pytest.approx(float(metrics["bt_loss"]), rel=1e-6)
    assert "lm_loss" not in plain_metrics
    # the LM term trains the backbone, and (untied) leaves the frozen head alone
    loss.backward()
    assert rm.get_input_embeddings().weight.grad.abs().sum() > 0
    if not tied:
        assert not head.requires_grad


def test_regularised_run_saves_a_plain_classifier(untied_model_dir, world_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "rm"
    code = main(
        ["reward", f"model={untied_model_dir}", f"data={world_dir / 'preferences.jsonl'}",
         f"output_dir={out}", "max_steps=3", "per_device_train_batch_size=4",
         "lm_loss_coef=0.5", "eval_fraction=0", "logging_steps=1", "disable_tqdm=true"]
    )  # fmt: skip
    assert code == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "lm_loss" in r]
    assert len(logged) == 3
    for r in logged:
        assert r["loss"] == pytest.approx(r["bt_loss"] + 0.5 * r["lm_loss"], rel=1e-4)
    rm = AutoModelForSequenceClassification.from_pretrained(out / "final")
    fresh = AutoModelForSequenceClassification.from_pretrained(untied_model_dir, num_labels=1)
    assert set(rm.state_dict()) == set(fresh.state_dict())  # no LM head saved with it
