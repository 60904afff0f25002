"""Running statistics for observation and reward normalisation (saved with the policy).

Observations are standardised per dimension, ``o' = clip((o - mu) / sqrt(var + eps), -c, c)``.
Rewards are divided by the standard deviation of the discounted return ``R_t = gamma R_{t-1} +
r_t`` (not its mean: the sign of a reward carries meaning), as in Engstrom et al. (2020).
"""

from __future__ import annotations

import numpy as np
import torch


class RunningMeanStd:
    """Mean and variance of a stream of batches (Chan et al.'s parallel update), float64."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4) -> None:
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = float(epsilon)

    def update(self, batch: np.ndarray) -> None:
        """Fold a batch ``(B, *shape)`` into the statistics."""
        batch = np.asarray(batch, dtype=np.float64)
        b_mean, b_var, b_count = batch.mean(axis=0), batch.var(axis=0), batch.shape[0]
        delta = b_mean - self.mean
        total = self.count + b_count
        self.mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.var = m2 / total
        self.count = total

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "var": self.var, "count": np.array([self.count])}

    def load(self, state: dict[str, np.ndarray]) -> None:
        self.mean = np.asarray(state["mean"], dtype=np.float64)
        self.var = np.asarray(state["var"], dtype=np.float64)
        self.count = float(np.asarray(state["count"]).reshape(-1)[0])


class ObsNormalizer:
    """Standardise observations with running statistics; ``frozen`` stops updates (evaluation)."""

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, eps: float = 1e-8) -> None:
        self.rms = RunningMeanStd(shape)
        self.clip = clip
        self.eps = eps

    def __call__(self, obs: np.ndarray, update: bool = False) -> np.ndarray:
        if update:
            self.rms.update(obs)
        out = (obs - self.rms.mean) / np.sqrt(self.rms.var + self.eps)
        return np.clip(out, -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            k: torch.from_numpy(np.array(v, dtype=np.float64)) for k, v in self.rms.state().items()
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.rms.load({k: v.numpy() for k, v in state.items()})


class RewardScaler:
    """Scale rewards by the running std of the discounted return of each parallel env."""

    def __init__(self, n_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8) -> None:
        self.rms = RunningMeanStd(())
        self.ret = np.zeros(n_envs)
        self.gamma = gamma
        self.clip = clip
        self.eps = eps

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        self.ret = self.ret * self.gamma + rewards
        self.rms.update(self.ret)
        self.ret[dones] = 0.0
        scaled = rewards / np.sqrt(self.rms.var + self.eps)
        return np.clip(scaled, -self.clip, self.clip)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {
            k: torch.from_numpy(np.array(v, dtype=np.float64)) for k, v in self.rms.state().items()
        }
        state["ret"] = torch.from_numpy(self.ret.copy())
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.rms.load({k: v.numpy() for k, v in state.items() if k != "ret"})
        self.ret = state["ret"].numpy().copy()
