"""Which defaults a run gets: an env's own entry, else the set for its kind of action space
(Box only), and the precedence class defaults < those < YAML < key=value."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium import spaces

from rlalign.cli import main
from rlalign.config import dump_config
from rlalign.control.envs import env_factory
from rlalign.control.evaluate import evaluate
from rlalign.control.ppo import train_ppo
from rlalign.control.runs import _check_same_config
from rlalign.control.train_config import (
    ACTION_SPACE_DEFAULTS,
    ENV_DEFAULTS,
    PPOConfig,
    ReinforceConfig,
    defaults_for,
    resolve_config,
)
from rlalign.errors import UserError

BOX_PPO = ACTION_SPACE_DEFAULTS["box"]["ppo"]


class _SwitchEnv(gym.Env):
    """Discrete or Box actions by a keyword, as e.g. LunarLander's ``continuous``."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)

    def __init__(self, continuous: bool = False) -> None:
        self.action_space = (
            spaces.Box(-1.0, 1.0, (1,), dtype=np.float32) if continuous else spaces.Discrete(2)
        )

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(2, dtype=np.float32), 0.0, True, False, {}


if "rlalign_test/Switch-v0" not in gym.registry:
    gym.register("rlalign_test/Switch-v0", entry_point=_SwitchEnv)


def _differs_from_class_defaults(values: dict) -> list[str]:
    base = PPOConfig().model_dump()
    return [k for k, v in values.items() if base[k] != v]


def test_the_box_set_changes_something_and_is_a_valid_config() -> None:
    assert _differs_from_class_defaults(BOX_PPO)  # else "applied" could not be told apart
    PPOConfig(**BOX_PPO)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "MountainCarContinuous-v0"])
def test_a_box_env_without_its_own_entry_gets_the_box_set(env_id: str) -> None:
    own = ENV_DEFAULTS.get(env_id, {}).get("ppo")
    cfg = resolve_config(env_id, "ppo")
    expected = PPOConfig(**{**BOX_PPO, **(own or {})})
    assert cfg == expected
    if own is None:
        assert defaults_for(env_id, "ppo") == BOX_PPO


@pytest.mark.parametrize("env_id", ["Acrobot-v1", "MountainCar-v0"])
def test_a_discrete_env_without_its_own_entry_gets_the_class_defaults(env_id: str) -> None:
    assert env_id not in ENV_DEFAULTS
    assert defaults_for(env_id, "ppo") == {}
    assert resolve_config(env_id, "ppo") == PPOConfig()


def test_an_own_entry_wins_over_the_box_set() -> None:
    # The continuous car (Box actions) keeps its own defaults, untouched by the Box set.
    own = ENV_DEFAULTS["rlalign/DrivingContinuous-v0"]["ppo"]
    assert resolve_config("rlalign/DrivingContinuous-v0", "ppo") == PPOConfig(**own)
    assert resolve_config("CartPole-v1", "ppo") == PPOConfig(**ENV_DEFAULTS["CartPole-v1"]["ppo"])


def test_there_is_no_box_set_for_reinforce() -> None:
    assert "reinforce" not in ACTION_SPACE_DEFAULTS["box"]
    assert resolve_config("Pendulum-v1", "reinforce") == ReinforceConfig()


def test_env_kwargs_that_make_the_actions_continuous_bring_the_box_set(tmp_path) -> None:
    env_id = "rlalign_test/Switch-v0"
    assert resolve_config(env_id, "ppo") == PPOConfig()
    on = resolve_config(env_id, "ppo", overrides=["env_kwargs.continuous=true"])
    assert on == PPOConfig(**{**BOX_PPO, "env_kwargs": {"continuous": True}})
    path = tmp_path / "c.yaml"
    path.write_text("env_kwargs:\n  continuous: true\n")
    assert resolve_config(env_id, "ppo", path) == on


def test_precedence_class_then_box_set_then_yaml_then_overrides(tmp_path) -> None:
    assert {"gamma", "n_envs"} <= set(BOX_PPO) and "max_grad_norm" not in BOX_PPO
    path = tmp_path / "c.yaml"
    path.write_text("gamma: 0.5\nseed: 5\n")
    cfg = resolve_config("Pendulum-v1", "ppo", path, ["seed=9"])
    assert cfg.gamma == 0.5 != BOX_PPO["gamma"]  # YAML beats the Box set
    assert cfg.seed == 9  # key=value beats YAML
    assert cfg.n_envs == BOX_PPO["n_envs"] != PPOConfig().n_envs  # the Box set beats the class
    assert cfg.max_grad_norm == PPOConfig().max_grad_norm  # what no layer sets


