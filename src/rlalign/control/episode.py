"""One recorded episode with each step's credit: action, reward r_t and return G_t.

The car's version of the trajectory viewer: the chapter's central idea is that each action gets a
reward and a return ``G_t = r_t + gamma r_{t+1} + gamma^2 r_{t+2} + ...`` (``r_t`` is the reward
received after action ``t``, as in :func:`rlalign.rl.discounted_returns`, which computes it).
:func:`record_episode` plays a learned policy or a baseline on a seeded episode and keeps the
rendered frames; :func:`captioned` writes each step's numbers beneath its frame, so a GIF or a
strip of frames (:func:`rlalign.control.render.strip`) shows where the credit came from. When a
language model drives (:class:`~rlalign.control.lm_driver.LMDriver`), each caption also shows
the words it wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlalign.control.envs import env_factory
from rlalign.control.lm_driver import LMDriver
from rlalign.control.policies import resolve_policy
from rlalign.control.render import caption, render_frame
from rlalign.errors import UserError
from rlalign.rl import discounted_returns


@dataclass
class Episode:
    """Frames and per-step records of one episode. ``frames[0]`` is the state after reset;
    ``frames[t + 1]`` the state after action ``t``."""

    label: str
    seed: int
    gamma: float
    frames: list[np.ndarray] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    words: list[str] = field(default_factory=list)  # a language model's reply at each step
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def returns(self) -> list[float]:
        """G_t of every step, from :func:`rlalign.rl.discounted_returns`."""
        if not self.rewards:
            return []
        r = torch.tensor(self.rewards, dtype=torch.float64)[None]
        return discounted_returns(r, self.gamma)[0].tolist()

    def captions(self) -> list[str]:
        """One line per frame: the step, the action taken from it (and the words that asked for
        it, when a language model drove), r_t and G_t."""
        lines = []
        returns = self.returns
        for t in range(len(self.frames)):
            if t < len(self.actions):
                said = f'said "{_short(self.words[t])}"  ' if t < len(self.words) else ""
                lines.append(
                    f"t={t:3d}  {said}action={self.actions[t]:<10s} r_t={self.rewards[t]:+7.3f}  "
                    f"G_t={returns[t]:+7.3f}"
                )
            else:
                lines.append(f"t={t:3d}  episode over: return {sum(self.rewards):+.3f}")
        return lines

    def captioned(self) -> list[np.ndarray]:
        return [caption(f, line) for f, line in zip(self.frames, self.captions(), strict=True)]


def _short(text: str, width: int = 14) -> str:
    """A reply on one short line: a model may write anything, of any length."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _action_name(env: Any, action: Any) -> str:
    names = getattr(env.unwrapped, "action_names", None)
    a = np.asarray(action)
    if a.ndim == 0 and names is not None and len(names) > int(a):
        return str(names[int(a)])
    if a.ndim == 0:
        return str(int(a))
    return "[" + ",".join(f"{v:+.2f}" for v in a.reshape(-1)) + "]"


def record_episode(
    policy_dir: str | Path | None,
    seed: int,
    env_id: str | None = None,
    baseline: str | None = None,
    max_frames: int = 1000,
    gamma: float | None = None,
) -> Episode:
    """Play one episode of a saved policy (or a baseline) with seed ``seed``, rendering each step.

    ``gamma`` defaults to the run's own (``config.yaml`` beside the policy), else 0.99.
    """
    env_id, env_kwargs, policy, label = resolve_policy(policy_dir, env_id, baseline, seed)
    if gamma is None:
        gamma = _run_gamma(policy_dir)
    env = env_factory(env_id, env_kwargs, render_mode="rgb_array")()
    obs, _ = env.reset(seed=seed)
    ep = Episode(label=label, seed=seed, gamma=gamma)
    ep.frames.append(_frame(env, label))
    info: dict[str, Any] = {}
    while len(ep.actions) < max_frames:
        action = policy(obs[None])[0]
        ep.actions.append(_action_name(env, action))
        if isinstance(policy, LMDriver):
            ep.words.append(policy.last_replies[0])
        obs, r, term, trunc, info = env.step(action)
        ep.rewards.append(float(r))
        ep.frames.append(_frame(env, label))
        if term or trunc:
            break
    env.close()
    if isinstance(policy, LMDriver):
        policy.close()
    ep.summary = {
        "env_id": env_id,
        "policy": label,
        "seed": seed,
        "return": float(sum(ep.rewards)),
        "steps": len(ep.actions),
    }
    for key in ("collision", "arrived", "travel_time"):
        if key in info:
            ep.summary[key] = info[key]
    return ep


def _run_gamma(policy_dir: str | Path | None) -> float:
    if policy_dir is not None and (Path(policy_dir) / "config.yaml").is_file():
        import yaml

        saved = yaml.safe_load((Path(policy_dir) / "config.yaml").read_text(encoding="utf-8"))
        if isinstance(saved, dict) and isinstance(saved.get("gamma"), int | float):
            return float(saved["gamma"])
    return 0.99


def _frame(env: Any, label: str) -> np.ndarray:
    if hasattr(env.unwrapped, "obs_fields"):
        return render_frame(env.unwrapped, title=label)
    frame = env.render()
    if frame is None:
        raise UserError("this env does not render rgb_array frames")
    return np.asarray(frame)
