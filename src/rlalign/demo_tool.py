"""A language model learns to use a calculator: the tool-use flow in one call.

expert transcripts (with the tool) -> a tokenizer trained on their text -> SFT of a new model
-> multi-turn RL in ``rlalign/Calculator-v0`` -> accuracy on held-out sums, with the tool and
without it, for each model; a small card, ``report.json``, and each stage's run directory.
A second SFT model, trained on transcripts without the tool (question, answer), shows how well
the same model answers from its weights alone.

Every stage is the code of its command (``rlalign sft``, ``rlalign rl env=...``), with the
settings of :class:`ToolDemoConfig`. Held-out sums are the calculator's evaluation seeds
(:func:`rlalign.envs.calculator.eval_seeds`), which no transcript and no RL episode plays.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import Field

from rlalign.config import Config, NumThreads, Seed
from rlalign.envs.calculator import NO_TOOL, eval_seeds, write_expert_transcripts
from rlalign.envs.registry import make_text_env
from rlalign.goals import machine
from rlalign.io import atomic_write_text
from rlalign.lm.models import load_model, preset_shape
from rlalign.lm.tokenizer import load_tokenizer, train_tokenizer
from rlalign.precision import apply_num_threads
from rlalign.runtime import StageSeconds
from rlalign.train.episodes import PlaySettings, play_episodes
from rlalign.train.model_card import add_card_section
from rlalign.train.rl import run_rl
from rlalign.train.rl_config import RLConfig
from rlalign.train.sft import SFTConfig, run_sft

ENV = "rlalign/Calculator-v0"
MAX_TURNS = 3
MAX_NEW_TOKENS = 24  # tokens per message: the longest expert message has 20


class ToolDemoConfig(Config):
    """Sizes of the tool flow's stages (``--quick`` uses :data:`QUICK_TOOL`)."""

    seed: Seed = Field(0, description="random seed of the transcripts and of every stage")
    model: str = Field("tiny", description="model preset of the new model (rlalign.lm.models)")
    transcripts: int = Field(2000, gt=0, description="expert conversations for SFT")
    balanced: bool = Field(
        True,
        description="transcripts with 3-, 4- and 5-digit answers in equal shares "
        "(rlalign.envs.calculator.balanced_train_seeds)",
    )
    vocab_size: int = Field(320, gt=0, description="BPE vocabulary size")
    sft_steps: int = Field(600, gt=0, description="SFT optimizer steps")
    sft_learning_rate: float = Field(1e-3, gt=0, description="SFT learning rate")
    sft_batch_size: int = Field(32, gt=0, description="SFT conversations per step")
    no_tool_baseline: bool = Field(
        True, description="also SFT a model on transcripts without the tool (question, answer)"
    )
    rl_steps: int = Field(40, gt=0, description="RL optimizer steps")
    algorithm: str = Field("grpo", description="RL algorithm: grpo, rloo, ppo or reinforce")
    rl_learning_rate: float = Field(1e-4, gt=0, description="RL learning rate")
    temperature: float = Field(
        0.7, gt=0, description="RL sampling temperature (evaluation is greedy)"
    )
    beta: float = Field(0.02, ge=0, description="weight of the KL penalty to the SFT model")
    prompts_per_iteration: int = Field(8, gt=0, description="sums per RL rollout")
    num_generations: int = Field(4, gt=0, description="episodes per sum (the group)")
    rl_eval_episodes: int = Field(32, ge=0, description="held-out episodes per RL evaluation")
    eval_steps: int = Field(10, gt=0, description="RL steps between evaluations")
    eval_episodes: int = Field(200, gt=0, description="held-out sums on the card")
    num_threads: NumThreads = "auto"


QUICK_TOOL: dict[str, Any] = {
    "transcripts": 200,
    "sft_steps": 20,
    "rl_steps": 2,
    "prompts_per_iteration": 2,
    "num_generations": 2,
    "rl_eval_episodes": 4,
    "eval_steps": 2,
    "eval_episodes": 8,
}

