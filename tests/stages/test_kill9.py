"""kill -9 at a random moment, then ``--resume``: every LM stage ends bit-identical (CPU, fp32)
to an uninterrupted run with the same seed, ``metrics.jsonl`` holds each step once on a whole
line, and no half-written file is left behind.

Each run is killed four times in a row (each later run resumed from what the kill left), at
points drawn from every kind the stage reaches: inside an optimizer step, halfway through a
metrics line, a checkpoint's weights, its trainer state or final/'s weights, and for RL halfway
through a rollout file or while the reward worker scores. The ``kill9`` fixture
(tests/conftest.py) runs the children, checks what each kill left, and compares.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlalign.cli import main

# the kinds of kill point (tests/_killed_child.py) every stage reaches; RL adds its rollout file
# and its reward call
LM_KILLS = ("step", "metrics", "weights", "checkpoint", "final")
RL_KILLS = (*LM_KILLS, "rollout", "reward")

MAX_STEPS, SAVE_STEPS = 8, 3
ROLLOUT_STEPS = 2  # 4 prompts x 4 generations, 8 per optimizer step
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


def rl_args(algorithm: str, *extra: str):
    def args(fx, out: Path) -> list[str]:
        task = fx["word_task"]
        return ["rl", f"model={fx['word_model_dir']}", f"data={task['prompts']}",
                f"reward_funcs={task['reward']}", f"output_dir={out}", f"algorithm={algorithm}",
                "prompts_per_iteration=4", "num_generations=4", "per_device_train_batch_size=8",
                "max_completion_length=4", "learning_rate=0.02", "beta=0.05", "gamma=0.9",
                "reward_timeout=60", *extra]  # fmt: skip

    return args


def rl_grpo_ptx_args(fx, out: Path) -> list[str]:
    """GRPO plus PPO-ptx's next-token loss on a text corpus (whose position resumes too)."""
    ptx = [f"ptx_data={fx['ptx_corpus']}", "ptx_coef=0.5", "ptx_batch_size=3"]
    return rl_args("grpo", *ptx)(fx, out)


def rl_env_args(fx, out: Path) -> list[str]:
    """Multi-turn RL in a text environment (tests/train/text_mdp.py), whole conversations."""
    return ["rl", f"model={fx['word_model_dir']}", f"env={TEXT_MDP}:make_env",
            f"output_dir={out}", "algorithm=ppo", "history=full", "prompts_per_iteration=4",
            "num_generations=4", "per_device_train_batch_size=8", "max_completion_length=2",
            "max_turns=3", "learning_rate=0.02", "beta=0.05", "gamma=0.9",
            "eval_episodes=2", "eval_steps=4"]  # fmt: skip


def rl_car_args(fx, out: Path) -> list[str]:
    """The car driven in words (rlalign/Driving-v0's text adapter), one row per turn, episodes
    cut at 8 turns (fewer where the car leaves the road: rollouts differ in length, so the kill
    points are the loop's, not a rollout file's)."""
    return ["rl", f"model={fx['base_model_dir']}", "env=rlalign/Driving-v0", f"output_dir={out}",
            "algorithm=grpo", "history=last", "prompts_per_iteration=2", "num_generations=2",
            "per_device_train_batch_size=16", "max_completion_length=3", "max_turns=8",
            "max_prompt_length=120", "learning_rate=0.01", "beta=0.05", "gamma=0.95",
            "eval_episodes=2", "eval_steps=4"]  # fmt: skip


TEXT_MDP = Path(__file__).resolve().parents[1] / "train" / "text_mdp.py"

# each stage, and the kinds of kill point it reaches
STAGES = {
    "pretrain": (pretrain_args, LM_KILLS),
    "sft": (sft_args, LM_KILLS),
    "reward": (reward_args, LM_KILLS),
    "rl_ppo": (rl_args("ppo"), RL_KILLS),
    "rl_grpo_ptx": (rl_grpo_ptx_args, RL_KILLS),
    "rl_env": (rl_env_args, (*LM_KILLS, "rollout")),  # the env rewards: no reward worker
    "rl_car": (rl_car_args, LM_KILLS),
}


@pytest.fixture(scope="module")
def fx(tmp_path_factory, world_dir, base_model_dir, word_model_dir, word_task):
    ptx = tmp_path_factory.mktemp("ptx") / "corpus.txt"
    ptx.write_text("".join("red green blue cat dog sun moon\n" for _ in range(20)))
    return {
        "world_dir": world_dir,
        "base_model_dir": base_model_dir,
        "word_model_dir": word_model_dir,
        "word_task": word_task,
        "ptx_corpus": ptx,
    }


@pytest.fixture(scope="module")
def reference(fx, tmp_path_factory):
    """The uninterrupted run of a stage (made when first needed, shared by its tests)."""
    made: dict[str, Path] = {}

    def get(stage: str) -> Path:
        if stage not in made:
            out = tmp_path_factory.mktemp(f"reference_{stage}")
            assert main([*STAGES[stage][0](fx, out), *COMMON]) == 0
            made[stage] = out
        return made[stage]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkill_then_resume_is_bit_identical(stage, fx, reference, tmp_path, kill9):
    build, kinds = STAGES[stage]
    run = tmp_path / "run"
    kills = kill9.plan(MAX_STEPS, SAVE_STEPS, kinds, rollout_steps=ROLLOUT_STEPS, kills=4)
    kill9.run([*build(fx, run), *COMMON], kills)
    kill9.assert_same_run(reference(stage), run, MAX_STEPS, kills)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["weights", "checkpoint"])
def test_a_kill_in_the_first_checkpoint_write_leaves_nothing_behind(
    kind, fx, reference, tmp_path, kill9
):
    """No checkpoint to resume from: the resumed run starts over, and the half-written first
    checkpoint the kill left is gone."""
    run = tmp_path / "run"
    kills = [f"{kind}:{SAVE_STEPS}"]
    kill9.run([*pretrain_args(fx, run), *COMMON], kills, finish=False)
    left = [p.name for p in (run / "checkpoints").iterdir()]
    assert len(left) == 1 and left[0].startswith(f".step_{SAVE_STEPS}."), left  # the debris
    assert main(["pretrain", "--resume", *pretrain_args(fx, run)[1:], *COMMON]) == 0
    kill9.assert_same_run(reference("pretrain"), run, MAX_STEPS, kills)
