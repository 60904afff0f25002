"""The reward model's likelihood prior (``prior_coef``): r(x, y) = head(x, y) + c log p0(y|x).

Checked against independent computations: log p0 by a one-sequence-at-a-time loop over the
model's own logits, the loss against Bradley–Terry on the summed scores, and a trained
model's scores against its classifier and the starting causal LM loaded separately."""

from __future__ import annotations

import json

import pytest
import torch

from rlalign.cli import main
from rlalign.rewards.reward_model import (
    PRIOR_FILE,
    RewardModel,
    encode_scored_labelled,
    response_logprobs,
)
from rlalign.train.reward_model import (
    PairBatch,
    bradley_terry_loss,
    collate_pairs,
    evaluate_pairs,
    make_preference_loss,
)

PAIRS = [
    ("What is the capital of Valdoria?", "The capital of Valdoria is Mira.", "I don't know."),
    ("What is 3 plus 4?", "3 plus 4 is 7.", "3 plus 4 is 9, I think, or maybe another number."),
    ("How do I bake a cake?", "I can't help with that.", "Here is how to bake a cake."),
]


def _brute_logprob(model, ids, labels) -> float:
    """Sum of log p(token) over the labelled tokens, one unpadded sequence, plain loop."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    total = 0.0
    for i in range(1, len(ids)):
        if labels[i] != -100:
            total += float(torch.log_softmax(logits[i - 1], dim=-1)[ids[i]])
    return total


def test_response_logprobs_equal_a_per_token_loop(base_model_dir):
    from transformers import AutoModelForCausalLM

    from rlalign.lm.tokenizer import load_tokenizer

    tok = load_tokenizer(base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir).eval()
    rows = [encode_scored_labelled(tok, p, r, 256) for p, c, w in PAIRS for r in (c, w)]
    assert len({len(ids) for ids, _ in rows}) > 1  # mixed lengths: padding is exercised
    got = response_logprobs(model, rows, batch_size=4)
    want = [_brute_logprob(model, ids, labels) for ids, labels in rows]
    assert got == pytest.approx(want, abs=1e-4)
    assert all(v < 0 for v in got)


class _SumScorer(torch.nn.Module):
    """Scores a sequence by the sum of its token ids (a known head)."""

    def forward(self, input_ids, attention_mask):
        from types import SimpleNamespace

        return SimpleNamespace(logits=(input_ids * attention_mask).sum(1, keepdim=True).float())


def test_loss_and_accuracy_read_head_plus_prior():
    # head scores: chosen 5, 1, 2; rejected 2, 3, 2
    pairs = [PairBatch([5], [2], 0.0, "a"), PairBatch([1], [3], 0.0, "a"),
             PairBatch([2], [2], 0.0, "b")]  # fmt: skip
    pairs[1].prior = (-1.0, -6.0)  # the prior turns a lost pair into a won one
    pairs[2].prior = (-2.0, -1.0)  # and a tie into a lost one
    batch = collate_pairs(pairs, pad_id=0)
    loss, metrics = make_preference_loss()(_SumScorer(), batch, torch.tensor(3))
    chosen = torch.tensor([5.0, 1 - 1.0, 2 - 2.0])
    rejected = torch.tensor([2.0, 3 - 6.0, 2 - 1.0])
    torch.testing.assert_close(loss, bradley_terry_loss(chosen, rejected).sum() / 3)
    assert float(metrics["accuracy"]) == pytest.approx(2 / 3)
    held = evaluate_pairs(_SumScorer(), [batch], torch.device("cpu"), [[p.kind for p in pairs]])
    assert held["eval_accuracy"] == pytest.approx(2 / 3)
    assert held["eval_accuracy/a"] == 1.0 and held["eval_accuracy/b"] == 0.0


def test_prior_run_saves_and_scores_head_plus_prior(base_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from rlalign.lm.tokenizer import load_tokenizer

    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]
    data, held = tmp_path / "pairs.jsonl", tmp_path / "held.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows * 4))
    held.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "rm"
    code = main(
        ["reward", f"model={base_model_dir}", f"data={data}", f"eval_data={held}",
         f"output_dir={out}", "max_steps=3", "per_device_train_batch_size=4",
         "prior_coef=0.5", "eval_steps=3", "bf16=false", "disable_tqdm=true"]
    )  # fmt: skip
    assert code == 0
    final = out / "final"
    assert json.loads((final / PRIOR_FILE).read_text()) == {"coef": 0.5, "model": "prior"}
    assert (final / "prior" / "model.safetensors").is_file()

    # the reward = the saved classifier's score + 0.5 * log p0 under the starting model
    tok = load_tokenizer(final)
    head = AutoModelForSequenceClassification.from_pretrained(final).eval()
    base = AutoModelForCausalLM.from_pretrained(base_model_dir).eval()
    prompts = [p for p, _, _ in PAIRS for _ in range(2)]
    responses = [r for _, c, w in PAIRS for r in (c, w)]
    want = []
    for p, r in zip(prompts, responses, strict=True):
        ids, labels = encode_scored_labelled(tok, p, r, 256)
        with torch.no_grad():
            score = float(head(input_ids=torch.tensor([ids])).logits[0, 0])
        want.append(score + 0.5 * _brute_logprob(base, ids, labels))
    rm = RewardModel(final)
    got = rm(prompts, responses)
    assert got == pytest.approx(want, abs=1e-4)

    # the run's held-out accuracy is the accuracy of these rewards
    accuracy = sum(got[2 * i] > got[2 * i + 1] for i in range(len(PAIRS))) / len(PAIRS)
    last = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["eval_accuracy"] == pytest.approx(accuracy)


def test_a_broken_prior_spec_is_a_clear_error(base_model_dir, tmp_path):
    import shutil

    from transformers import AutoModelForSequenceClassification

    from rlalign.errors import UserError
    from rlalign.lm.tokenizer import load_tokenizer

    rm_dir = tmp_path / "rm"
    AutoModelForSequenceClassification.from_pretrained(
        base_model_dir, num_labels=1
    ).save_pretrained(rm_dir)
    load_tokenizer(base_model_dir).save_pretrained(rm_dir)
    (rm_dir / PRIOR_FILE).write_text('{"coef": "much"}')
    with pytest.raises(UserError, match=PRIOR_FILE):
        RewardModel(rm_dir)
    (rm_dir / PRIOR_FILE).write_text('{"coef": 1.0, "model": "prior"}')
    with pytest.raises(UserError, match="prior model it names"):
        RewardModel(rm_dir)
    shutil.copytree(base_model_dir, rm_dir / "prior")
    assert RewardModel(rm_dir).prior_coef == 1.0


def test_bf16_scores_are_autocasts_of_head_and_prior(base_model_dir, tmp_path):
    """``RewardModel(bf16=True)`` (RL's rollout precision) scores as the fp32 model does under
    bf16 autocast, bit for bit (its linear layers run on weights cast once), prior included."""
    import shutil

    from transformers import AutoModelForSequenceClassification

    from rlalign.lm.tokenizer import load_tokenizer

    rm_dir = tmp_path / "rm"
    torch.manual_seed(0)  # the classifier's new head
    AutoModelForSequenceClassification.from_pretrained(
        base_model_dir, num_labels=1
    ).save_pretrained(rm_dir)
    load_tokenizer(base_model_dir).save_pretrained(rm_dir)
    shutil.copytree(base_model_dir, rm_dir / "prior")
    (rm_dir / PRIOR_FILE).write_text('{"coef": 0.5, "model": "prior"}')
    prompts = [p for p, _, _ in PAIRS for _ in range(2)]
    responses = [r for _, c, w in PAIRS for r in (c, w)]

    fp32 = RewardModel(rm_dir, batch_size=4)
    want_fp32 = fp32(prompts, responses)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = fp32(prompts, responses)
    got = RewardModel(rm_dir, batch_size=4, bf16=True)(prompts, responses)
    assert got == want
    assert got != want_fp32  # bf16 really computed (a score of ~-20 keeps ~3 digits)
    assert got == pytest.approx(want_fp32, abs=0.5)
    # the prior is in the bf16 score too: without it the scores move by 0.5 * log p0
    head_only = RewardModel(rm_dir, batch_size=4, bf16=True)
    head_only.prior = None
    assert all(abs(a - b) > 1.0 for a, b in zip(head_only(prompts, responses), got, strict=True))