def test_control_train_applies_the_box_set(tmp_path) -> None:
    out = tmp_path / "pendulum"
    rc = main(
        ["control", "train", "--env", "Pendulum-v1", "--steps", "64", "--out", str(out),
         "--no-progress", "--no-report", "n_envs=2", "n_steps=32", "final_eval_episodes=1",
         "eval_episodes=1"]
    )  # fmt: skip
    assert rc == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    for k, v in BOX_PPO.items():
        if k not in ("n_envs", "n_steps", "total_steps", "final_eval_episodes", "eval_episodes"):
            assert saved[k] == v, k
    assert saved["n_envs"] == 2 and saved["total_steps"] == 64


# 40% of the Box set's 100k steps: seed 0 swings the pendulum up by then (about -150 on the
# episodes below, like the full runs in docs/how-to/any-gym-env.md); 30k steps were not enough.
LEARN_STEPS = 40_000


def _random_policy(space: spaces.Box, seed: int):
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(space.low, space.high, (len(obs), *space.shape)).astype(
        np.float32
    )


@pytest.mark.slow
def test_ppo_with_the_box_defaults_learns_pendulum() -> None:
    """Pendulum-v1's returns lie in about [-1900, 0]: a random policy gets about -1200, one
    that swings the pendulum up and holds it about -150, the class defaults after 100k steps
    about -900."""
    cfg = PPOConfig(
        **{**defaults_for("Pendulum-v1", "ppo"), "total_steps": LEARN_STEPS,
           "eval_every": LEARN_STEPS, "seed": 0}
    )  # fmt: skip
    res = train_ppo("Pendulum-v1", cfg, progress=False)
    make = env_factory("Pendulum-v1")
    learned = np.mean(evaluate(make, res.agent(), 20, seed=777).returns)
    random = np.mean(evaluate(make, _random_policy(make().action_space, 0), 20, seed=777).returns)
    assert random < -900.0
    assert learned > -500.0 and learned > random + 600.0, (learned, random)


def test_an_old_key_warns_once_on_an_env_without_its_own_entry(tmp_path, capsys) -> None:
    argv = ["control", "train", "--env", "Pendulum-v1", "--steps", "32", "--out", str(tmp_path),
            "--no-progress", "--no-report", "n_envs=1", "n_steps=32", "minibatch_size=32",
            "final_eval_episodes=1", "eval_episodes=1", "n_epochs=1"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "rlalign control: warning: override 'n_epochs=1': config key 'n_epochs' is now "
        "'num_iterations' (the old name is accepted until the next release)"
    ]


def test_resume_refuses_a_changed_key_and_takes_a_missing_one_as_its_class_default(
    tmp_path,
) -> None:
    """A run's config.yaml from before a key existed resumes when the key is at its class
    default now (the run behaved so); any other difference is refused, naming the key."""
    cfg = PPOConfig(n_envs=4, gamma=0.95)  # the Box options at their class defaults
    path = tmp_path / "config.yaml"
    dump_config(cfg, path)
    _check_same_config(cfg, path)
    _check_same_config(cfg.model_copy(update={"total_steps": 10**6}), path)  # may grow
    with pytest.raises(UserError, match=r"config\.yaml: --resume with a different config \(gamma"):
        _check_same_config(cfg.model_copy(update={"gamma": 0.5}), path)
    old = yaml.safe_load(path.read_text())
    for key in ("use_sde", "sde_sample_freq", "log_std_init", "rescale_actions"):
        del old[key]
    path.write_text(yaml.safe_dump(old))
    _check_same_config(cfg, path)
    with pytest.raises(UserError, match=r"different config \(use_sde; e\.g\. use_sde=False in"):
        _check_same_config(cfg.model_copy(update={"use_sde": True}), path)


def test_box_options_on_a_discrete_env_are_one_line_errors(tmp_path, capsys) -> None:
    rc = main(["control", "train", "--env", "CartPole-v1", "--steps", "64", "--out",
               str(tmp_path / "x"), "--no-progress", "use_sde=true"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "use_sde=true: for Box (continuous) actions only" in err[0] and "Discrete(2)" in err[0]
