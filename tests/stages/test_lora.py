"""LoRA through peft: the trainable count, learning in RL, the adapter-free reference, saving
merged or alone, and bad target modules."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from rlalign.cli import main
from rlalign.lm.logprobs import completion_forward
from rlalign.lm.models import load_model
from rlalign.train.lora import AdapterDisabled, LoraSettings, apply_lora

from .test_rl import rewards_of, rl_args


def sft_args(base: Path, world: Path, out: Path, *extra: str) -> list[str]:
    return [
        "sft",
        f"model={base}",
        f"data={world / 'sft.jsonl'}",
        f"output_dir={out}",
        "max_steps=3",
        "per_device_train_batch_size=4",
        "disable_tqdm=true",
        *extra,
    ]


def test_trainable_parameters_are_what_peft_reports_and_the_hand_count(
    base_model_dir, world_dir, tmp_path, capsys
):
    out = tmp_path / "sft"
    assert (
        main(
            sft_args(
                base_model_dir, world_dir, out, "lora.r=4", "lora.target_modules=q_proj,v_proj"
            )
        )
        == 0
    )
    printed = capsys.readouterr().out
    trainable = int(re.search(r"trainable params: ([\d,]+)", printed).group(1).replace(",", ""))

    base = AutoModelForCausalLM.from_pretrained(base_model_dir)
    by_hand = sum(
        4 * (m.in_features + m.out_features)
        for name, m in base.named_modules()
        if name.endswith(("q_proj", "v_proj"))
    )
    peft_model = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    assert trainable == by_hand == peft_model.get_nb_trainable_parameters()[0]
    # merged: a plain model whose logits are base + the learned update, not the base's
    merged = AutoModelForCausalLM.from_pretrained(out / "final")
    ids = torch.tensor([[1, 5, 9, 12]])
    assert not torch.allclose(merged(ids).logits, base(ids).logits)


def test_an_adapter_saved_alone_loads_merged_to_the_same_model(base_model_dir, world_dir, tmp_path):
    merged, alone = tmp_path / "merged", tmp_path / "alone"
    common = ("lora.r=4", "seed=3")
    assert main(sft_args(base_model_dir, world_dir, merged, *common)) == 0
    assert main(sft_args(base_model_dir, world_dir, alone, *common, "lora.save=adapter")) == 0
    assert (alone / "final" / "adapter_config.json").is_file()
    assert not (alone / "final" / "config.json").exists()
    assert json.loads((alone / "final" / "adapter_config.json").read_text())["r"] == 4
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    a = load_model(merged / "final")(ids).logits
    b = load_model(alone / "final")(ids).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_reference_log_probs_with_adapters_off_are_the_base_models(word_model_dir):
    base = AutoModelForCausalLM.from_pretrained(word_model_dir).eval()
    reference = copy.deepcopy(base)
    policy = apply_lora(base, LoraSettings(r=2), task="causal_lm")
    with torch.no_grad():  # a trained adapter: B != 0, so the policy differs from the base
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[3, 4, 10, 11, 12, 13], [3, 4, 10, 14, 15, 16]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        off = completion_forward(AdapterDisabled(policy), ids, mask, 3)["logp"]
        base_logp = completion_forward(reference, ids, mask, 3)["logp"]
        on = completion_forward(policy, ids, mask, 3)["logp"]
    torch.testing.assert_close(off, base_logp, rtol=0, atol=1e-6)
    assert (on - base_logp).abs().max() > 1e-3
    # the reference costs no weights: the adapter-free view shares the policy's parameters
    assert {id(p) for p in AdapterDisabled(policy).parameters()} == {
        id(p) for p in policy.parameters()
    }


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])  # three training seeds: one may be luck
def test_rl_with_lora_learns_the_bandit_task(word_model_dir, word_task, tmp_path, seed):
    out = tmp_path / "rl"
    args = rl_args(
        word_model_dir, word_task, out, algorithm="grpo", beta=0.05, learning_rate=0.05,
        max_steps=15, seed=seed,
    )  # fmt: skip
    # (this one-layer model's body alone cannot steer it far: the head is adapted too)
    targets = "lora.target_modules=lm_head,q_proj,v_proj,o_proj,down_proj"
    assert main([*args, "lora.r=8", "lora.alpha=16", targets]) == 0
    rewards = rewards_of(out)
    assert rewards[0] < 0.4 and max(rewards[-3:]) > 0.8, rewards


def test_target_modules_that_do_not_exist_are_a_clear_error(
    base_model_dir, world_dir, tmp_path, capsys
):
    out = tmp_path / "bad"
    code = main(sft_args(base_model_dir, world_dir, out, "lora.target_modules=q_proj,c_attn"))
    err = capsys.readouterr().err
    assert code == 2
    assert "lora.target_modules: c_attn not found" in err and "q_proj" in err
    assert not (out / "checkpoints").exists()


def test_an_adapted_tied_output_layer_merges_into_the_model_that_was_trained(
    word_model_dir, tmp_path
):
    """Merging B A into a head tied to the input embeddings would move the embeddings too; the
    adapted head gets a weight of its own, so the merged final/ computes what the trained model
    computed, and loads with plain transformers."""
    from rlalign.train.lora import save_lora_final

    model = load_model(word_model_dir)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    embed = model.get_input_embeddings().weight.detach().clone()
    settings = LoraSettings(target_modules="lm_head,q_proj")
    peft_model = apply_lora(model, settings, task="causal_lm", seed=0)
    with torch.no_grad():  # a trained adapter: B away from its zero start
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    ids = torch.tensor([[1, 5, 7, 3, 2]])
    trained = peft_model(input_ids=ids).logits
    save_lora_final(peft_model, peft_model.state_dict(), tmp_path, settings)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path)
    torch.testing.assert_close(merged(input_ids=ids).logits, trained, rtol=1e-5, atol=1e-5)
    assert torch.equal(merged.get_input_embeddings().weight, embed)


def test_settings_lora_cannot_honour_are_one_line(base_model_dir, world_dir, tmp_path, capsys):
    empty = main(sft_args(base_model_dir, world_dir, tmp_path / "a", "lora.target_modules="))
    assert empty == 2 and "names no layer" in capsys.readouterr().err
    pairs = world_dir / "preferences.jsonl"
    args = ["reward", f"model={base_model_dir}", f"data={pairs}", f"output_dir={tmp_path / 'b'}",
            "lora.save=adapter"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "a reward model's final/ must be the whole model" in err and "Traceback" not in err
