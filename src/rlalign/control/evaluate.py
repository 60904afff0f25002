"""Evaluate a batched policy on seeded episodes, all episodes stepped side by side.

Episode ``k`` is reset with seed ``seed + k``, so two policies evaluated with the same ``seed``
face exactly the same worlds (same traffic, same signal offset, same first pedestrians as long as
their actions do not change the random stream). Any Gymnasium env works; for the driving envs
the driving statistics (collision rate, travel time, abrupt brakes, ...) are added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

BatchPolicy = Callable[[np.ndarray], np.ndarray]


@dataclass
class EpisodeStats:
    """Per-episode results of :func:`evaluate`."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    collisions: list[bool] = field(default_factory=list)
    arrived: list[bool] = field(default_factory=list)
    travel_times: list[float] = field(default_factory=list)
    abrupt_brakes: list[int] = field(default_factory=list)
    red_lights: list[int] = field(default_factory=list)
    off_road: list[bool] = field(default_factory=list)
    is_driving: bool = False

    def summary(self) -> dict[str, Any]:
        """Means over episodes (driving fields only for the driving envs)."""
        out: dict[str, Any] = {
            "return": float(np.mean(self.returns)),
            "return_std": float(np.std(self.returns)),
            "episode_length": float(np.mean(self.lengths)),
            "episodes": len(self.returns),
        }
        if self.is_driving:
            arrived_t = [t for t, a in zip(self.travel_times, self.arrived, strict=True) if a]
            out.update(
                collision_rate=float(np.mean(self.collisions)),
                arrival_rate=float(np.mean(self.arrived)),
                # Travel time of the episodes that reached the destination (s); None if none did.
                mean_travel_time=float(np.mean(arrived_t)) if arrived_t else None,
                abrupt_brakes_per_episode=float(np.mean(self.abrupt_brakes)),
                red_lights_per_episode=float(np.mean(self.red_lights)),
                off_road_rate=float(np.mean(self.off_road)),
            )
        return out


def evaluate(
    make_env: Callable[[], gym.Env],
    policy: BatchPolicy,
    episodes: int,
    seed: int,
    *,
    batch: int = 32,
) -> EpisodeStats:
    """Run ``episodes`` episodes of ``policy`` (``batch`` at a time, one batched call per step)."""
    stats = EpisodeStats()
    envs = [make_env() for _ in range(min(batch, episodes))]
    stats.is_driving = hasattr(envs[0].unwrapped, "obs_fields") and hasattr(
        envs[0].unwrapped, "signal_phase"
    )
    done_count = 0
    next_k = 0
    while done_count < episodes:
        n = min(len(envs), episodes - next_k)
        obs = np.stack([envs[i].reset(seed=seed + next_k + i)[0] for i in range(n)])
        next_k += n
        alive = np.ones(n, dtype=bool)
        ret = np.zeros(n)
        length = np.zeros(n, dtype=int)
        abrupt = np.zeros(n, dtype=int)
        reds = np.zeros(n, dtype=int)
        last_info: list[dict[str, Any]] = [{} for _ in range(n)]
        while alive.any():
            idx = np.flatnonzero(alive)
            actions = policy(obs[idx])
            for a, i in zip(actions, idx, strict=True):
                o, r, term, trunc, info = envs[i].step(a)
                obs[i] = o
                ret[i] += r
                length[i] += 1
                abrupt[i] += bool(info.get("abrupt_brake", False))
                reds[i] += bool(info.get("red_light", False))
                if term or trunc:
                    alive[i] = False
                    last_info[i] = info
        for i in range(n):
            stats.returns.append(float(ret[i]))
            stats.lengths.append(int(length[i]))
            if stats.is_driving:
                info = last_info[i]
                stats.collisions.append(bool(info.get("collision", False)))
                stats.arrived.append(bool(info.get("arrived", False)))
                stats.travel_times.append(float(info.get("travel_time", 0.0)))
                stats.off_road.append(bool(info.get("off_road", False)))
                stats.abrupt_brakes.append(int(abrupt[i]))
                stats.red_lights.append(int(reds[i]))
        done_count += n
    for env in envs:
        env.close()
    return stats
