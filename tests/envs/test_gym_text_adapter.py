"""GymTextEnv: a Discrete Gymnasium env spoken to in words (parsing, aliases, the fallback)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rlalign.envs import GymTextEnv, TextEnv
from rlalign.errors import UserError


class Corridor(gym.Env):
    """A hand-built env: position 0..4, actions stay/forward/back; the reward names the action
    played (10 * action + position), so a test can read which action the adapter chose."""

    def __init__(self) -> None:
        self.action_space = gym.spaces.Discrete(3)
        self.observation_space = gym.spaces.Box(0.0, 4.0, shape=(1,), dtype=np.float32)
        self.pos = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = int(self.np_random.integers(0, 2))
        return np.array([self.pos], dtype=np.float32), {"start": self.pos}

    def step(self, action):
        self.pos = min(max(self.pos + (0, 1, -1)[int(action)], 0), 4)
        obs = np.array([self.pos], dtype=np.float32)
        return obs, 10.0 * int(action) + self.pos, self.pos == 4, False, {"pos": self.pos}


def describe(obs: np.ndarray) -> str:
    return f"you are at {int(obs[0])}"


def make(**kwargs) -> GymTextEnv:
    options = {"fallback_action": "stay", "invalid_penalty": -3.0, "aliases": {"go": "forward"}}
    return GymTextEnv(Corridor(), describe, ["stay", "forward", "back"], **{**options, **kwargs})


def test_the_fake_env_is_a_valid_gymnasium_env():
    check_env(Corridor(), skip_render_check=True)


def test_it_is_a_text_env_with_the_action_words():
    env = make()
    assert isinstance(env, TextEnv)
    assert env.actions == ("stay", "forward", "back")
    text, info = env.reset(seed=0)
    assert text == f"you are at {info['start']}"
    assert env.last_obs is not None and int(env.last_obs[0]) == info["start"]


@pytest.mark.parametrize(
    ("reply", "index"),
    [
        ("forward", 1),
        ("  Forward.  ", 1),
        ("BACK!", 2),
        ("\n\nback?!\nbecause the wall is ahead", 2),  # only the first non-blank line counts
        ("go", 1),  # an alias
        ("Go.", 1),
        ("forward please", None),  # exact match only: no word picked out of a sentence
        ("forwards", None),
        ("", None),
        ("stay back", None),
    ],
)
def test_a_reply_names_an_action_by_its_first_line(reply, index):
    assert make().action_index(reply) == index


def test_a_valid_reply_plays_its_action_without_penalty():
    env = make()
    _, info = env.reset(seed=0)
    text, reward, terminated, truncated, info = env.step("Forward.")
    pos = info["pos"]
    assert reward == 10.0 * 1 + pos  # the env's reward unchanged: forward was played
    assert info["invalid_action"] is False
    assert text == f"you are at {pos}"
    assert int(env.last_obs[0]) == pos
    assert (terminated, truncated) == (False, False)


def test_an_invalid_reply_plays_the_fallback_and_is_penalised():
    env, reference = make(), Corridor()
    _, info = env.reset(seed=3)
    reference.reset(seed=3)
    _, reward, _, _, info = env.step("I would rather fly")
    _, expected, _, _, _ = reference.step(0)  # the fallback "stay" on the same episode
    assert reward == expected - 3.0
    assert info["invalid_action"] is True
    assert info["pos"] == reference.pos


def test_the_episode_ends_when_the_env_ends_it():
    env = make()
    _, info = env.reset(seed=0)
    flags = [env.step("forward")[2] for _ in range(4 - info["start"])]
    assert flags == [False] * (len(flags) - 1) + [True]  # at position 4, and not before


def test_describe_must_return_text():
    env = GymTextEnv(
        Corridor(), lambda obs: obs, ["stay", "forward", "back"], fallback_action="stay"
    )
    with pytest.raises(UserError, match=r"describe function '.*lambda.*' returned ndarray") as e:
        env.reset(seed=0)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action_words": ["stay", "forward"]}, "2 action words"),
        ({"action_words": ["stay", "Stay", "back"]}, "appears twice"),
        ({"action_words": ["stay", "forward.", "back"]}, "could never match"),
        ({"fallback_action": "fly"}, "fallback_action 'fly' is not an action word"),
        ({"aliases": {"go": "fly"}}, "alias 'go' names 'fly'"),
    ],
)
def test_a_bad_vocabulary_is_one_line(kwargs, message):
    options = {"action_words": ["stay", "forward", "back"], "fallback_action": "stay", **kwargs}
    words = options.pop("action_words")
    with pytest.raises(UserError, match=message):
        GymTextEnv(Corridor(), describe, words, **options)


def test_a_continuous_env_is_refused():
    with pytest.raises(UserError, match="needs a Discrete action space"):
        GymTextEnv(gym.make("Pendulum-v1"), describe, ["a"], fallback_action="a")
