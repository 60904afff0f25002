"""kill -9 at a random moment, then ``--resume``: every LM stage ends bit-identical (CPU, fp32)
to an uninterrupted run with the same seed, and ``metrics.jsonl`` holds each step once.

Each run is killed twice: first while a random checkpoint is being written (its weights are on
disk, its trainer state is not), then, resumed from the checkpoint before it, inside a random
optimizer step. The ``kill9`` fixture (tests/conftest.py) runs the children and compares.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlalign.cli import main

MAX_STEPS, SAVE_STEPS = 8, 3
COMMON = [
    f"max_steps={MAX_STEPS}",
    f"save_steps={SAVE_STEPS}",
    "logging_steps=1",
    "disable_tqdm=true",
    "device=cpu",
    "seed=5",
]


def pretrain_args(fx, out: Path) -> list[str]:
    corpus = fx["world_dir"] / "corpus.jsonl"
    return ["pretrain", f"data={corpus}", f"output_dir={out}", "model=tiny", "vocab_size=300",
            "block_size=32", "per_device_train_batch_size=4", "warmup_steps=2", "eval_steps=4",
            "max_eval_blocks=4"]  # fmt: skip


def sft_args(fx, out: Path) -> list[str]:
    return ["sft", f"model={fx['base_model_dir']}", f"data={fx['world_dir'] / 'sft.jsonl'}",
            f"output_dir={out}", "max_length=64", "per_device_train_batch_size=4",
            "gradient_accumulation_steps=2", "eval_fraction=0.05", "eval_steps=4",
            "learning_rate=3e-3", f"replay_data={fx['world_dir'] / 'corpus.jsonl'}",
            "replay_ratio=0.25"]  # fmt: skip


def reward_args(fx, out: Path) -> list[str]:
    prefs = fx["world_dir"] / "preferences.jsonl"
    return ["reward", f"model={fx['base_model_dir']}", f"data={prefs}", f"output_dir={out}",
            "max_length=64", "per_device_train_batch_size=4", "eval_fraction=0.05",
            "eval_steps=4", "learning_rate=3e-3"]  # fmt: skip


def rl_args(algorithm: str):
    def args(fx, out: Path) -> list[str]:
        task = fx["word_task"]
        return ["rl", f"model={fx['word_model_dir']}", f"data={task['prompts']}",
                f"reward_funcs={task['reward']}", f"output_dir={out}", f"algorithm={algorithm}",
                "prompts_per_iteration=4", "num_generations=4", "per_device_train_batch_size=8",
                "max_completion_length=4", "learning_rate=0.02", "beta=0.05", "gamma=0.9",
                "reward_timeout=60"]  # fmt: skip

    return args


STAGES = {
    "pretrain": pretrain_args,
    "sft": sft_args,
    "reward": reward_args,
    "rl_ppo": rl_args("ppo"),
    "rl_grpo": rl_args("grpo"),
}


@pytest.fixture
def fx(request, world_dir, base_model_dir, word_model_dir, word_task):
    return {
        "world_dir": world_dir,
        "base_model_dir": base_model_dir,
        "word_model_dir": word_model_dir,
        "word_task": word_task,
    }


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkill_then_resume_is_bit_identical(stage, fx, tmp_path, kill9):
    build = STAGES[stage]
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert main([*build(fx, reference), *COMMON]) == 0

    kills = kill9.plan(MAX_STEPS, SAVE_STEPS)
    kill9.run([*build(fx, run), *COMMON], kills)
    kill9.assert_same_run(reference, run, MAX_STEPS, kills)
