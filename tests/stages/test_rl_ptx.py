"""PPO-ptx: a text corpus's next-token loss mixed into the RL loss (InstructGPT's remedy for
the alignment tax). The text rides in the RL forward; checked against a plain forward of the
text alone, against the loss without it, for learning, and for exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from rlalign.cli import main
from rlalign.lm.logprobs import completion_forward
from rlalign.train.rl import make_loss_fn, with_ptx_rows
from rlalign.train.rl_config import RLConfig

from .test_rl import final_weights, rl_args


def _model(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def _batch(start=6, length=11, ptx_width=7):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 50, (3, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left-padded prompts of different lengths
    mask[2, :4] = 0
    completion_mask = torch.ones((3, length - start))
    completion_mask[1, -2:] = 0
    blocks = torch.randint(3, 50, (2, ptx_width), generator=gen)
    labels = blocks.clone()
    labels[1, -3:] = -100  # the corpus's end: padding
    n = length - start
    return {
        "sequences": ids, "attention_mask": mask, "prompt_length": torch.tensor([start] * 3),
        "completion_mask": completion_mask, "old_logp": -torch.rand((3, n), generator=gen),
        "ref_logp": -torch.rand((3, n), generator=gen),
        "advantages": torch.randn((3, n), generator=gen),
        "ptx_input_ids": blocks, "ptx_labels": labels,
    }  # fmt: skip


def test_text_rows_score_like_a_plain_forward_of_the_text():
    model, batch, start = _model(), _batch(), 6
    ids, mask, targets = with_ptx_rows(batch, start)
    with torch.no_grad():
        out = completion_forward(model, ids, mask, start, temperature=0.7, untempered_rows=2)
        alone = completion_forward(
            model, batch["sequences"], batch["attention_mask"], start, temperature=0.7
        )
    torch.testing.assert_close(out["logp"][:3], alone["logp"], atol=1e-5, rtol=1e-5)
    width = batch["sequences"].shape[1] - start + 1  # 6 text tokens; 5 of them scored
    for j in range(2):
        real = int((batch["ptx_labels"][j, :width] != -100).sum())
        text = batch["ptx_input_ids"][j, :real]
        with torch.no_grad():
            logits = model(input_ids=text[None]).logits[0].float()  # temperature 1
        want = torch.log_softmax(logits[:-1], dim=-1).gather(1, text[1:, None])[:, 0]
        torch.testing.assert_close(out["logp"][3 + j, : real - 1], want, atol=1e-5, rtol=1e-5)
        assert targets[j].tolist() == [1.0] * (real - 1) + [0.0] * (width - real)


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_the_loss_adds_coef_times_the_text_nll(algorithm):
    from rlalign.lm.value_head import PolicyWithValueHead

    cfg = RLConfig(
        algorithm=algorithm, beta=0.1, ptx_data="corpus.txt", ptx_coef=0.3,
        loss_type="dapo", num_generations=2,
    )  # fmt: skip
    policy = _model()
    model = PolicyWithValueHead(policy) if algorithm == "ppo" else policy
    batch = _batch()
    if algorithm == "ppo":
        batch["old_values"] = torch.zeros_like(batch["advantages"])
        batch["returns"] = torch.ones_like(batch["advantages"])
    loss_fn = make_loss_fn(cfg, has_reference=True)
    # dapo normalises by tokens: this micro-batch holds half the step's, so it weighs 1/2
    num_items = 2 * batch["completion_mask"].sum()
    with_text, metrics = loss_fn(model, batch, num_items)
    rl_only = {k: v for k, v in batch.items() if not k.startswith("ptx_")}
    without, plain_metrics = loss_fn(model, rl_only, num_items)
    ids, mask, targets = with_ptx_rows(batch, 6)
    logp = completion_forward(policy, ids, mask, 6, untempered_rows=2)["logp"][3:]
    nll = -(logp * targets).sum() / targets.sum()
    torch.testing.assert_close(with_text, without + 0.3 * nll / 2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(metrics["ptx_loss"], nll.detach() / 2, atol=1e-5, rtol=1e-5)
    assert "ptx_loss" not in plain_metrics
    for key in ("policy_loss", "entropy"):  # the RL terms see the RL rows only
        torch.testing.assert_close(metrics[key], plain_metrics[key], atol=1e-5, rtol=1e-5)


def test_ptx_needs_both_data_and_coef():
    with pytest.raises(ValueError, match="ptx_coef"):
        RLConfig(ptx_data="corpus.txt")
    with pytest.raises(ValueError, match="ptx_data"):
        RLConfig(ptx_coef=0.5)


@pytest.fixture
def word_corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("".join("red green blue cat dog sun moon\n" for _ in range(40)))
    return path


def _ptx_losses(out):
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["ptx_loss"] for r in rows if "ptx_loss" in r]


@pytest.mark.slow
def test_the_policy_learns_the_text_while_it_learns_the_task(
    word_model_dir, word_task, word_corpus, tmp_path
):
    out = tmp_path / "run"
    args = rl_args(
        word_model_dir, word_task, out, ptx_data=word_corpus, ptx_coef=1.0, ptx_batch_size=8,
        max_completion_length=8, max_steps=16,
    )  # fmt: skip
    assert main(args) == 0
    losses = _ptx_losses(out)
    assert len(losses) == 16
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3  # the repeated line is learned


@pytest.mark.slow
def test_resume_with_ptx_continues_exactly(word_model_dir, word_task, word_corpus, tmp_path):
    import shutil

    common = dict(
        max_steps=4, per_device_train_batch_size=16, beta=0.05, save_steps=2,
        ptx_data=word_corpus, ptx_coef=0.5, ptx_batch_size=3,
    )  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(rl_args(word_model_dir, word_task, straight, **common)) == 0
    assert main(rl_args(word_model_dir, word_task, resumed, **{**common, "max_steps": 2})) == 0
    shutil.rmtree(resumed / "final")
    assert main(["rl", "--resume", *rl_args(word_model_dir, word_task, resumed, **common)[1:]]) == 0
    a, b = final_weights(straight), final_weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _ptx_losses(straight) == _ptx_losses(resumed)
