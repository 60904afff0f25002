"""make_text_env and checked(): built-in ids, a user's make_env, and every bad input as one
line."""

from __future__ import annotations

import math
import textwrap

import pytest

from rlalign.envs import BUILTIN_TEXT_ENVS, TextEnv, checked, make_text_env
from rlalign.errors import UserError


class Echo:
    """A minimal text env: the observation repeats the action; the reward is its length."""

    actions = None

    def __init__(self, reward=None, obs=None, flag=False, info=None):
        self._reward, self._obs, self._flag, self._info = reward, obs, flag, info

    def reset(self, *, seed=None):
        return ("start" if self._obs is None else self._obs), {"seed": seed}

    def step(self, action):
        reward = float(len(action)) if self._reward is None else self._reward
        obs = action if self._obs is None else self._obs
        return obs, reward, self._flag, False, ({} if self._info is None else self._info)

    def close(self):
        pass


def one_line_error(call, match: str) -> str:
    with pytest.raises(UserError, match=match) as e:
        call()
    message = str(e.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture
def env_file(tmp_path):
    path = tmp_path / "my_envs.py"
    path.write_text(
        textwrap.dedent(
            """
            import numpy as np

            class Echo:
                actions = ("a", "b")
                def __init__(self, prefix=""):
                    self.prefix = prefix
                def reset(self, *, seed=None):
                    return self.prefix + "start", {}
                def step(self, action):
                    return self.prefix + action, 1.0, action == "b", False, {"n": 1}
                def close(self):
                    pass

            def make_env(prefix=""):
                return Echo(prefix)

            def make_raising(level=1):
                raise RuntimeError("the level file\\nis missing")

            def make_array():
                return np.zeros(3)

            def make_gym_like():
                class Env:
                    def reset(self, *, seed=None):
                        return np.zeros(2), {}
                    def step(self, action):
                        return np.zeros(2), 0.0, False, False, {}
                return Env()

            def make_nan_reward():
                env = Echo()
                env.step = lambda action: ("x", float("nan"), False, False, {})
                return env
            """
        )
    )
    return path


def test_a_user_file_make_env_is_loaded_called_with_its_kwargs_and_checked(env_file):
    env = make_text_env(f"{env_file}:make_env", {"prefix": "> "})
    assert isinstance(env, TextEnv)
    assert env.actions == ("a", "b")
    assert env.reset(seed=1) == ("> start", {})
    assert env.step("b") == ("> b", 1.0, True, False, {"n": 1})
    assert env.prefix == "> "  # the wrapped env's own attributes stay reachable


def test_a_module_spec_is_loaded(monkeypatch, env_file):
    monkeypatch.syspath_prepend(str(env_file.parent))
    assert make_text_env("my_envs:make_env").reset(seed=0)[0] == "start"


def test_the_builtin_ids_resolve():
    for spec, target in BUILTIN_TEXT_ENVS.items():
        module, _, name = target.partition(":")
        assert module.startswith("rlalign.") and name, spec
    env = make_text_env("rlalign/Driving-v0", {"max_steps": 3})
    text, _ = env.reset(seed=0)
    assert isinstance(text, str) and text.startswith("speed ")
    assert env.env.unwrapped.cfg.max_steps == 3  # env_kwargs reached the world


def test_an_unknown_id_suggests_the_closest_builtin():
    message = one_line_error(lambda: make_text_env("rlalign/Drivng-v0"), "no such text env")
    assert "did you mean 'rlalign/Driving-v0'?" in message


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("make_raising", {}, r"make_env failed: RuntimeError: the level file is missing"),
        ("make_array", {}, r"make_env returned ndarray array\(\[0., 0., 0.\]\), which has no "),
        ("make_env", {"prefx": "x"}, r"env_kwargs do not fit make_env\(prefix\)"),
        ("make_envv", {}, r"has no function 'make_envv', did you mean 'make_env'\?"),
    ],
)
def test_a_bad_make_env_is_one_line_naming_the_spec(env_file, name, kwargs, match):
    spec = f"{env_file}:{name}"
    message = one_line_error(lambda: make_text_env(spec, kwargs), match)
    assert message.startswith(f"environment '{spec}': ")


def test_a_bad_world_setting_of_the_car_is_one_line():
    one_line_error(
        lambda: make_text_env("rlalign/Driving-v0", {"road_lenght": 5.0}),
        r"environment 'rlalign/Driving-v0': make_env failed: TypeError: unknown driving setting",
    )


def test_a_gym_like_env_with_array_observations_is_caught_at_reset(env_file):
    spec = f"{env_file}:make_gym_like"
    env = make_text_env(spec)
    one_line_error(
        lambda: env.reset(seed=0),
        rf"environment '{spec}': reset\(seed=0\) returned observation array\(.*\) \(ndarray\); "
        "it must be a str",
    )


def test_a_non_finite_reward_is_caught_at_step(env_file):
    env = make_text_env(f"{env_file}:make_nan_reward")
    env.reset(seed=0)
    one_line_error(lambda: env.step("a"), r"step\('a'\) returned reward nan \(float\)")


@pytest.mark.parametrize(
    ("env", "match"),
    [
        (Echo(obs=3), r"reset\(seed=None\) returned observation 3 \(int\)"),
        (Echo(reward=math.inf), r"returned reward inf \(float\); it must be a finite real"),
        (Echo(reward="1.0"), r"returned reward '1.0' \(str\)"),
        (Echo(reward=True), r"returned reward True \(bool\)"),
        (Echo(flag=1), r"returned terminated 1 \(int\); it must be a bool"),
        (Echo(info=[]), r"returned info \[\] \(list\); it must be a dict"),
    ],
)
def test_checked_names_the_env_the_call_and_the_value(env, match):
    wrapped = checked(env, spec="echo")

    def run():
        wrapped.reset()
        wrapped.step("go")

    message = one_line_error(run, match)
    assert message.startswith("environment 'echo': ")


def test_checked_passes_good_results_through():
    wrapped = checked(Echo())
    assert wrapped.reset(seed=4) == ("start", {"seed": 4})
    obs, reward, terminated, truncated, info = wrapped.step("abc")
    assert (obs, reward, terminated, truncated, info) == ("abc", 3.0, False, False, {})
    assert type(reward) is float
    assert checked(wrapped) is wrapped
