"""Any local Hugging Face causal LM runs the whole flow: SFT -> reward model -> GRPO, a few
steps each, on tiny random GPT-2, Llama and Qwen2 models built here (one of them with a
tokenizer lacking a pad token and a chat template, which get defaults and a warning)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig, Qwen2Config

from rlalign.cli import main

pytestmark = pytest.mark.slow


def build(arch: str, tokenizer, path: Path, *, strip_tokenizer: bool) -> Path:
    special = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": None if strip_tokenizer else tokenizer.pad_token_id,
        "vocab_size": len(tokenizer),
    }
    if arch == "gpt2":
        config = GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=256, **special)
    elif arch == "llama":
        config = LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=256, **special,
        )  # fmt: skip
    else:
        config = Qwen2Config(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=256, **special,
        )  # fmt: skip
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    if strip_tokenizer:
        tokenizer.pad_token = None
        tokenizer.chat_template = None
    tokenizer.save_pretrained(path)
    (path / "chat_template.jinja").unlink(missing_ok=True) if strip_tokenizer else None
    return path


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_the_whole_flow_runs_on_any_causal_lm(arch, base_model_dir, world_dir, tmp_path):
    strip = arch == "gpt2"
    model_dir = build(
        arch, AutoTokenizer.from_pretrained(base_model_dir), tmp_path / arch, strip_tokenizer=strip
    )
    common = ["max_steps=2", "per_device_train_batch_size=4", "disable_tqdm=true"]
    sft, rm, rl = tmp_path / "sft", tmp_path / "rm", tmp_path / "rl"
    if strip:
        with pytest.warns(UserWarning) as caught:
            code = main(
                [
                    "sft",
                    f"model={model_dir}",
                    f"data={world_dir / 'sft.jsonl'}",
                    f"output_dir={sft}",
                    *common,
                ]
            )
        messages = " ".join(str(w.message) for w in caught)
        assert "no pad token" in messages and "no chat template" in messages
    else:
        code = main(
            [
                "sft",
                f"model={model_dir}",
                f"data={world_dir / 'sft.jsonl'}",
                f"output_dir={sft}",
                *common,
            ]
        )
    assert code == 0
    assert (
        main(
            [
                "reward",
                f"model={sft / 'final'}",
                f"data={world_dir / 'preferences.jsonl'}",
                f"output_dir={rm}",
                *common,
            ]
        )
        == 0
    )
    assert main([
        "rl", f"model={sft / 'final'}", f"reward_model={rm / 'final'}", f"output_dir={rl}",
        "prompts_per_iteration=2", "num_generations=2", "max_completion_length=6",
        "eval_prompts=0", *common,
    ]) == 0  # fmt: skip
    policy = AutoModelForCausalLM.from_pretrained(rl / "final")
    assert policy.config.model_type == arch
