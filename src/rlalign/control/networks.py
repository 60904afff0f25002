"""The MLP actor-critic: a policy head and a value head for Discrete or Box action spaces.

Actor and critic are separate MLPs (sharing a trunk hurts small control tasks). Discrete
actions: the actor outputs logits of a categorical distribution. Box actions: it outputs the
mean of a diagonal Gaussian with a learned, state-independent log standard deviation; the
log-probability of an action vector is the sum over its dimensions,

    log pi(a|s) = sum_i [ -(a_i - mu_i)^2 / (2 sigma_i^2) - log sigma_i - log(2 pi) / 2 ].

Sampled Box actions are clipped to the space's bounds by the caller when stepping the env, but
the unclipped sample is what the log-probability is computed for.

Two options for Box actions (off by default, and never for Discrete): ``exploration="gsde"``
replaces the state-independent standard deviation by gSDE's state-dependent one
(:mod:`rlalign.control.exploration`), and ``rescale_actions`` lets the policy act in ``[-1, 1]``
per dimension, mapped onto the space's ``[low, high]``, so that one initial spread fits every
env whatever its units.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from rlalign.control.exploration import (
    gaussian_entropy,
    gaussian_log_prob,
    gsde_noise,
    gsde_std,
    sample_gsde_matrices,
    scale_to_bounds,
)
from rlalign.errors import UserError
from rlalign.rl import entropy as categorical_entropy

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class NetSpec:
    """Everything needed to rebuild the network (stored in the policy's JSON config)."""

    obs_dim: int
    kind: str  # "discrete" or "box"
    n_actions: int  # discrete: number of actions; box: action dimensions
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    action_low: list[float] | None = None
    action_high: list[float] | None = None
    exploration: str = "gaussian"  # box: "gaussian" (state-independent std) or "gsde"
    log_std_init: float = 0.0  # box: initial log std (of gSDE's noise matrix entries)
    rescale_actions: bool = False  # box: the policy acts in [-1, 1], mapped to [low, high]

    def to_dict(self) -> dict:
        return asdict(self)


def net_spec_for(
    observation_space: spaces.Space,
    action_space: spaces.Space,
    hidden_sizes: list[int],
    activation: str,
    algo: str = "ppo",
    *,
    exploration: str = "gaussian",
    log_std_init: float = 0.0,
    rescale_actions: bool = False,
) -> NetSpec:
    """Check the spaces are ones the agents handle and describe the network for them.

    ``exploration``, ``log_std_init`` and ``rescale_actions`` shape a Gaussian policy; asking
    for them on a Discrete action space is a ``UserError`` (they have no meaning there).
    """
    if exploration not in ("gaussian", "gsde"):
        raise UserError(f"exploration must be 'gaussian' or 'gsde', got {exploration!r}")
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        raise UserError(
            f"{algo} needs a flat Box observation space, the env has {observation_space}; "
            "wrap it (e.g. gymnasium.wrappers.FlattenObservation) first"
        )
    obs_dim = int(observation_space.shape[0])
    if isinstance(action_space, spaces.Discrete):
        if int(action_space.start) != 0:
            raise UserError(
                f"{algo} supports Discrete action spaces starting at 0, got {action_space}"
            )
        box_only = {
            "use_sde=true": exploration != "gaussian",
            f"log_std_init={log_std_init}": log_std_init != 0.0,
            "rescale_actions=true": rescale_actions,
        }
        asked = [k for k, on in box_only.items() if on]
        if asked:
            raise UserError(
                f"{', '.join(asked)}: for Box (continuous) actions only, and the env's actions "
                f"are {action_space}; remove {'it' if len(asked) == 1 else 'them'}"
            )
        return NetSpec(obs_dim, "discrete", int(action_space.n), list(hidden_sizes), activation)
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
            raise UserError(f"{algo} needs a bounded Box action space, got {action_space}")
        return NetSpec(
            obs_dim,
            "box",
            int(action_space.shape[0]),
            list(hidden_sizes),
            activation,
            [float(v) for v in action_space.low],
            [float(v) for v in action_space.high],
            exploration,
            float(log_std_init),
            bool(rescale_actions),
        )
    raise UserError(
        f"{algo} handles Discrete and 1-D Box action spaces, not {type(action_space).__name__} "
        f"({action_space}); choose an env with one of those (e.g. CartPole-v1, Pendulum-v1)"
    )


def _mlp(sizes: list[int], activation: str, out_gain: float) -> nn.Sequential:
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        linear = nn.Linear(sizes[k], sizes[k + 1])
        last = k == len(sizes) - 2
        # Orthogonal init (Engstrom et al., 2020): small policy outputs start near-uniform.
        nn.init.orthogonal_(linear.weight, out_gain if last else math.sqrt(2.0))
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(act())
    return nn.Sequential(*layers)


class GSDEOut(NamedTuple):
    """The actor's output under gSDE: what log-probabilities, samples and entropy need."""

    mean: torch.Tensor  # (B, m)
    std: torch.Tensor  # (B, m), sigma_j(s)
    features: torch.Tensor  # (B, d), z(s), detached


class ActorCritic(nn.Module):
    """Policy and value MLPs for one :class:`NetSpec`."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        if spec.activation not in ("tanh", "relu"):
            raise UserError(f"activation must be 'tanh' or 'relu', got {spec.activation!r}")
        self.spec = spec
        hidden = list(spec.hidden_sizes)
        self.actor = _mlp([spec.obs_dim, *hidden, spec.n_actions], spec.activation, 0.01)
        self.critic = _mlp([spec.obs_dim, *hidden, 1], spec.activation, 1.0)
        self.discrete = spec.kind == "discrete"
        self.sde = spec.exploration == "gsde"
        if self.sde:
            # One entry per (feature, action dimension): the features are the last hidden layer.
            n_features = hidden[-1] if hidden else spec.obs_dim
            self.log_std = nn.Parameter(
                torch.full((n_features, spec.n_actions), float(spec.log_std_init))
            )
        elif not self.discrete:
            self.log_std = nn.Parameter(torch.full((spec.n_actions,), float(spec.log_std_init)))

    def policy(self, obs: torch.Tensor) -> torch.Tensor | GSDEOut:
        """The actor's output that :meth:`log_prob`, :meth:`sample`, :meth:`mode` and
        :meth:`entropy` take: logits (Discrete), the Gaussian mean (Box), or a :class:`GSDEOut`."""
        if not self.sde:
            return self.actor(obs)
        z = self.actor[:-1](obs)
        features = z.detach()
        return GSDEOut(self.actor[-1](z), gsde_std(features, self.log_std), features)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def log_prob(self, out, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) from the actor output (:meth:`policy`)."""
        if self.sde:
            return gaussian_log_prob(actions, out.mean, out.std)
        if self.discrete:
            logp_all = torch.log_softmax(out, dim=-1)
            return logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        z = (actions - out) * torch.exp(-self.log_std)
        return (-0.5 * z * z - self.log_std - 0.5 * _LOG_2PI).sum(-1)

    def entropy(self, out, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean policy entropy over the (masked) batch (categorical: :func:`rlalign.rl.entropy`)."""
        if self.sde:
            return gaussian_entropy(out.std, mask)
        if self.discrete:
            return categorical_entropy(out, mask)
        # Diagonal Gaussian: H = sum_i (log sigma_i + (1 + log 2 pi) / 2), the same in every state.
        return (self.log_std + 0.5 * (1.0 + _LOG_2PI)).sum()

    def sample(
        self,
        out,
        generator: torch.Generator | None,
        sde_matrices: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Actions drawn from the policy; under gSDE with ``sde_matrices`` (one noise matrix per
        row, :meth:`sample_sde_matrices`) the noise is ``z(s)^T E``, without them a fresh draw
        from the same per-state Gaussian."""
        if self.sde:
            if sde_matrices is not None:
                return out.mean + gsde_noise(out.features, sde_matrices)
            noise = torch.randn(out.mean.shape, generator=generator, dtype=out.mean.dtype)
            return out.mean + noise * out.std
        if self.discrete:
            probs = torch.softmax(out, dim=-1)
            return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        noise = torch.randn(out.shape, generator=generator, dtype=out.dtype)
        return out + noise * torch.exp(self.log_std)

    def sample_sde_matrices(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """``n`` gSDE noise matrices ``(n, d, m)``, one per env, to hold for a few steps."""
        return sample_gsde_matrices(self.log_std.detach(), n, generator)

    def mode(self, out) -> torch.Tensor:
        if self.sde:
            return out.mean
        return out.argmax(-1) if self.discrete else out

    def to_env_actions(self, actions: torch.Tensor) -> np.ndarray:
        """Actions as the env takes them (Box actions clipped to the space's bounds, or mapped
        from ``[-1, 1]`` onto them with ``rescale_actions``)."""
        a = actions.numpy()
        if self.discrete:
            return a.astype(np.int64)
        if self.spec.rescale_actions:
            low, high = self.spec.action_low, self.spec.action_high
            return scale_to_bounds(a, low, high).astype(np.float32)
        return np.clip(a, self.spec.action_low, self.spec.action_high).astype(np.float32)
