r"""Small tabular problems whose objective J(theta) can be computed exactly.

They are where the policy-gradient theorem can be *checked* rather than trusted: for a softmax
policy :math:`\pi_\theta(a|s_t)` (one table of logits per time step), the exact objective

.. math:: J(\theta) = \mathbb{E}_{\pi_\theta}\Big[\sum_{t=0}^{H-1} \gamma^t\, r_{t+1}\Big]

is a finite sum over all trajectories, differentiable with autograd, while
:meth:`TabularMDP.sample` draws episodes whose returns feed the REINFORCE estimator
:math:`\nabla J = \mathbb{E}[\sum_t \gamma^t G_t \nabla \log \pi_\theta(a_t|s_t)]`.

(The chapter writes the sum as :math:`\sum_{t=0}^T \gamma^t r_t`; here, as in the rest of rlalign,
the reward that follows action :math:`a_t` is :math:`r_{t+1}` and carries weight :math:`\gamma^t`.)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from rlalign.rl import discounted_returns, policy_loss


@dataclass(frozen=True)
class Episodes:
    """A batch of sampled episodes, each ``(n, H)``; ``logp`` carries gradients to the logits."""

    states: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    logp: torch.Tensor


@dataclass(frozen=True)
class TabularMDP:
    """A finite-horizon MDP: ``S`` states, ``A`` actions, horizon ``H``.

    Attributes:
        start: ``(S,)`` initial state distribution.
        transitions: ``(S, A, S)``, ``P(s' | s, a)``.
        rewards: ``(S, A)``, the expected reward received after taking ``a`` in ``s``.
        horizon: number of actions per episode.
        gamma: discount factor.
        state_names, action_names: for display.
    """

    start: torch.Tensor
    transitions: torch.Tensor
    rewards: torch.Tensor
    horizon: int
    gamma: float = 1.0
    state_names: tuple[str, ...] = ()
    action_names: tuple[str, ...] = ()

    @property
    def num_states(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_actions(self) -> int:
        return self.rewards.shape[1]

    def init_logits(self) -> torch.Tensor:
        """Uniform policy: zero logits of shape ``(H, S, A)``, one table per time step."""
        return torch.zeros(self.horizon, self.num_states, self.num_actions, dtype=torch.float64)

    def exact_objective(self, logits: torch.Tensor) -> torch.Tensor:
        r"""J(theta) by enumerating every trajectory: :math:`\sum_\tau P_\theta(\tau) \sum_t \gamma^t r_{t+1}`.

        Exponential in the horizon (``(S*A)^H`` paths): meant for the tiny problems here.
        """
        probs = torch.softmax(logits, dim=-1)
        S, A, H = self.num_states, self.num_actions, self.horizon
        total = logits.new_zeros(())
        for s0 in range(S):
            if self.start[s0] == 0:
                continue
            for path in itertools.product(range(A), range(S), repeat=H):
                p, ret, s = self.start[s0].to(logits.dtype), 0.0, s0
                for t in range(H):
                    a, s_next = path[2 * t], path[2 * t + 1]
                    p = p * probs[t, s, a] * self.transitions[s, a, s_next]
                    ret = ret + self.gamma**t * self.rewards[s, a]
                    s = s_next
                total = total + p * ret
        return total

    def optimal_objective(self) -> float:
        """max_theta J(theta), by backward induction (the best time-dependent policy)."""
        value = torch.zeros(self.num_states, dtype=torch.float64)
        for _ in range(self.horizon):
            q = self.rewards.double() + self.gamma * self.transitions.double() @ value
            value = q.max(dim=1).values
        return float(self.start.double() @ value)

    def sample(self, logits: torch.Tensor, n: int, generator: torch.Generator) -> Episodes:
        """Draw ``n`` episodes with the policy ``softmax(logits)``; rewards are the expected ones."""
        log_probs = torch.log_softmax(logits, dim=-1)
        s = torch.multinomial(self.start.double(), n, replacement=True, generator=generator)
        states, actions, rewards, logps = [], [], [], []
        for t in range(self.horizon):
            lp = log_probs[t, s]  # (n, A)
            a = torch.multinomial(lp.detach().exp(), 1, generator=generator).squeeze(1)
            states.append(s)
            actions.append(a)
            rewards.append(self.rewards[s, a].double())
            logps.append(lp.gather(1, a[:, None]).squeeze(1))
            s = torch.multinomial(self.transitions[s, a].double(), 1, generator=generator).squeeze(
                1
            )
        return Episodes(
            states=torch.stack(states, 1),
            actions=torch.stack(actions, 1),
            rewards=torch.stack(rewards, 1),
            logp=torch.stack(logps, 1),
        )


def bandit(means: list[float]) -> TabularMDP:
    """A multi-armed bandit: one state, one action, reward ``means[a]``."""
    k = len(means)
    return TabularMDP(
        start=torch.ones(1, dtype=torch.float64),
        transitions=torch.ones(1, k, 1, dtype=torch.float64),
        rewards=torch.tensor([means], dtype=torch.float64),
        horizon=1,
        state_names=("pull",),
        action_names=tuple(f"arm {i}" for i in range(k)),
    )


def junction_mdp(gamma: float = 0.9) -> TabularMDP:
    """Three steps of the chapter's car, as a table: progress pays, collisions and hard stops cost.

    States: ``clear road``, ``car ahead``, ``crashed`` (absorbing). Actions: ``accelerate``,
    ``brake``. Accelerating on a clear road earns progress (+1) but a car may pull in ahead
    (probability 0.5); accelerating into a car ahead is a collision (-5); braking when a car is
    ahead costs a little (-0.5, abrupt braking) and clears the road with probability 0.8;
    braking on a clear road wastes time (0).
    """
    P = torch.zeros(3, 2, 3, dtype=torch.float64)
    P[0, 0] = torch.tensor([0.5, 0.5, 0.0])  # clear, accelerate
    P[0, 1] = torch.tensor([0.8, 0.2, 0.0])  # clear, brake
    P[1, 0] = torch.tensor([0.0, 0.0, 1.0])  # car ahead, accelerate -> crash
    P[1, 1] = torch.tensor([0.8, 0.2, 0.0])  # car ahead, brake
    P[2, :, 2] = 1.0  # crashed stays crashed
    R = torch.tensor([[1.0, 0.0], [-5.0, -0.5], [0.0, 0.0]], dtype=torch.float64)
    return TabularMDP(
        start=torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64),
        transitions=P,
        rewards=R,
        horizon=3,
        gamma=gamma,
        state_names=("clear road", "car ahead", "crashed"),
        action_names=("accelerate", "brake"),
    )


def train_policy_gradient(
    mdp: TabularMDP,
    *,
    kind: str = "reinforce",
    steps: int = 300,
    batch_size: int = 256,
    learning_rate: float = 0.1,
    seed: int = 0,
    callback=None,
) -> torch.Tensor:
    r"""Gradient ascent on J(theta) with sampled episodes and rlalign's RL core.

    Each step samples ``batch_size`` episodes, computes :math:`G_t` with
    :func:`rlalign.rl.discounted_returns`, the advantage :math:`\gamma^t (G_t - b_t)` with the
    batch-mean baseline :math:`b_t`, and minimises :func:`rlalign.rl.policy_loss` (``kind``
    ``"reinforce"`` or ``"ppo"``) with Adam. ``callback(step, logits)`` is called after each
    step. Returns the final logits ``(H, S, A)``.
    """

    gen = torch.Generator().manual_seed(seed)
    theta = mdp.init_logits().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=learning_rate)
    discount = mdp.gamma ** torch.arange(mdp.horizon, dtype=torch.float64)
    for step in range(1, steps + 1):
        ep = mdp.sample(theta, batch_size, gen)
        returns = discounted_returns(ep.rewards, mdp.gamma)
        advantages = discount * (returns - returns.mean(0))
        loss, _ = policy_loss(ep.logp, ep.logp.detach(), advantages, kind=kind, loss_type="sum")
        opt.zero_grad()
        loss.backward()
        opt.step()
        if callback is not None:
            callback(step, theta.detach())
    return theta.detach()
