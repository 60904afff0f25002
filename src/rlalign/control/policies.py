"""A saved policy, a language-model driver or a baseline driver, ready to act on its
environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlalign.control.baselines import BASELINES, make_baseline
from rlalign.control.envs import check_env_id, env_factory
from rlalign.control.evaluate import BatchPolicy
from rlalign.control.lm_driver import lm_model_dir, load_lm_driver
from rlalign.control.policy_io import Agent, load_policy
from rlalign.errors import UserError


def resolve_policy(
    policy_dir: str | Path | None,
    env_id: str | None,
    baseline: str | None,
    seed: int = 0,
) -> tuple[str, dict[str, Any], BatchPolicy, str]:
    """``(env_id, env_kwargs, policy, label)`` for a saved policy directory, a language-model
    run (or model) directory -- an :class:`~rlalign.control.lm_driver.LMDriver` of the car --
    or a baseline.

    A policy used on an env other than its own is a ``UserError``.
    """
    if policy_dir is not None and lm_model_dir(policy_dir):
        return _lm_policy(policy_dir, env_id, baseline, seed)
    agent: Agent | None = None
    env_kwargs: dict[str, Any] = {}
    if policy_dir is not None:
        agent = load_policy(policy_dir, seed=seed)
        own = agent.env_id
        env_kwargs = dict(agent.meta.get("env_kwargs") or {})
        if env_id is not None and env_id != own:
            raise UserError(
                f"{policy_dir}: this policy was trained on {own!r}, not {env_id!r}; drop --env "
                f"or pass a policy trained on {env_id!r}"
            )
        env_id = own
    if env_id is None:
        raise UserError("give a policy directory or --env (to run a baseline without a policy)")
    check_env_id(env_id)
    make_env = env_factory(env_id, env_kwargs)
    probe = make_env()
    if agent is not None:
        _check_spaces(policy_dir, agent, probe)
    if baseline is not None and baseline != "learned":
        if not hasattr(probe.unwrapped, "obs_fields"):
            raise UserError(
                f"baseline {baseline!r} drives the rlalign driving envs only, not {env_id!r}"
            )
        if baseline not in BASELINES:
            raise UserError(
                f"unknown --policy {baseline!r}; choose learned, {', '.join(BASELINES)}"
            )
        policy: BatchPolicy = make_baseline(baseline, probe.unwrapped.cfg, seed)
        label = baseline
    elif agent is not None:
        policy, label = agent, f"{agent.meta.get('algo', 'learned')}"
    else:
        raise UserError("--policy learned needs a policy directory")
    probe.close()
    return env_id, env_kwargs, policy, label


def _lm_policy(
    policy_dir: str | Path, env_id: str | None, baseline: str | None, seed: int
) -> tuple[str, dict[str, Any], BatchPolicy, str]:
    """The language model of ``policy_dir``, or a baseline on the car it was trained in."""
    own = "rlalign/Driving-v0"
    if env_id is not None and env_id != own:
        raise UserError(
            f"{policy_dir}: a language model drives {own!r} (in words), not {env_id!r}; drop --env"
        )
    driver = load_lm_driver(policy_dir)
    if baseline in (None, "learned"):
        return own, dict(driver.gym_kwargs), driver, "lm"
    driver.close()
    if baseline not in BASELINES:
        raise UserError(f"unknown --policy {baseline!r}; choose learned, {', '.join(BASELINES)}")
    return own, dict(driver.gym_kwargs), make_baseline(baseline, driver.cfg, seed), baseline


def _check_spaces(policy_dir: Any, agent: Agent, env: Any) -> None:
    spec = agent.net.spec
    obs_shape = tuple(env.observation_space.shape or ())
    if obs_shape != (spec.obs_dim,):
        raise UserError(
            f"{policy_dir}: policy expects observations of shape ({spec.obs_dim},), "
            f"the env gives {obs_shape}"
        )
    n = getattr(env.action_space, "n", None)
    dims = tuple(getattr(env.action_space, "shape", ()) or ())
    if (spec.kind == "discrete" and n != spec.n_actions) or (
        spec.kind == "box" and dims != (spec.n_actions,)
    ):
        raise UserError(f"{policy_dir}: policy actions do not match the env's {env.action_space}")
