"""Typed configs of the control agents and good defaults per environment.

Precedence (lowest first): the class defaults, the env's defaults (its own entry in
:data:`ENV_DEFAULTS`, or else the set for its kind of action space in
:data:`ACTION_SPACE_DEFAULTS`), a YAML file, ``key=value`` overrides on the command line
(``rlalign control train ... learning_rate=1e-3``). :func:`resolve_config` applies all four.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from gymnasium import spaces
from pydantic import Field

from rlalign.config import Config, Seed, load_config
from rlalign.control.envs import env_factory


class CommonConfig(Config):
    """Settings shared by both agents."""

    seed: Seed = Field(0, description="seed of the networks, the envs and the sampling")
    total_steps: int = Field(100_000, ge=1, description="environment steps to train for")
    n_envs: int = Field(8, ge=1, description="parallel environments (gymnasium.vector)")
    gamma: float = Field(0.99, ge=0.0, le=1.0, description="discount of the return G_t")
    learning_rate: float = Field(3e-4, gt=0.0, description="Adam learning rate")
    anneal_lr: bool = Field(True, description="decay the learning rate linearly to 0")
    max_grad_norm: float = Field(0.5, gt=0.0, description="gradient clipping norm")
    vf_coef: float = Field(0.5, ge=0.0, description="weight of the value loss")
    ent_coef: float = Field(0.0, ge=0.0, description="weight of the entropy bonus")
    hidden_sizes: list[int] = Field(
        default_factory=lambda: [64, 64], description="widths of the MLP's hidden layers"
    )
    activation: Literal["tanh", "relu"] = Field("tanh", description="the MLP's nonlinearity")
    normalize_obs: bool = Field(
        True, description="standardise observations with running mean and variance"
    )
    log_std_init: float = Field(
        0.0, description="Box actions: initial log standard deviation of the Gaussian policy"
    )
    rescale_actions: bool = Field(
        False, description="Box actions: the policy acts in [-1, 1], mapped to the space's bounds"
    )
    eval_every: int = Field(10_000, ge=1, description="environment steps between evaluations")
    eval_episodes: int = Field(10, ge=1, description="episodes per evaluation during training")
    final_eval_episodes: int = Field(
        50, ge=1, description="episodes of the final evaluation (result.json)"
    )
    stop_at_threshold: bool = Field(
        False, description="stop once an evaluation reaches the env's reward_threshold"
    )
    keep_best: bool = Field(
        False, description="end with the policy of the best evaluation during training"
    )
    torch_threads: int = Field(1, ge=1, description="small MLPs are fastest on one thread")
    save_every: int | None = Field(
        100_000, ge=1, description="environment steps between checkpoints (None: only the last)"
    )
    keep_checkpoints: int | None = Field(2, ge=1, description="newest checkpoints kept")
    env_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of gymnasium.make (e.g. road_length)"
    )


class PPOConfig(CommonConfig):
    """Proximal policy optimisation (clipped surrogate, GAE, value head).

    The keys are the language model's RL keys where the knob is the same (``epsilon``,
    ``cliprange_value``, ``lam``, ``num_iterations``, ``vf_coef``, ``gamma``).
    """

    renamed_keys: ClassVar[dict[str, str]] = {
        "clip_eps": "epsilon",
        "clip_value": "cliprange_value",
        "gae_lambda": "lam",
        "n_epochs": "num_iterations",
    }

    n_steps: int = Field(128, ge=1, description="rollout length per env per update")
    num_iterations: int = Field(10, ge=1, description="passes over each rollout (SB3: n_epochs)")
    minibatch_size: int = Field(256, ge=1, description="transitions per gradient step")
    lam: float = Field(0.95, ge=0.0, le=1.0, description="GAE lambda (SB3: gae_lambda)")
    epsilon: float = Field(
        0.2, gt=0.0, lt=1.0, description="clip range of the probability ratio (SB3: clip_range)"
    )
    cliprange_value: float | None = Field(
        None, gt=0.0, description="clip range of the value around the old value; None: off"
    )
    target_kl: float | None = Field(
        None, gt=0.0, description="stop a rollout's epochs once the approximate KL exceeds it"
    )
    normalize_reward: bool = Field(
        True, description="scale rewards by the running std of the discounted return"
    )
    use_sde: bool = Field(
        False, description="Box actions: generalised state-dependent exploration (gSDE)"
    )
    sde_sample_freq: int = Field(
        -1, ge=-1, description="gSDE: steps between new noise matrices; -1: once per rollout"
    )


class ReinforceConfig(CommonConfig):
    """REINFORCE with a learned value baseline, on whole episodes."""

    learning_rate: float = Field(3e-3, gt=0.0)
    whiten_advantages: bool = Field(True, description="standardise the advantages of each batch")


ALGOS = {"ppo": PPOConfig, "reinforce": ReinforceConfig}

# Defaults by the kind of action space, for an env without its own entry in ENV_DEFAULTS
# (keyed by kind, then algo): what an env nobody tuned for gets. Discrete envs have no set.
ACTION_SPACE_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "box": {
        # Chosen over 3 training seeds on Pendulum-v1 and MountainCarContinuous-v0, 100k steps
        # each (docs/how-to/any-gym-env.md). Long rollouts (4 envs x 1024 steps) and 10 epochs
        # of small minibatches at 1e-3, as rl-baselines3-zoo's PPO does on Pendulum; the class
        # defaults' 8 x 128 steps at 3e-4 had not learned it. gamma 0.99 was still far from it
        # after 100k steps (0.95 and 0.9 did as well as each other); scaling the rewards left 2
        # of 3 seeds swinging at about -580. gSDE, new noise every 4 steps: the state-
        # independent Gaussian learned to stand still on MountainCarContinuous on 2 of 3 seeds,
        # gSDE reached the flag on all 3, and swung Pendulum up in 30k steps instead of 50k.
        "ppo": dict(
            total_steps=100_000,
            n_envs=4,
            n_steps=1024,
            num_iterations=10,
            minibatch_size=64,
            learning_rate=1e-3,
            gamma=0.95,
            lam=0.95,
            use_sde=True,
            sde_sample_freq=4,
            normalize_reward=False,
        ),
    },
}


# Defaults that train well with no flags (keyed by env id, then algo).
ENV_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "CartPole-v1": {
        # Short rollouts, few big-step epochs: solved in ~4k-16k steps over 12 seeds.
        "ppo": dict(
            total_steps=100_000,
            n_envs=16,
            n_steps=16,
            num_iterations=4,
            minibatch_size=256,
            learning_rate=3e-3,
            gamma=0.98,
            lam=0.8,
            eval_every=4096,
            stop_at_threshold=True,
        ),
        "reinforce": dict(total_steps=100_000, n_envs=8, learning_rate=2e-3, gamma=0.99),
    },
    "rlalign/Driving-v0": {
        # Chosen over 3 training seeds each (README): gamma 0.95 (a 10 s horizon) learned faster
        # than 0.99; a 64x64 net and 5 epochs cost 60% of the CPU time of 128x128 and 10
        # epochs, so 2M steps fit in about 5 minutes of one core, which did better than 1.5M
        # steps with 10 epochs.
        "ppo": dict(
            total_steps=2_000_000,
            n_envs=16,
            n_steps=128,
            num_iterations=5,
            minibatch_size=512,
            learning_rate=1e-3,
            gamma=0.95,
            lam=0.95,
            ent_coef=0.003,
            hidden_sizes=[64, 64],
            eval_every=100_000,
            eval_episodes=50,
            final_eval_episodes=200,
            keep_best=True,
        ),
    },
    "rlalign/DrivingContinuous-v0": {
        "ppo": dict(
            total_steps=500_000,
            n_envs=16,
            n_steps=128,
            minibatch_size=512,
            learning_rate=1e-3,
            ent_coef=0.01,
            hidden_sizes=[128, 128],
            eval_every=50_000,
            eval_episodes=50,
            final_eval_episodes=200,
            keep_best=True,
        ),
    },
}


def action_kind(space: spaces.Space) -> str | None:
    """``"discrete"``, ``"box"`` (1-D), or None for a space the agents do not handle."""
    if isinstance(space, spaces.Discrete):
        return "discrete"
    if isinstance(space, spaces.Box) and len(space.shape) == 1:
        return "box"
    return None


def defaults_for(
    env_id: str, algo: str, env_kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The defaults of ``algo`` on ``env_id``: its own entry in :data:`ENV_DEFAULTS` if it has one
    for ``algo``, or else the set for its action space (built with ``env_kwargs`` to find it)."""
    own = ENV_DEFAULTS.get(env_id, {})
    if algo in own:
        return copy.deepcopy(own[algo])
    env = env_factory(env_id, env_kwargs)()
    try:
        kind = action_kind(env.action_space)
    finally:
        env.close()
    return copy.deepcopy(ACTION_SPACE_DEFAULTS.get(kind or "", {}).get(algo, {}))


def resolve_config(
    env_id: str,
    algo: str,
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> PPOConfig | ReinforceConfig:
    """The config of a run: class defaults < :func:`defaults_for` < YAML ``path`` < overrides.

    For an env without its own entry the YAML file and overrides are read once without the
    env's defaults first, for their ``env_kwargs``: those can change the env's action space, and
    so its defaults. (That first reading keeps quiet: the second warns of old key names.)
    """
    cls = ALGOS[algo]
    env_kwargs: dict[str, Any] | None = None
    if algo not in ENV_DEFAULTS.get(env_id, {}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env_kwargs = load_config(cls, path, overrides).env_kwargs
    return load_config(cls, path, overrides, defaults_for(env_id, algo, env_kwargs))