_DIGIT_TOKEN = re.compile(r"Ġ?\d")


def split_digits(tokenizer: Any, texts: list[str]) -> list[str]:
    """The tokens of ``texts`` that hold a digit and are not one digit (with its space): empty
    when every digit is a token of its own, which the model needs to copy a number."""
    bad = set()
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for token in tokenizer.convert_ids_to_tokens(ids):
            if any(ch.isdigit() for ch in token) and not _DIGIT_TOKEN.fullmatch(token):
                bad.add(token)
    return sorted(bad)


def calculator_accuracy(
    model: Any, tokenizer: Any, seeds: list[int], *, tool: bool
) -> dict[str, float]:
    """Greedy episodes of the calculator on ``seeds`` (``tool=False``: every call is refused,
    the model must answer from its weights): the share answered right, and the mean tool calls
    and malformed calls an episode."""
    envs = [make_text_env(ENV, {"tool": tool, "max_turns": MAX_TURNS}) for _ in seeds]
    settings = PlaySettings(
        history="full", max_turns=MAX_TURNS, max_new_tokens=MAX_NEW_TOKENS, temperature=0.0
    )
    episodes, _ = play_episodes(model, tokenizer, envs, seeds, settings, env_name=ENV)
    n = len(episodes)
    return {
        "accuracy": sum(bool(e.info.get("correct")) for e in episodes) / n,
        "tool_calls": sum(e.info.get("tool_calls", 0) for e in episodes) / n,
        "invalid_tool_calls": sum(e.info.get("invalid_tool_calls", 0) for e in episodes) / n,
    }


STAGE_LABELS = {
    "sft": "SFT on tool transcripts",
    "rl": "RL in the calculator env",
    "sft_no_tool": "SFT on answers only",
}


def format_tool_card(stages: dict[str, dict[str, dict[str, float]]], n: int) -> str:
    """The card: each model's accuracy on ``n`` held-out sums with the tool and without it."""
    lines = [
        f"accuracy on {n} held-out sums of 4-digit numbers",
        f"{'model':<28}{'with the tool':>15}{'without it':>12}",
    ]
    for stage, cells in stages.items():
        row = f"{STAGE_LABELS.get(stage, stage):<28}"
        row += f"{cells['tool']['accuracy']:>15.1%}{cells['no_tool']['accuracy']:>12.1%}"
        lines.append(row)
    return "\n".join(lines)


