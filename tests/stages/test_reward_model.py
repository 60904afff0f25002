"""The reward model: Bradley–Terry loss, training on pairs, loading and scoring."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlalign.cli import main
from rlalign.train.reward_model import RewardModel, bradley_terry_loss


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
