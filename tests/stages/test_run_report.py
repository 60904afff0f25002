"""Every LM stage leaves plots and one self-contained report.html in its run directory."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import yaml

from rlalign.cli import main
from rlalign.report.run_report import write_run_report

PNG = b"\x89PNG\r\n\x1a\n"
FAST = ["max_steps=3", "save_steps=3", "logging_steps=1", "eval_steps=2", "disable_tqdm=true"]


class Page(HTMLParser):
    """Every URL a page would load or link, its images and its table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.cells: list[str] = []
        self.scripts = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href", "data", "action", "poster"):
            if attrs.get(name):
                self.urls.append((tag, attrs[name]))
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])
        if tag == "link" or tag == "script":
            self.scripts += 1
        if tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None


def parse(path: Path) -> Page:
    page = Page()
    text = path.read_text(encoding="utf-8")
    page.feed(text)
    assert "url(" not in text and "@import" not in text  # no CSS fetches either
    return page


def assert_self_contained(run: Path) -> Page:
    page = parse(run / "report.html")
    assert page.scripts == 0
    assert page.images, "no plots in the report"
    for src in page.images:
        assert src.startswith("data:image/png;base64,"), src[:60]
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
    for tag, url in page.urls:
        if tag == "img":
            continue
        # the only other URLs are relative links to files in the run directory
        assert not re.match(r"^[a-z]+:|^//", url), url
        assert (run / url).is_file(), url
    return page


def stage_args(stage, world_dir, base_model_dir, word_model_dir, word_task, out):
    if stage == "pretrain":
        corpus = world_dir / "corpus.jsonl"
        return ["pretrain", f"data={corpus}", "model=tiny", "vocab_size=300", "block_size=32",
                "per_device_train_batch_size=4", "max_eval_blocks=2", f"output_dir={out}"]  # fmt: skip
    if stage == "sft":
        return ["sft", f"model={base_model_dir}", f"data={world_dir / 'sft.jsonl'}",
                "max_length=48", "per_device_train_batch_size=4", f"output_dir={out}"]  # fmt: skip
    if stage == "reward":
        return ["reward", f"model={base_model_dir}", f"data={world_dir / 'preferences.jsonl'}",
                "max_length=48", "per_device_train_batch_size=4", f"output_dir={out}"]  # fmt: skip
    return ["rl", f"model={word_model_dir}", f"data={word_task['prompts']}",
            f"reward_funcs={word_task['reward']}", "algorithm=ppo", "prompts_per_iteration=4",
            "num_generations=2", "per_device_train_batch_size=8", "max_completion_length=4",
            "beta=0.05", "save_rollouts=3", f"output_dir={out}"]  # fmt: skip


EXPECTED_PLOTS = {
    "pretrain": {"loss", "learning_rate", "grad_norm", "perplexity"},
    "sft": {"loss", "learning_rate", "grad_norm"},
    "reward": {"loss", "accuracy", "accuracy_by_kind", "margin"},
    "rl": {"reward", "reward_components", "kl", "entropy", "clip_fraction", "value_loss", "length"},
}


@pytest.mark.parametrize("stage", list(EXPECTED_PLOTS))
def test_each_stage_writes_a_self_contained_report(
    stage, world_dir, base_model_dir, word_model_dir, word_task, tmp_path, capsys
):
    run = tmp_path / stage
    args = stage_args(stage, world_dir, base_model_dir, word_model_dir, word_task, run)
    assert main([*args, *FAST]) == 0
    assert f"report: {run}/report.html" in capsys.readouterr().out

    made = {p.stem.removeprefix(f"{stage}_") for p in (run / "plots").glob("*.png")}
    assert made == EXPECTED_PLOTS[stage]
    page = assert_self_contained(run)
    assert len(page.images) == len(made)
    text = (run / "report.html").read_text()
    # the resolved config, as written to config.yaml, and the finished status
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["max_steps"] == 3
    assert f"output_dir: {run}" in text and "max_steps: 3" in text
    assert "finished: 3 steps" in text
    # the last logged values, e.g. the final loss, exactly as in metrics.jsonl
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    i = page.cells.index("loss")
    assert float(page.cells[i + 1]) == pytest.approx(last["loss"], rel=1e-5)
    if stage == "rl":
        assert page.links == ["viewer_iter_1.html", "viewer_iter_2.html", "viewer_iter_3.html"]
        assert 'class="tok"' in (run / "viewer_iter_3.html").read_text()