def run_tool_demo(out: str | Path, cfg: ToolDemoConfig) -> dict[str, Any]:
    """Run the flow into ``out``; returns the report (also written to ``out/report.json``)."""
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = apply_num_threads(cfg.num_threads, *preset_shape(cfg.model))
    if threads is not None:
        print(threads.describe(), flush=True)
    seconds = StageSeconds()
    timed = seconds.run

    total = 6 if cfg.no_tool_baseline else 5
    print(f"[1/{total}] expert transcripts: {cfg.transcripts} training sums", flush=True)
    data = out / "data"
    for tool, name in ((True, "tool.jsonl"), (False, "no_tool.jsonl")):
        write_expert_transcripts(
            data / name, cfg.transcripts, cfg.seed, tool=tool, balanced=cfg.balanced
        )
    texts = [
        m["content"]
        for name in ("tool.jsonl", "no_tool.jsonl")
        for line in (data / name).read_text().splitlines()
        for m in json.loads(line)["messages"]
    ] + [NO_TOOL]

    print(f"[2/{total}] tokenizer: byte-level BPE on the transcripts", flush=True)
    tokenizer = timed("tokenizer", lambda: train_tokenizer(texts, cfg.vocab_size))
    split = split_digits(tokenizer, texts)
    if split:  # the env spaces its digits so that this cannot happen; say so if it does
        raise RuntimeError(f"the tokenizer merged digits into tokens {split[:5]}")
    tokenizer.save_pretrained(out / "tokenizer")
    print(f"      {len(tokenizer)} tokens, every digit one token", flush=True)

    def sft(name: str, data_file: str):
        return run_sft(
            SFTConfig(
                model=cfg.model,
                tokenizer=str(out / "tokenizer"),
                data=str(data / data_file),
                output_dir=str(out / name),
                max_steps=cfg.sft_steps,
                learning_rate=cfg.sft_learning_rate,
                per_device_train_batch_size=cfg.sft_batch_size,
                max_length=96,
                eval_steps=cfg.sft_steps,
                save_steps=cfg.sft_steps,
                logging_steps=max(cfg.sft_steps // 20, 1),
                seed=cfg.seed,
                overwrite_output_dir=True,
                bf16=False,
            )
        )

    print(f"[3/{total}] SFT of a new '{cfg.model}' model on the tool transcripts", flush=True)
    sft_result = timed("sft", lambda: sft("sft", "tool.jsonl"))

    print(f"[4/{total}] RL ({cfg.algorithm}) in {ENV}: reward 1 for a right answer", flush=True)
    rollout = cfg.prompts_per_iteration * cfg.num_generations
    rl_result = timed(
        "rl",
        lambda: run_rl(
            RLConfig(
                model=str(sft_result.final_dir),
                output_dir=str(out / "rl"),
                env=ENV,
                history="full",
                max_turns=MAX_TURNS,
                algorithm=cfg.algorithm,
                max_steps=cfg.rl_steps,
                learning_rate=cfg.rl_learning_rate,
                beta=cfg.beta,
                temperature=cfg.temperature,
                prompts_per_iteration=cfg.prompts_per_iteration,
                num_generations=cfg.num_generations,
                per_device_train_batch_size=rollout,
                max_completion_length=MAX_NEW_TOKENS,
                eval_episodes=cfg.rl_eval_episodes,
                eval_steps=cfg.eval_steps,
                save_steps=cfg.rl_steps,
                logging_steps=1,
                seed=cfg.seed,
                env_seed=cfg.seed,
                overwrite_output_dir=True,
                bf16=False,
            )
        ),
    )
    models = {"sft": sft_result.final_dir, "rl": rl_result.final_dir}
    if cfg.no_tool_baseline:
        print(f"[5/{total}] SFT of a new model on answers only (no tool)", flush=True)
        models["sft_no_tool"] = timed("sft_no_tool", lambda: sft("sft_no_tool", "no_tool.jsonl"))
        models["sft_no_tool"] = models["sft_no_tool"].final_dir

    print(f"[{total}/{total}] held-out sums, with the tool and without it", flush=True)
    seeds = eval_seeds(cfg.eval_episodes)
    stages: dict[str, dict[str, dict[str, float]]] = {}
    for stage, path in models.items():
        model, tok = load_model(path), load_tokenizer(path)
        stages[stage] = timed(
            f"eval_{stage}",
            lambda m=model, t=tok: {
                "tool": calculator_accuracy(m, t, seeds, tool=True),
                "no_tool": calculator_accuracy(m, t, seeds, tool=False),
            },
        )
    seconds.finish()
    print("\n" + format_tool_card(stages, len(seeds)))
    for path in models.values():
        add_card_section(path, "Calculator (rlalign demo tool)", (
            f"Held-out sums ({len(seeds)} episodes of rlalign/Calculator-v0), answered with the "
            f"tool and without it:\n\n```text\n{format_tool_card(stages, len(seeds))}\n```"
        ))  # fmt: skip
    print("\nseconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    cpu, threads = machine(), torch.get_num_threads()
    print(f"CPU: {cpu}, {threads} torch thread(s)")
    report = {
        "stages": stages,
        "eval_seeds": [seeds[0], seeds[-1]],
        "seconds": seconds,
        "cpu": cpu,
        "torch_threads": threads,
        "config": cfg.model_dump(),
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    print(f"report: {out / 'report.json'}")
    return report
