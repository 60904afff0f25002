"""Expert transcripts: SFT files that load, and that replay to the same episodes."""

from __future__ import annotations

import json

import pytest

from rlalign.cli import main
from rlalign.control.baselines import make_baseline
from rlalign.control.driving_text import DRIVING_WORDS, make_driving_text_env
from rlalign.control.transcripts import play_episode, write_transcripts
from rlalign.data.formats import load_sft
from rlalign.errors import UserError


def replay(episodes: list[list[tuple[str, str]]], seed: int) -> list[float]:
    """Each episode's return when its action words are played again in a fresh env, checking
    that the env shows the recorded observation before each action and ends after the last."""
    env = make_driving_text_env()
    returns = []
    for k, turns in enumerate(episodes):
        text, _ = env.reset(seed=seed + k)
        total, done = 0.0, False
        for i, (observation, word) in enumerate(turns):
            assert not done, f"episode {k} ended before its turn {i}"
            assert text == observation
            text, reward, terminated, truncated, info = env.step(word)
            assert info["invalid_action"] is False
            total += reward
            done = terminated or truncated
        assert done, f"episode {k} did not end after its last recorded turn"
        returns.append(total)
    return returns


def pairs(conversation: list[dict[str, str]]) -> list[tuple[str, str]]:
    roles = [t["role"] for t in conversation]
    assert roles == ["user", "assistant"] * (len(roles) // 2)
    return [
        (u["content"], a["content"])
        for u, a in zip(conversation[::2], conversation[1::2], strict=True)
    ]


def test_full_history_is_one_conversation_per_episode_that_replays(tmp_path):
    out = tmp_path / "t.jsonl"
    summary = write_transcripts(out, episodes=3, seed=40, history="full")
    conversations = load_sft(out)
    assert len(conversations) == 3 == summary["episodes"]
    episodes = [pairs(c) for c in conversations]
    assert sum(map(len, episodes)) == summary["steps"]
    assert replay(episodes, 40) == pytest.approx(summary["returns"], abs=1e-9)
    assert summary["mean_return"] == pytest.approx(sum(summary["returns"]) / 3)


def test_last_history_is_one_line_per_step_in_episode_order(tmp_path):
    out = tmp_path / "t.jsonl"
    full = write_transcripts(tmp_path / "full.jsonl", episodes=2, seed=7, history="full")
    summary = write_transcripts(out, episodes=2, seed=7)
    lines = [pairs(c) for c in load_sft(out)]
    assert all(len(line) == 1 for line in lines)
    assert len(lines) == summary["steps"] == full["steps"]
    steps = [line[0] for line in lines]
    episodes = [pairs(c) for c in load_sft(tmp_path / "full.jsonl")]
    assert steps == [turn for episode in episodes for turn in episode]
    assert summary["returns"] == full["returns"]


def test_another_policy_is_seeded(tmp_path):
    a = write_transcripts(tmp_path / "a.jsonl", policy="random", episodes=2, seed=3)
    b = write_transcripts(tmp_path / "b.jsonl", policy="random", episodes=2, seed=3)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert a["returns"] == b["returns"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"policy": "rule"}, "unknown policy 'rule'"),
        ({"episodes": 0}, "episodes must be >= 1"),
        ({"env_kwargs": {"max_step": 3}}, "unknown driving setting"),
    ],
)
def test_bad_settings_are_one_line_and_write_nothing(tmp_path, kwargs, match):
    out = tmp_path / "t.jsonl"
    with pytest.raises(UserError, match=match):
        write_transcripts(out, **{"episodes": 1, "seed": 0, **kwargs})
    assert not out.exists()


def test_the_command_writes_the_file_and_refuses_a_bad_policy(tmp_path, capsys):
    out = tmp_path / "car.jsonl"
    args = ["control", "transcripts", "--episodes", "2", "--seed", "5", "--out", str(out)]
    assert main([*args, "--history", "full"]) == 0
    assert "2 episodes" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == 2
    assert json.loads(out.read_text().splitlines()[0])["messages"][1]["role"] == "assistant"
    assert main([*args, "--policy", "rule"]) == 2
    err = capsys.readouterr().err
    assert "unknown policy 'rule'" in err and len(err.strip().splitlines()) == 1


class SpyEnv:
    """The text env, recording the observation array and the word the car is given each step."""

    def __init__(self, env):
        self.env, self.steps = env, []

    def __getattr__(self, name):
        return getattr(self.env, name)

    def step(self, word):
        self.steps.append((self.env.last_obs.copy(), word))
        return self.env.step(word)


