"""The MLP actor-critic: a policy head and a value head for Discrete or Box action spaces.

Actor and critic are separate MLPs (sharing a trunk hurts small control tasks). Discrete
actions: the actor outputs logits of a categorical distribution. Box actions: it outputs the
mean of a diagonal Gaussian with a learned, state-independent log standard deviation; the
log-probability of an action vector is the sum over its dimensions,

    log pi(a|s) = sum_i [ -(a_i - mu_i)^2 / (2 sigma_i^2) - log sigma_i - log(2 pi) / 2 ].

Sampled Box actions are clipped to the space's bounds by the caller when stepping the env, but
the unclipped sample is what the log-probability is computed for.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

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

    def to_dict(self) -> dict:
        return asdict(self)


def net_spec_for(
    observation_space: spaces.Space,
    action_space: spaces.Space,
    hidden_sizes: list[int],
    activation: str,
    algo: str = "ppo",
) -> NetSpec:
    """Check the spaces are ones the agents handle and describe the network for them."""
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
        if not self.discrete:
            self.log_std = nn.Parameter(torch.zeros(spec.n_actions))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def log_prob(self, out: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) from the actor output (logits or Gaussian mean)."""
        if self.discrete:
            logp_all = torch.log_softmax(out, dim=-1)
            return logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        z = (actions - out) * torch.exp(-self.log_std)
        return (-0.5 * z * z - self.log_std - 0.5 * _LOG_2PI).sum(-1)

    def entropy(self, out: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean policy entropy over the (masked) batch (categorical: :func:`rlalign.rl.entropy`)."""
        if self.discrete:
            return categorical_entropy(out, mask)
        # Diagonal Gaussian: H = sum_i (log sigma_i + (1 + log 2 pi) / 2), the same in every state.
        return (self.log_std + 0.5 * (1.0 + _LOG_2PI)).sum()

    def sample(self, out: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.discrete:
            probs = torch.softmax(out, dim=-1)
            return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        noise = torch.randn(out.shape, generator=generator, dtype=out.dtype)
        return out + noise * torch.exp(self.log_std)

    def mode(self, out: torch.Tensor) -> torch.Tensor:
        return out.argmax(-1) if self.discrete else out

    def to_env_actions(self, actions: torch.Tensor) -> np.ndarray:
        """Actions as the env takes them (Box actions clipped to the space's bounds)."""
        a = actions.numpy()
        if self.discrete:
            return a.astype(np.int64)
        return np.clip(a, self.spec.action_low, self.spec.action_high).astype(np.float32)
