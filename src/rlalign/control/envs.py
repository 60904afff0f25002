"""Making Gymnasium envs by id, with clear errors for ids that do not exist."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from rlalign.control.registration import register_envs
from rlalign.errors import UserError

DRIVING_IDS = ("rlalign/Driving-v0", "rlalign/DrivingContinuous-v0")


def check_env_id(env_id: str) -> gym.envs.registration.EnvSpec:
    """The spec of ``env_id``; an unknown id is a ``UserError`` with the closest registered ids."""
    register_envs()  # idempotent: the ids exist even if gymnasium's registry was reset
    if env_id in gym.registry:
        return gym.registry[env_id]
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UserError(
        f"unknown environment id {env_id!r}{hint} (see gymnasium.pprint_registry() for all ids)"
    )


def is_driving(env_id: str) -> bool:
    return env_id in DRIVING_IDS


def env_factory(
    env_id: str, env_kwargs: dict[str, Any] | None = None, render_mode: str | None = None
) -> Callable[[], gym.Env]:
    """A zero-argument constructor of ``env_id`` (checked now, so errors surface early)."""
    check_env_id(env_id)
    kwargs = dict(env_kwargs or {})
    if render_mode is not None:
        kwargs["render_mode"] = render_mode

    def make() -> gym.Env:
        try:
            return gym.make(env_id, **kwargs)
        except TypeError as exc:  # an unknown keyword for this env
            raise UserError(f"{env_id}: bad env_kwargs {sorted(kwargs)}: {exc}") from None
        except gym.error.DependencyNotInstalled as exc:
            raise UserError(f"{env_id}: {exc}") from None

    return make