def test_lapses_keep_the_car_going_but_record_the_drivers_own_words():
    """Each recorded word is the rule-based driver's action on the state the car is in; the car
    plays that word or, during a lapse, ``keep``; some steps lapse, and none without lapses."""
    env = SpyEnv(make_driving_text_env())
    driver = make_baseline("rule_based", env.env.env.unwrapped.cfg)
    lapsed = {0.0: 0, 0.2: 0}
    for lapse in lapsed:
        for seed in (11, 12):
            env.steps.clear()
            turns, _, _ = play_episode(env, driver, seed, lapse=lapse)
            assert len(turns) == len(env.steps)
            for (_, word), (obs, played) in zip(turns, env.steps, strict=True):
                assert word == DRIVING_WORDS[int(driver(obs[None])[0])]
                assert played in (word, "keep")
                lapsed[lapse] += played != word
    assert lapsed[0.0] == 0 and lapsed[0.2] > 0


def test_a_lapse_outside_0_1_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"lapse must be in \[0, 1\)"):
        write_transcripts(tmp_path / "t.jsonl", episodes=1, seed=0, lapse=1.0)


def test_the_command_passes_the_lapse_on_and_refuses_a_bad_one(tmp_path, capsys):
    args = ["control", "transcripts", "--episodes", "2", "--seed", "5"]
    assert main([*args, "--out", str(tmp_path / "a.jsonl")]) == 0
    assert main([*args, "--out", str(tmp_path / "b.jsonl"), "--lapse", "0.5"]) == 0
    assert (tmp_path / "a.jsonl").read_text() != (tmp_path / "b.jsonl").read_text()
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "c.jsonl"), "--lapse", "2"]) == 2
    err = capsys.readouterr().err
    assert "lapse must be in [0, 1)" in err and len(err.strip().splitlines()) == 1


def test_a_driver_drives_and_the_expert_labels_every_state_it_reaches(tmp_path):
    """DAgger's data, against a hand loop: constant_speed drives each seeded episode alone,
    and each of its states is written with rule_based's word for it."""
    env = make_driving_text_env(max_steps=40)
    cfg = env.env.unwrapped.cfg
    driver, expert = make_baseline("constant_speed", cfg, 0), make_baseline("rule_based", cfg, 0)
    want = []
    for k in range(3):
        text, _ = env.reset(seed=50 + k)
        done = False
        while not done:
            obs = env.last_obs[None]
            want.append((text, DRIVING_WORDS[int(expert(obs)[0])]))
            text, _, terminated, truncated, _ = env.step(DRIVING_WORDS[int(driver(obs)[0])])
            done = terminated or truncated
    out = tmp_path / "dagger.jsonl"
    made = write_transcripts(out, episodes=3, seed=50, env_kwargs={"max_steps": 40},
                             driver=driver)  # fmt: skip
    got = [pair for conversation in load_sft(out) for pair in pairs(conversation)]
    assert got == want and made["driven"] is True
    assert any(w != DRIVING_WORDS[0] for _, w in got)  # the labels are the expert's, not "keep"
    with pytest.raises(UserError, match="lapse applies to the policy only"):
        write_transcripts(out, episodes=1, seed=0, driver=driver, lapse=0.1)


def test_lane_changes_are_repeated_in_place_and_nothing_else_changes(tmp_path):
    once = write_transcripts(tmp_path / "once.jsonl", episodes=3, seed=5)
    more = write_transcripts(tmp_path / "more.jsonl", episodes=3, seed=5, lane_change_repeats=3)
    steps = [pairs(c)[0] for c in load_sft(tmp_path / "once.jsonl")]
    want = [s for s in steps for _ in range(3 if s[1] in ("left", "right") else 1)]
    assert [pairs(c)[0] for c in load_sft(tmp_path / "more.jsonl")] == want
    changes = sum(s[1] in ("left", "right") for s in steps)
    assert changes > 0  # these seeds overtake
    assert more["lines"] == once["lines"] + 2 * changes and more["steps"] == once["steps"]
    assert more["returns"] == once["returns"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lane_change_repeats": 0}, "lane_change_repeats must be >= 1"),
        ({"lane_change_repeats": 2, "history": "full"}, "needs history='last'"),
    ],
)
def test_bad_lane_change_repeats_are_refused(tmp_path, kwargs, match):
    out = tmp_path / "t.jsonl"
    with pytest.raises(UserError, match=match):
        write_transcripts(out, episodes=1, seed=0, **kwargs)
    assert not out.exists()


def test_the_command_passes_the_lane_change_repeats_on(tmp_path, capsys):
    out = tmp_path / "car.jsonl"
    args = ["control", "transcripts", "--episodes", "3", "--seed", "5", "--out", str(out)]
    assert main([*args, "--lane-change-repeats", "3"]) == 0
    words = [json.loads(line)["messages"][1]["content"] for line in out.read_text().splitlines()]
    assert words.count("left") + words.count("right") > 0
    assert main([*args]) == 0
    once = [json.loads(line)["messages"][1]["content"] for line in out.read_text().splitlines()]
    assert words.count("left") == 3 * once.count("left")
    assert words.count("right") == 3 * once.count("right")
    assert main([*args, "--lane-change-repeats", "0"]) == 2
    assert "lane_change_repeats must be >= 1" in capsys.readouterr().err
