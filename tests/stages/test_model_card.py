"""Every final/ carries a model card in the Hub's format, read back with huggingface_hub."""

from __future__ import annotations

from pathlib import Path

import yaml
from huggingface_hub import ModelCard

from rlalign.train.model_card import add_card_section, model_card, write_model_card
from rlalign.train.reward_model import RewardConfig, run_reward
from rlalign.train.rl_config import RLConfig
from rlalign.train.sft import SFTConfig, run_sft


def settings_rows(text: str) -> dict[str, str]:
    """The ``| key | value |`` rows of the card's "How it was made" table."""
    table = text.split("## How it was made")[1].split("\n\n")[1]
    rows = [line.strip("|").split("|") for line in table.splitlines()[2:]]
    return {k.strip(): v.strip() for k, v in rows}


def test_sft_final_has_a_card_that_says_how_it_was_made(base_model_dir, world_dir, tmp_path):
    out = tmp_path / "sft"
    cfg = SFTConfig(model=str(base_model_dir), data=str(world_dir / "sft.jsonl"),
                    output_dir=str(out), max_steps=3, eval_steps=3, save_steps=3,
                    learning_rate=2e-3, per_device_train_batch_size=4, seed=7,
                    disable_tqdm=True)  # fmt: skip
    result = run_sft(cfg)
    card = ModelCard.load(result.final_dir / "README.md")
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "text-generation"
    assert card.data.tags == ["rlalign", "sft"]
    rows = settings_rows(card.text)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert rows["stage"] == "`rlalign sft`"
    assert rows["started from"] == f"`{base_model_dir}`"
    assert rows["data"] == f"`{world_dir / 'sft.jsonl'}`"
    assert rows["optimizer steps"] == "3"
    assert float(rows["learning_rate"]) == saved["learning_rate"] == 2e-3
    assert int(rows["seed"]) == saved["seed"] == 7
    assert int(rows["per_device_train_batch_size"]) == 4
    metrics = card.text.split("## Held-out metrics")[1]
    assert f"| eval_loss | {result.eval_metrics['eval_loss']:.4g} |" in metrics


def test_reward_and_rl_cards(base_model_dir, world_dir, tmp_path):
    cfg = RewardConfig(model=str(base_model_dir), data=str(world_dir / "preferences.jsonl"),
                       output_dir=str(tmp_path / "rm"), max_steps=2, eval_steps=2,
                       save_steps=2, per_device_train_batch_size=4, disable_tqdm=True)  # fmt: skip
    card = ModelCard.load(run_reward(cfg).final_dir / "README.md")
    assert card.data.pipeline_tag == "text-classification"
    assert "AutoModelForSequenceClassification.from_pretrained" in card.text
    # RL's card is the same function: checked here on its config alone (LoRA, an env)
    rl = RLConfig(model="tiny", env="rlalign/Driving-v0", algorithm="rloo",
                  lora={"r": 4}, output_dir=str(tmp_path / "rl"))  # fmt: skip
    card = ModelCard(model_card(rl, step=5))
    assert card.data.tags == ["rlalign", "rl", "rloo", "lora"]
    rows = settings_rows(card.text)
    assert rows["data"] == "the text environment `rlalign/Driving-v0` (multi-turn episodes)"
    assert rows["started from"].startswith("none: a `tiny` model")
    assert rows["algorithm"] == "`rloo`" and rows["lora"] == "r=4, alpha=16, saved merged"
    assert "## Held-out metrics" not in card.text  # none measured: no empty section


def test_a_section_is_added_once_and_replaced(tmp_path: Path):
    write_model_card(tmp_path, "---\ntags:\n- rlalign\n---\n\n# m\n\n## Use\n\ncode\n")
    add_card_section(tmp_path, "Report card", "| a | 1 |")
    add_card_section(tmp_path, "Report card", "| a | 2 |")
    text = (tmp_path / "README.md").read_text()
    assert text.count("## Report card") == 1 and "| a | 2 |" in text and "| a | 1 |" not in text
    assert text.index("## Use") < text.index("## Report card")
    assert ModelCard.load(tmp_path / "README.md").data.tags == ["rlalign"]