def test_a_stopped_run_says_how_to_continue(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step_2").mkdir(parents=True)
    torch.save({"step": 2}, run / "checkpoints" / "step_2" / "trainer_state.pt")
    (run / "config.yaml").write_text("algorithm: grpo\nmax_steps: 10\n")
    rows = [{"step": s, "loss": 1.0 / s, "reward_mean": 0.1 * s} for s in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = write_run_report(run).read_text()
    assert "stopped at step 3 of 10 (checkpoint step_2); continue with --resume" in text
    assert "no rollouts saved" in text


def test_the_rl_report_card_compares_the_first_and_last_evaluation(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("algorithm: grpo\nmax_steps: 4\n")
    rows = [
        {"step": 1, "reward_mean": 0.0},
        {"step": 2, "eval/fact_accuracy": 0.5, "eval/hallucination_rate": 0.4,
         "eval/reward_mean": -0.25},
        {"step": 4, "eval/fact_accuracy": 0.75, "eval/hallucination_rate": 0.6,
         "eval/reward_mean": 0.125},
    ]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = parse(write_run_report(run))
    cells = page.cells
    assert cells[:3] == ["criterion", "step 2", "step 4"]
    row = cells.index("known facts answered correctly")
    assert cells[row + 1 : row + 3] == ["50.0%", "75.0%"]
    row = cells.index("unknown entities: made-up answers")
    assert cells[row + 1 : row + 3] == ["40.0%", "60.0%"]
    row = cells.index("mean reward (world verifiers)")
    assert cells[row + 1 : row + 3] == ["-0.250", "0.125"]
    text = (run / "report.html").read_text()
    # better on facts and reward (higher), worse on hallucination (higher is worse)
    assert '<td class="better">75.0%</td>' in text and '<td class="worse">60.0%</td>' in text
    assert (run / "plots" / "rl_criteria.png").is_file()


def test_report_command_and_its_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    (tmp_path / "config.yaml").write_text("env_id: CartPole-v1\n")
    assert main(["report", str(tmp_path)]) == 2
    assert "not the config.yaml of an LM stage run" in capsys.readouterr().err
    (tmp_path / "config.yaml").write_text("block_size: 8\nmax_steps: 1\n")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    assert main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "plots" / "pretrain_loss.png").is_file()


def test_only_rank_0_writes_the_report(tmp_path, monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlalign.api import _run
    from rlalign.commands import report_stage
    from rlalign.dist import RankInfo
    from rlalign.train.config import TrainingConfig
    from rlalign.train.data import BlockBatches
    from rlalign.train.losses import causal_lm_loss, count_label_tokens
    from rlalign.train.stage import train_and_save

    class Tokenizer:
        def save_pretrained(self, directory):
            Path(directory, "tokenizer.json").write_text("{}")

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    ids = torch.randint(0, 32, (8, 6), generator=torch.Generator().manual_seed(0))
    for rank in (1, 0):
        out = tmp_path / f"rank{rank}"
        out.mkdir()
        (out / "config.yaml").write_text("block_size: 6\nmax_steps: 2\n")
        cfg = TrainingConfig(data="unused", output_dir=str(out), max_steps=2, device="cpu",
                             per_device_train_batch_size=4, disable_tqdm=True)  # fmt: skip
        data = BlockBatches({"input_ids": ids, "labels": ids}, 4, seed=0)

        def stage(cfg, resume, data=data, rank=rank):  # a stage on the shared loop
            return train_and_save(LlamaForCausalLM(config), Tokenizer(), causal_lm_loss, data,
                                  cfg, resume=resume, count_fn=count_label_tokens,
                                  rank=RankInfo(rank, 2))  # fmt: skip

        monkeypatch.setattr(RankInfo, "detect", staticmethod(lambda r=rank: RankInfo(r, 2)))
        result = _run(cfg, stage, resume=False)  # what every rlalign.<stage>() call runs
        assert report_stage(result, str(out), "done") == 0
    assert sorted(p.name for p in (tmp_path / "rank1").iterdir()) == ["config.yaml"]
    assert (tmp_path / "rank0" / "report.html").is_file()
    assert (tmp_path / "rank0" / "plots" / "pretrain_loss.png").is_file()
