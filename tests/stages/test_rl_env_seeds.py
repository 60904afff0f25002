"""Multi-turn RL keeps training and evaluation episodes apart: evaluation plays the env's
held-out seeds, training never plays one, and a run whose seeds would reach them is refused."""

from __future__ import annotations

import json
import textwrap

import pytest

from rlalign.envs.calculator import (
    EVAL_SEED_START,
    eval_seeds,
    expert_messages,
    is_eval_question,
    question,
    train_seeds,
)
from rlalign.errors import UserError
from rlalign.lm.tokenizer import train_tokenizer
from rlalign.train.rl import run_rl
from rlalign.train.rl_config import RLConfig

# The calculator, recording every episode it is reset to (one JSON line a reset).
RECORDING_ENV = textwrap.dedent(
    """
    import json
    from rlalign.envs.calculator import make_env as calculator

    class Plain:  # the calculator's episodes, without its eval_seeds
        actions = None

        def __init__(self, **kwargs):
            self.env = calculator(**kwargs)

        def reset(self, *, seed=None):
            return self.env.reset(seed=seed)

        def step(self, action):
            return self.env.step(action)

        def close(self):
            self.env.close()

    class Recording(Plain):
        def __init__(self, log, **kwargs):
            super().__init__(**kwargs)
            self.log = log

        def reset(self, *, seed=None):
            observation, info = self.env.reset(seed=seed)
            with open(self.log, "a") as f:
                f.write(json.dumps({"seed": seed, "question": observation}) + "\\n")
            return observation, info

        def eval_seeds(self, n):
            return self.env.eval_seeds(n)

    def make_env(log, **kwargs):
        return Recording(log, **kwargs)

    def make_plain_env(**kwargs):
        return Plain(**kwargs)
    """
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("env_seeds")
    texts = [m["content"] for s in train_seeds(50) for m in expert_messages(s)]
    train_tokenizer(texts, vocab_size=300).save_pretrained(root / "tokenizer")
    (root / "recording.py").write_text(RECORDING_ENV)
    return root


def config(root, out, **overrides) -> RLConfig:
    log = out.parent / f"{out.name}-resets.jsonl"  # beside the run: it is not the run's file
    settings = dict(
        model="tiny", tokenizer=str(root / "tokenizer"), output_dir=str(out),
        env=f"{root / 'recording.py'}:make_env", env_kwargs={"log": str(log)},
        history="full", max_turns=3, max_steps=3, prompts_per_iteration=2, num_generations=2,
        per_device_train_batch_size=4, max_completion_length=8, eval_steps=1, eval_episodes=3,
        save_steps=3, logging_steps=1, seed=0, env_seed=5, save_rollouts=0,
    )  # fmt: skip
    settings.update(overrides)
    return RLConfig(**settings)


def test_evaluation_plays_held_out_seeds_and_training_never_does(setup, tmp_path):
    cfg = config(setup, tmp_path / "run")
    run_rl(cfg)
    resets = [json.loads(line) for line in (tmp_path / "run-resets.jsonl").open()]
    held_out = set(eval_seeds(cfg.eval_episodes))
    played = {r["seed"] for r in resets}
    assert held_out <= played  # evaluation ran, on the env's own held-out seeds
    training = [r for r in resets if r["seed"] not in held_out]
    # group g of rollout i: env_seed + i * prompts_per_iteration + g (3 rollouts of 2 groups)
    assert {r["seed"] for r in training} == set(range(5, 5 + 3 * 2))
    assert all(r["seed"] < EVAL_SEED_START for r in training)
    eval_questions = {r["question"] for r in resets if r["seed"] in held_out}
    for r in training:
        assert r["question"] not in eval_questions
        assert not is_eval_question(question(r["seed"]))


def test_training_seeds_reaching_the_held_out_ones_are_refused(setup, tmp_path):
    out = tmp_path / "run"
    # 3 steps x 2 prompts: seeds EVAL_SEED_START - 4 .. EVAL_SEED_START + 1
    cfg = config(setup, out, env_seed=EVAL_SEED_START - 4)
    with pytest.raises(UserError, match=f"holds out every seed from {EVAL_SEED_START} on"):
        run_rl(cfg)
    assert not out.exists()  # refused before anything was written
    run_rl(config(setup, out, env_seed=EVAL_SEED_START - 6, eval_episodes=0))  # just below


def test_an_env_without_eval_seeds_keeps_training_off_seeds_0_to_n(setup, tmp_path):
    plain = f"{setup / 'recording.py'}:make_plain_env"
    cfg = config(setup, tmp_path / "run", env=plain, env_kwargs={}, env_seed=2, eval_episodes=3)
    with pytest.raises(UserError, match=r"evaluation seeds 0\.\.2; set env_seed >= 3"):
        run_rl(cfg)
