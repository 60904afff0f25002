"""The reward model: Bradley–Terry loss, training on pairs, loading and scoring."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlalign.cli import main
from rlalign.rewards.reward_model import RewardModel
from rlalign.train.reward_model import (
    bradley_terry_loss,
    collate_pairs,
    evaluate_pairs,
    split_by_prompt,
)


def test_bradley_terry_hand_computed():
    chosen = torch.tensor([2.0, 0.0, -1.0])
    rejected = torch.tensor([0.5, 0.0, 1.0])
    want = [math.log1p(math.exp(-1.5)), math.log(2.0), math.log1p(math.exp(2.0))]
    torch.testing.assert_close(bradley_terry_loss(chosen, rejected), torch.tensor(want))
    # a margin demands that chosen beat rejected by at least that much
    with_margin = bradley_terry_loss(chosen, rejected, torch.tensor([1.0, 0.0, 0.0]))
    assert with_margin[0] == pytest.approx(math.log1p(math.exp(-0.5)))


def test_gradient_pushes_chosen_up_and_rejected_down():
    c = torch.tensor([0.3], requires_grad=True)
    r = torch.tensor([0.1], requires_grad=True)
    bradley_terry_loss(c, r).sum().backward()
    assert c.grad.item() < 0 < r.grad.item()  # minimising raises c and lowers r


def test_split_by_prompt_shares_no_prompt():
    # prompt i has i % 3 + 1 pairs (another wrong answer to the same question)
    pairs = [{"prompt": f"q{i}", "n": j} for i in range(40) for j in range(i % 3 + 1)]
    train, held = split_by_prompt(pairs, 0.25, seed=1)
    assert not {p["prompt"] for p in train} & {p["prompt"] for p in held}
    assert sorted(map(str, train + held)) == sorted(map(str, pairs))
    # whole prompts are taken until the share is reached: it overshoots by under one prompt
    assert 0.25 * len(pairs) <= len(held) < 0.25 * len(pairs) + 3
    assert split_by_prompt(pairs, 0.25, seed=1) == (train, held)
    assert split_by_prompt(pairs, 0.25, seed=2) != (train, held)
    assert split_by_prompt(pairs, 0.0, seed=1) == (pairs, [])


class _SumScorer(torch.nn.Module):
    """Scores a sequence by the sum of its token ids (a known function, to check the tally)."""

    def forward(self, input_ids, attention_mask):
        from types import SimpleNamespace

        return SimpleNamespace(logits=(input_ids * attention_mask).sum(1, keepdim=True).float())


def test_evaluate_pairs_counts_each_kind():
    from rlalign.train.reward_model import PairBatch

    # (chosen, rejected, kind): the chosen row wins when its id sum is larger
    rows = [([5], [1, 1], "a"), ([1], [3], "a"), ([2, 2], [3], "a"), ([9], [8], "b"),
            ([1], [2], "b"), ([4], [1], None)]  # fmt: skip
    pairs = [PairBatch(c, r, 0.0, k) for c, r, k in rows]
    chunks = [pairs[:4], pairs[4:]]  # kinds spread over two batches
    metrics = evaluate_pairs(
        _SumScorer(),
        [collate_pairs(c, pad_id=0) for c in chunks],
        torch.device("cpu"),
        [[p.kind for p in c] for c in chunks],
    )
    assert metrics["eval_accuracy"] == pytest.approx(4 / 6)
    assert metrics["eval_accuracy/a"] == pytest.approx(2 / 3)
    assert metrics["eval_accuracy/b"] == pytest.approx(1 / 2)
    assert set(metrics) == {"eval_accuracy", "eval_loss", "eval_accuracy/a", "eval_accuracy/b"}
    diffs = [3.0, -2.0, 1.0, 1.0, -1.0, 3.0]
    want = sum(math.log1p(math.exp(-d)) for d in diffs) / 6
    assert metrics["eval_loss"] == pytest.approx(want)
    # without kinds (the default): the overall figures only
    plain = evaluate_pairs(
        _SumScorer(), [collate_pairs(c, pad_id=0) for c in chunks], torch.device("cpu")
    )
    assert plain == {k: metrics[k] for k in ("eval_accuracy", "eval_loss")}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])  # three training seeds: one may be luck
def test_reward_model_generalises_to_heldout_questions(base_model_dir, tmp_path, world_dir, seed):
    """Trained on the world's training pairs about requests and answers, from an untrained
    backbone, the reward model ranks the pairs of *held-out* questions (new phrasing and
    activity combinations, other facts) right: refuse harmful, help with benign, prefer a
    complete answer to a bare "I don't know."."""

    def subset(path):
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        return [r for r in rows if r["kind"] in ("harmful", "benign", "helpfulness")]

    train, held = (
        subset(world_dir / "preferences.jsonl"),
        subset(world_dir / "eval" / "preferences.jsonl"),
    )
    for name, rows in (("train", train), ("held", held)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "rm"
    code = main(
        ["reward", f"model={base_model_dir}", f"data={tmp_path / 'train.jsonl'}",
         f"eval_data={tmp_path / 'held.jsonl'}", f"output_dir={out}", "max_steps=40",
         "learning_rate=3e-3", "warmup_steps=5", "per_device_train_batch_size=16",
         "disable_tqdm=true", f"seed={seed}"]
    )  # fmt: skip
    assert code == 0
    last = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["eval_accuracy"] >= 0.9
    for kind in ("harmful", "benign", "helpfulness"):
        assert last[f"eval_accuracy/{kind}"] >= 0.8, kind


@pytest.mark.slow
def test_reward_model_learns_its_training_pairs(base_model_dir, tmp_path, world_dir):
    from transformers import AutoModelForSequenceClassification

    pairs = [json.loads(x) for x in (world_dir / "preferences.jsonl").read_text().splitlines()]
    small = tmp_path / "pairs.jsonl"
    small.write_text("".join(json.dumps(p) + "\n" for p in pairs[:48]))
    out = tmp_path / "rm"
    code = main(
        [
            "reward",
            f"model={base_model_dir}",
            f"data={small}",
            f"output_dir={out}",
            "max_steps=60",
            "learning_rate=3e-3",
            "per_device_train_batch_size=16",
            "eval_fraction=0",
            "disable_tqdm=true",
        ]
    )
    assert code == 0
    AutoModelForSequenceClassification.from_pretrained(out / "final")
    rm = RewardModel(out / "final")
    prompts = [p["prompt"] for p in pairs[:48]]
    chosen = rm.score(prompts, [p["chosen"] for p in pairs[:48]])
    rejected = rm(prompts, [p["rejected"] for p in pairs[:48]])
    accuracy = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(prompts)
    assert accuracy >= 0.9
    # batching does not change the scores
    rm.batch_size = 5
    torch.testing.assert_close(
        torch.tensor(rm.score(prompts, [p["chosen"] for p in pairs[:48]])),
        torch.tensor(chosen),
        atol=1e-4,
        rtol=1e-4,
    )


def test_reward_bad_input(base_model_dir, tmp_path, capsys):
    bad = tmp_path / "prefs.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "chosen": "a"}) + "\n")
    code = main(
        ["reward", f"model={base_model_dir}", f"data={bad}", f"output_dir={tmp_path / 'o'}"]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"{bad}:1: missing field 'rejected'" in err and "Traceback" not in err


def test_a_backbone_saved_in_bf16_trains_as_a_reward_model_on_fp32_weights(
    base_model_dir, tmp_path
):
    from rlalign.lm.models import load_model
    from rlalign.lm.tokenizer import load_tokenizer
    from rlalign.train.reward_model import load_backbone_as_reward_model

    load_model(base_model_dir, dtype=torch.bfloat16).save_pretrained(tmp_path)
    tokenizer = load_tokenizer(base_model_dir)
    model = load_backbone_as_reward_model(str(tmp_path), tokenizer, seed=0)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
