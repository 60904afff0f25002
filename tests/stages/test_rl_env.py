"""Multi-turn RL in a text environment, end to end with a word-level model: credit across
turns finds the optimum of a two-step MDP with every algorithm; environment tokens get no
gradient; batched episodes equal episodes played one at a time; bad environments are one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlalign.cli import main
from rlalign.lm.loading import load_model_and_tokenizer
from rlalign.train.episodes import PlaySettings, play_episodes
from rlalign.train.multiturn import EpisodeRolloutSource
from rlalign.train.rl import make_loss_fn
from rlalign.train.rl_config import RLConfig

HERE = Path(__file__).resolve().parent
TEXT_MDP = HERE.parent / "train" / "text_mdp.py"
BAD = HERE / "bad_envs"  # environments that fail in every way a user's can


def env_args(model_dir, out, **extra) -> list[str]:
    settings = {
        "model": model_dir, "env": f"{TEXT_MDP}:make_env", "output_dir": out,
        "history": "last", "prompts_per_iteration": 8, "num_generations": 8,
        "per_device_train_batch_size": 64, "max_completion_length": 2, "max_turns": 4,
        "learning_rate": 0.01, "beta": 0.0, "gamma": 0.9, "max_steps": 24, "save_steps": 100,
        "eval_steps": 100, "eval_episodes": 4, "disable_tqdm": "true",
    }  # fmt: skip
    settings.update(extra)
    return ["rl", *(f"{k}={v}" for k, v in settings.items())]


def last_row(out: Path) -> dict:
    """The latest value of every metric (the final evaluation has a row of its own)."""
    latest: dict = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        latest.update(json.loads(line))
    return latest


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["ppo", "grpo", "rloo", "reinforce"])
def test_credit_across_turns_finds_the_delayed_reward(word_model_dir, tmp_path, algorithm):
    out = tmp_path / algorithm
    assert main(env_args(word_model_dir, out, algorithm=algorithm)) == 0
    row = last_row(out)
    # greedy: "sun" (nothing now, 1 at the next step), never "cat" (0.3 now, nothing later)
    assert row["eval/return"] == 1.0 and row["eval/reached_moon"] == 1.0, row
    assert row["env/return"] >= 0.9


@pytest.mark.slow
def test_a_learner_blind_to_later_turns_settles_on_the_immediate_reward(word_model_dir, tmp_path):
    """The reference for the test above: with gamma = 0 each turn earns only its own reward,
    and the same run takes "cat"."""
    out = tmp_path / "myopic"
    assert main(env_args(word_model_dir, out, algorithm="grpo", gamma=0.0)) == 0
    row = last_row(out)
    assert row["eval/return"] == pytest.approx(0.3), row


def _source(word_model_dir, tmp_path, history: str) -> EpisodeRolloutSource:
    from tests.train.text_mdp import make_env

    cfg = RLConfig(
        model=str(word_model_dir), env=f"{TEXT_MDP}:make_env", output_dir=str(tmp_path),
        history=history, prompts_per_iteration=2, num_generations=2,
        per_device_train_batch_size=4, max_completion_length=2, max_turns=3, beta=0.0,
        algorithm="grpo", seed=3,
    )  # fmt: skip
    model, tokenizer = load_model_and_tokenizer(word_model_dir)
    return EpisodeRolloutSource(cfg, model, None, tokenizer, make_env)


def test_environment_tokens_get_exactly_zero_gradient(word_model_dir, tmp_path, monkeypatch):
    """The loss's gradient with respect to each completion token's log-probability: exactly 0
    on the environment's tokens (and the padding), non-zero on every token the model wrote."""
    import rlalign.train.rl as rl_stage

    source = _source(word_model_dir, tmp_path, "full")
    source.collect_rollout()
    batch = next(source)
    # advantages everywhere, environment tokens included: only the loss mask may keep them out
    batch["advantages"] = torch.ones_like(batch["advantages"])
    captured = {}
    real_forward = rl_stage.completion_forward

    def keep_logp(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        out["logp"].retain_grad()
        captured["logp"] = out["logp"]
        return out

    monkeypatch.setattr(rl_stage, "completion_forward", keep_logp)
    count = float(batch["completion_mask"].sum())
    loss, _ = make_loss_fn(source.cfg, has_reference=False)(source.model, batch, count)
    loss.backward()
    grad = captured["logp"].grad  # (rows, completion width)
    written = _model_written(batch, source.tokenizer, source.cfg.max_completion_length)
    assert bool((~written & (batch["attention_mask"][:, -written.shape[1] :] == 1)).any())
    assert float(grad[~written].abs().sum()) == 0.0  # environment tokens and padding
    assert bool((grad[written] != 0).all())


def _model_written(batch, tokenizer, max_len: int) -> torch.Tensor:
    """Which completion tokens the model wrote, read off the chat protocol alone: after the
    generation prompt the model writes up to its <|eos|> (or max_len tokens); the environment's
    turn then runs to the next <|assistant|> marker."""
    start = int(batch["prompt_length"][0])
    eos, assistant = tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|assistant|>")
    out = torch.zeros_like(batch["completion_mask"], dtype=torch.bool)
    for r, row in enumerate(batch["sequences"][:, start:].tolist()):
        real = batch["attention_mask"][r, start:].tolist()
        model_turn, written = True, 0
        for c, (token, on) in enumerate(zip(row, real, strict=True)):
            if not on:
                break
            if model_turn:
                out[r, c], written = True, written + 1
                model_turn = not (token == eos or written == max_len)
            elif token == assistant:
                model_turn, written = True, 0
    return out


class UntilBlue:
    """Ends when the model says "blue" (or after 4 steps): episodes of different lengths, so
    the batch of live episodes shrinks turn by turn."""

    actions = None

    def reset(self, *, seed=None):
        self.seed, self.t = seed, 0
        return "say a word", {}

    def step(self, action):
        self.t += 1
        done = action.split()[:1] == ["blue"]
        return ["red", "green", "moon"][(self.seed + self.t) % 3], float(self.t), done, False, {}

    def close(self):
        pass


def make_env() -> UntilBlue:
    return UntilBlue()


@pytest.mark.parametrize("history", ["full", "last"])
def test_batched_episodes_equal_episodes_played_one_at_a_time(word_model_dir, history):
    model, tokenizer = load_model_and_tokenizer(word_model_dir)
    settings = PlaySettings(history=history, max_turns=4, max_new_tokens=3, temperature=2.0)
    seeds = list(range(8))
    uniforms = torch.rand((8, 4, 3), generator=torch.Generator().manual_seed(0))
    together, _ = play_episodes(
        model, tokenizer, [make_env() for _ in seeds], seeds, settings, uniforms=uniforms
    )
    for i, seed in enumerate(seeds):
        (alone,), _ = play_episodes(
            model, tokenizer, [make_env()], [seed], settings, uniforms=uniforms[i : i + 1]
        )
        both = together[i]
        assert [t.action_ids for t in alone.turns] == [t.action_ids for t in both.turns]
        assert [t.reward for t in alone.turns] == [t.reward for t in both.turns]
        assert [t.env_ids for t in alone.turns] == [t.env_ids for t in both.turns]
        for a, b in zip(alone.turns, both.turns, strict=True):
            assert a.logp == pytest.approx(b.logp, abs=1e-5)
    assert len({len(e.turns) for e in together}) > 1  # episodes of different lengths


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ("rlalign/Drivin-v0", "did you mean 'rlalign/Driving-v0'"),
        (f"{BAD}/env_raises.py:make_env", "licence server is down"),
        (f"{BAD}/env_not_an_env.py:make_env", "no reset() or step()"),
        (f"{BAD}/env_array_observation.py:make_env", "observation"),
    ],
)
def test_a_bad_environment_is_one_line_and_writes_nothing(
    word_model_dir, tmp_path, capfd, env, message
):
    out = tmp_path / "run"
    assert main(env_args(word_model_dir, out, env=env, max_steps=1)) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert "Traceback" not in err[0]
    assert not out.exists()


def test_an_episode_that_never_ends_is_cut_at_max_turns(word_model_dir, tmp_path):
    out = tmp_path / "endless"
    args = env_args(word_model_dir, out, env=f"{BAD}/env_never_ends.py:make_env", max_turns=5,
                    max_steps=1, prompts_per_iteration=2, num_generations=2)  # fmt: skip
    assert main(args) == 0
    row = last_row(out)
    assert row["env/turns"] == 5 and row["env/return"] == 5 and row["env/ended_by_env"] == 0
    # the run report plots the episodes
    for name in ("episode_return", "episode_turns"):
        assert (out / "plots" / f"rl_{name}.png").is_file()
