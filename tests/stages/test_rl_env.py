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


@pytest.mark.parametrize("history", ["full", "last"])
def test_a_cut_episode_keeps_the_prompt_of_the_state_it_reached(word_model_dir, history):
    """PPO bootstraps a cut episode from the prompt its next turn would have had: cut at two
    turns, that is the third turn's prompt of the same episodes played to three."""
    model, tokenizer = load_model_and_tokenizer(word_model_dir)
    seeds = list(range(12))
    uniforms = torch.rand((12, 3, 3), generator=torch.Generator().manual_seed(0))

    def play(turns: int) -> list:
        settings = PlaySettings(history=history, max_turns=turns, max_new_tokens=3, temperature=2.0)
        envs = [make_env() for _ in seeds]
        return play_episodes(model, tokenizer, envs, seeds, settings, uniforms=uniforms[:, :turns])[
            0
        ]

    ends = []
    for cut, longer in zip(play(2), play(3), strict=True):
        ends.append(cut.end)
        if cut.end == "terminated":
            assert cut.next_prompt_ids is None
        else:
            assert cut.end == "max_turns"
            assert cut.next_prompt_ids == longer.turns[2].prompt_ids
            if history == "full":  # the conversation so far, then the env's answer to it
                last = cut.turns[-1]
                before = last.prompt_ids + last.action_ids
                heard = ["red", "green", "moon"][(cut.seed + 2) % 3]
                assert cut.next_prompt_ids[: len(before)] == before
                assert tokenizer.convert_tokens_to_ids(heard) in cut.next_prompt_ids[len(before) :]
    assert set(ends) == {"terminated", "max_turns"}, ends


def test_bootstrap_values_are_the_value_heads_on_each_cut_episodes_next_prompt(word_model_dir):
    """Batched and left-padded, the values equal the value head's on each prompt alone; an
    episode that terminated gets 0."""
    from rlalign.lm.value_head import PolicyWithValueHead

    model, tokenizer = load_model_and_tokenizer(word_model_dir)
    policy = PolicyWithValueHead(model)
    torch.nn.init.normal_(policy.value_head.weight, generator=torch.Generator().manual_seed(0))
    cfg = RLConfig(
        model=str(word_model_dir), env="x.py:make_env", prompts_per_iteration=4, num_generations=2,
        per_device_train_batch_size=8, max_completion_length=3, max_turns=2, algorithm="ppo",
        beta=0.0, temperature=2.0, history="full",
    )  # fmt: skip
    source = EpisodeRolloutSource(cfg, policy, None, tokenizer, make_env)
    seeds = list(range(8))
    uniforms = torch.rand((8, 2, 3), generator=torch.Generator().manual_seed(0))
    episodes, _ = play_episodes(model, tokenizer, source.envs, seeds, source.settings,
                                uniforms=uniforms)  # fmt: skip
    got = source._bootstrap_values(episodes)
    for i, episode in enumerate(episodes):
        if episode.next_prompt_ids is None:
            assert float(got[i]) == 0.0
            continue
        ids = torch.tensor([episode.next_prompt_ids])
        with torch.no_grad():
            alone = policy(input_ids=ids, attention_mask=torch.ones_like(ids)).state_values
        assert float(got[i]) == pytest.approx(float(alone[0, -1]), abs=1e-5)
    assert {e.end for e in episodes} == {"terminated", "max_turns"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ("rlalign/Drivin-v0", "did you mean 'rlalign/Driving-v0'"),
        (f"{BAD}/env_raises.py:make_env", "licence server is down"),
        (f"{BAD}/env_not_an_env.py:make_env", "no reset() or step()"),
        (f"{BAD}/env_array_observation.py:make_env", "observation"),
        (f"{BAD}/env_reset_raises.py:make_env", "raised ValueError: no level for seed"),
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


@pytest.mark.parametrize("truncation", [{"top_k": 3}, {"top_p": 0.5}])
def test_truncated_sampling_starts_the_ratio_at_one(word_model_dir, tmp_path, truncation):
    """The policy's own log-probs, not the truncated sampler's, are the ratio's old ones
    (tests/stages/test_rl.py has the single-turn case)."""
    out = tmp_path / "run"
    args = env_args(word_model_dir, out, max_steps=1, beta=0.04, bf16="false",
                    rollout_bf16="false", **truncation)  # fmt: skip
    assert main(args) == 0
    step = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert step["clip_fraction"] == 0.0
    assert step["approx_kl"] == pytest.approx(0.0, abs=1e-6)
    assert step["kl_ref"] == pytest.approx(0.0, abs=1e-6)


def test_a_bug_in_the_envs_step_is_one_line_naming_where(word_model_dir, tmp_path, capfd):
    out = tmp_path / "run"
    args = env_args(word_model_dir, out, env=f"{BAD}/env_step_raises.py:make_env", max_steps=1)
    assert main(args) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "step('" in last and "raised KeyError: 'missing'" in last, last
    assert last.endswith("env_step_raises.py:11"), last


def test_every_environment_made_is_closed(word_model_dir, tmp_path):
    log = tmp_path / "envs.log"
    args = env_args(word_model_dir, tmp_path / "run", env=f"{HERE / 'closing_env.py'}:make_env",
                    env_kwargs=json.dumps({"log": str(log)}), max_steps=2, eval_steps=1,
                    prompts_per_iteration=2, num_generations=2, per_device_train_batch_size=4)  # fmt: skip
    assert main(args) == 0
    lines = log.read_text().splitlines()
    # the probe, the rollout's 4 and the evaluation's 4 (eval_episodes)
    assert lines.count("open") == 9 and lines.count("close") == 9, lines


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
