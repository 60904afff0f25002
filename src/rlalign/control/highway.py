"""highway-env interoperability: ``highway-fast-v0`` with the chapter's actions and reward terms.

Optional extra (``pip install rlalign[highway]``). :class:`HighwayChapterWrapper` gives
highway-env's ego car the chapter's six named actions, including *stop* (brake to standstill),
adds the chapter's progress and abrupt-braking terms to highway-env's own reward, reports every
component in ``info["reward_components"]`` and flattens the kinematics observation so that the
same trainers run on it::

    import gymnasium, rlalign
    env = gymnasium.make("rlalign/HighwayChapter-v0")   # or HighwayChapterWrapper(gym.make(...))

Leave ``SDL_VIDEODRIVER`` unset: with the dummy driver highway-env's frames are black.
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlalign.control.driving_env import ACTION_NAMES
from rlalign.errors import UserError

# Our action index -> highway-env DiscreteMetaAction name ("STOP" is ours).
_META = ("IDLE", "FASTER", "SLOWER", "LANE_LEFT", "LANE_RIGHT", "STOP")


class HighwayChapterWrapper(gym.Wrapper):
    """The chapter's actions and reward terms on a highway-env env with DiscreteMetaAction.

    Reward: ``r = highway_reward + progress * dx + abrupt_brake * [decel > threshold]``, with
    ``abrupt_brake`` negative (a penalty, as in the driving env's reward config),
    ``dx`` the metres the ego car moved along the road and ``decel`` its speed drop over the
    step divided by the step's duration (``1 / policy_frequency``).
    """

    def __init__(
        self,
        env: gym.Env,
        progress: float = 0.01,
        abrupt_brake: float = -0.5,
        abrupt_brake_threshold: float = 4.5,
    ) -> None:
        super().__init__(env)
        base = env.unwrapped
        actions = getattr(getattr(base, "action_type", None), "actions_indexes", None)
        if actions is None or not all(a in actions for a in _META[:5]):
            raise UserError(
                "HighwayChapterWrapper needs a highway-env env with a DiscreteMetaAction action type"
            )
        self._index = actions
        self.action_names = ACTION_NAMES
        self.action_space = spaces.Discrete(len(ACTION_NAMES))
        inner = env.observation_space
        self.observation_space = spaces.Box(
            np.full(int(np.prod(inner.shape)), -np.inf, dtype=np.float32),
            np.full(int(np.prod(inner.shape)), np.inf, dtype=np.float32),
            dtype=np.float32,
        )
        self.progress = progress
        self.abrupt_brake = abrupt_brake
        self.threshold = abrupt_brake_threshold
        self._dt = 1.0 / float(base.config["policy_frequency"])

    def _flat(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(obs, dtype=np.float32).reshape(-1)

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        return self._flat(obs), info

    def step(self, action: Any):
        a = int(action)
        if not 0 <= a < len(_META):
            raise ValueError(f"action must be in [0, {len(_META)}), got {action!r}")
        vehicle = self.env.unwrapped.vehicle
        x0, v0 = float(vehicle.position[0]), float(vehicle.speed)
        name = _META[a]
        if name == "STOP":
            # Brake to a standstill: a zero target speed that IDLE keeps until FASTER.
            vehicle.target_speed = 0.0
            name = "IDLE"
        obs, reward, terminated, truncated, info = self.env.step(self._index[name])
        vehicle = self.env.unwrapped.vehicle
        dx = float(vehicle.position[0]) - x0
        decel = (v0 - float(vehicle.speed)) / self._dt
        abrupt = decel > self.threshold
        comps = {
            "highway": float(reward),
            "progress": self.progress * dx,
            "abrupt_brake": self.abrupt_brake if abrupt else 0.0,
        }
        info = dict(info)
        info["reward_components"] = comps
        info["abrupt_brake"] = bool(abrupt)
        info["collision"] = bool(info.get("crashed", False))
        return self._flat(obs), float(sum(comps.values())), terminated, truncated, info


def make_highway_chapter(env_id: str = "highway-fast-v0", **kwargs: Any) -> HighwayChapterWrapper:
    """Entry point of ``rlalign/HighwayChapter-v0`` (needs ``pip install rlalign[highway]``)."""
    try:
        import highway_env  # noqa: F401  (registers highway-env's ids)
    except ImportError:
        raise UserError(
            "rlalign/HighwayChapter-v0 needs highway-env: pip install 'rlalign[highway]'"
        ) from None
    wrapper_keys = ("progress", "abrupt_brake", "abrupt_brake_threshold")
    wrapper_kwargs = {k: kwargs.pop(k) for k in wrapper_keys if k in kwargs}
    return HighwayChapterWrapper(gym.make(env_id, **kwargs), **wrapper_kwargs)


def make_highway_seed(**kwargs: Any) -> HighwayChapterWrapper:
    """Entry point of ``rlalign/HighwaySeed-v0``, the old id of ``rlalign/HighwayChapter-v0``
    (accepted until the next release)."""
    warnings.warn(
        "rlalign/HighwaySeed-v0 is now rlalign/HighwayChapter-v0 (the old id is accepted until "
        "the next release)",
        FutureWarning,
        stacklevel=2,
    )
    return make_highway_chapter(**kwargs)


# The old class name, accepted until the next release.
HighwaySeedWrapper = HighwayChapterWrapper
