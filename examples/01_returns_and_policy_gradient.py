# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Returns and the policy gradient
#
# *RL Introduction*, the chapter rlalign grew from, defines reinforcement learning by what the
# agent maximises: the **return**
#
# $$G_t = \sum_{k \ge 0} \gamma^k \, r_{t+k+1}, \qquad 0 \le \gamma \le 1,$$
#
# and, for a policy $\pi_\theta(a \mid s)$ with parameters $\theta$, the **objective**
#
# $$J(\theta) = \mathbb{E}_{\pi_\theta}\Big[\sum_t \gamma^t \, r_{t+1}\Big].$$
#
# Policy-gradient methods climb $J(\theta)$ along an estimate of its gradient. This notebook
# computes each of these numbers with rlalign's RL core (`rlalign.rl`) on problems small enough
# that $J(\theta)$ and its gradient are known *exactly* (`rlalign.tabular`), so every estimate
# can be checked against the truth:
#
# 1. $G_t$ on a reward sequence, for several $\gamma$;
# 2. $J(\theta)$ on a bandit and on a three-step MDP of the chapter's car;
# 3. the REINFORCE estimate of $\nabla J$ against the exact gradient;
# 4. a learning curve: REINFORCE and PPO climbing to the optimum $J^*$.
#
# It runs in under a minute on a laptop CPU.

# %% tags=["parameters"]
import os

# The test suite sets RLALIGN_TUTORIAL_QUICK=1 to run every notebook on tiny settings.
QUICK = os.environ.get("RLALIGN_TUTORIAL_QUICK") == "1"
EPISODE_COUNTS = [10, 100, 1_000] if QUICK else [10, 100, 1_000, 10_000, 100_000]
TRAIN_STEPS = 30 if QUICK else 300

# %%
import matplotlib.pyplot as plt
import torch

from rlalign.rl import discounted_returns, policy_loss
from rlalign.tabular import bandit, junction_mdp, train_policy_gradient

torch.set_printoptions(precision=4)

# %% [markdown]
# ## 1. The return $G_t$
#
# In rlalign, `rewards[t]` is the reward received *after* action $t$, the chapter's $r_{t+1}$. So
# $G_t$ = `rewards[t]` + $\gamma$ $G_{t+1}$, computed backwards from the end of the episode by
# `rlalign.rl.discounted_returns`.
#
# The chapter's worked example: three actions followed by the rewards $r_1 = 1$, $r_2 = 0$,
# $r_3 = 2$, with $\gamma = 0.5$:
# $G_2 = 2$, $G_1 = 0 + 0.5 \cdot 2 = 1$, $G_0 = 1 + 0.5 \cdot 0 + 0.25 \cdot 2 = 1.5$.

# %%
rewards = torch.tensor([1.0, 0.0, 2.0])
for gamma in (0.0, 0.5, 1.0):
    print(f"gamma = {gamma}:  G = {discounted_returns(rewards, gamma).tolist()}")

# %% [markdown]
# A longer sequence, shaped like one drive of the car: a small reward for progress at every
# step, a penalty for an abrupt brake at step 6, and a bonus on arrival at step 14. With
# $\gamma$ near 0 the agent sees only the next reward; with $\gamma$ near 1 the arrival bonus
# reaches back to the very first action.

# %%
drive = torch.full((15,), 0.1)
drive[6] = -1.0  # abrupt braking
drive[14] = 5.0  # arrival
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.bar(range(15), drive.tolist(), color="lightgray", label="reward $r_{t+1}$")
for gamma in (0.0, 0.5, 0.9, 1.0):
    ax.plot(
        discounted_returns(drive, gamma).tolist(), marker="o", label=f"$G_t$, $\\gamma$={gamma}"
    )
ax.set_xlabel("step t")
ax.set_title("The return of every step for several discount factors")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Batches and episodes laid end to end work the same way: every function of `rlalign.rl`
# takes `(..., T)` tensors with the time axis last, an optional `mask` (0 = not an action of
# the agent, e.g. padding or prompt tokens) and, for returns, `dones` (1 = the episode ended
# after this action, so nothing flows back across it).

# %%
two_episodes = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0])
done_after = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])  # an episode of 2 steps, then one of 3
print(discounted_returns(two_episodes, 0.5, dones=done_after))

# %% [markdown]
# ## 2. $J(\theta)$, exactly
#
# `rlalign.tabular` holds small problems whose $J(\theta)$ is a finite sum over every
# trajectory, differentiable with autograd. The policy is a softmax over a table of logits
# $\theta$ (one table per time step).
#
# **A bandit** has one state and one step: $J(\theta) = \sum_a \pi_\theta(a)\, r(a)$.

# %%
arms = bandit([1.0, 0.2, -0.5])
uniform = arms.init_logits()  # all logits 0: every arm with probability 1/3
print("J(uniform policy) =", arms.exact_objective(uniform).item(), "= mean of the arm rewards")
print("J*                =", arms.optimal_objective(), "(always pull the best arm)")

# %% [markdown]
# **The junction** is three steps of the chapter's car as a table. On a clear road, accelerating
# earns progress (+1) but a car may pull in ahead; accelerating into a car ahead is a
# collision (-5); braking when a car is ahead costs a little (-0.5, abrupt braking) and clears
# the road. $J^*$ comes from backward induction over the best time-dependent policy.

# %%
mdp = junction_mdp(gamma=0.9)
print("states: ", mdp.state_names)
print("actions:", mdp.action_names)
print("expected reward r(s, a):\n", mdp.rewards)
j_uniform = mdp.exact_objective(mdp.init_logits()).item()
j_star = mdp.optimal_objective()
print(f"J(uniform random policy) = {j_uniform:+.3f},  J* = {j_star:+.3f}")

# %% [markdown]
# ## 3. The REINFORCE estimate against the exact gradient
#
# The policy-gradient theorem says
#
# $$\nabla_\theta J(\theta) = \mathbb{E}\Big[\sum_t \gamma^t \,(G_t - b_t)\, \nabla_\theta \log \pi_\theta(a_t \mid s_t)\Big]$$
#
# for any baseline $b_t$ that does not depend on the action. rlalign's
# `policy_loss(..., kind="reinforce")` is the loss $-\sum_t A_t \log\pi_\theta(a_t \mid s_t)$
# whose gradient is minus that estimate when $A_t = \gamma^t (G_t - b_t)$. We sample episodes,
# compute $G_t$ with `discounted_returns`, and compare the sampled gradient with the exact one
# from autograd through $J(\theta)$, at a random policy.

# %%
gen = torch.Generator().manual_seed(0)


def reinforce_estimate(problem, logits, n, baseline=0.0):
    """-grad of rlalign's REINFORCE loss on n sampled episodes: an estimate of grad J."""
    theta = logits.clone().requires_grad_(True)
    episodes = problem.sample(theta, n, gen)
    returns = discounted_returns(episodes.rewards, problem.gamma)
    discount = problem.gamma ** torch.arange(problem.horizon, dtype=torch.float64)
    advantages = discount * (returns - baseline)
    loss, _ = policy_loss(episodes.logp, None, advantages, kind="reinforce", loss_type="sum")
    (grad,) = torch.autograd.grad(loss, theta)
    return -grad


def exact_gradient(problem, logits):
    theta = logits.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(problem.exact_objective(theta), theta)
    return grad


theta0 = 0.5 * torch.randn(mdp.init_logits().shape, generator=gen, dtype=torch.float64)
exact = exact_gradient(mdp, theta0)
estimate = reinforce_estimate(mdp, theta0, EPISODE_COUNTS[-1])
print("t=0, state 'clear road', d J / d logits (accelerate, brake):")
print(f"  exact (autograd through J)       {exact[0, 0].tolist()}")
print(f"  REINFORCE, {EPISODE_COUNTS[-1]:>7,} episodes     {estimate[0, 0].tolist()}")

# %% [markdown]
# The estimate is unbiased, and its error shrinks like $1/\sqrt{N}$ with the number of
# episodes $N$ (left). A **baseline** does not change the expectation but can remove most of
# the variance. It matters most when every reward is far from zero, as on a bandit paying
# 10, 11 or 9 (right): without a baseline every sampled arm is pushed up, and only the
# differences between pushes carry the signal. The mean return is used as $b_t$.


# %%
def relative_errors(problem, logits, baseline):
    truth = exact_gradient(problem, logits)
    errs = []
    for n in EPISODE_COUNTS:
        trials = torch.stack([reinforce_estimate(problem, logits, n, baseline) for _ in range(5)])
        errs.append(
            (torch.linalg.vector_norm(trials - truth, dim=(1, 2, 3)) / truth.norm()).mean().item()
        )
    return errs


far_from_zero = bandit([10.0, 11.0, 9.0])
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
for ax, problem, logits, title in (
    (axes[0], mdp, theta0, "junction MDP"),
    (axes[1], far_from_zero, far_from_zero.init_logits(), "bandit paying 10, 11, 9"),
):
    mean_return = discounted_returns(
        problem.sample(logits, 10_000, gen).rewards, problem.gamma
    ).mean(0)
    for label, b in (("no baseline", 0.0), ("baseline $b_t$ = mean return", mean_return)):
        ax.loglog(EPISODE_COUNTS, relative_errors(problem, logits, b), marker="o", label=label)
    ax.set_title(f"REINFORCE vs the exact gradient: {title}", fontsize=10)
    ax.set_xlabel("episodes N")
axes[0].set_ylabel("relative error of the estimate")
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 4. A learning curve
#
# `rlalign.tabular.train_policy_gradient` runs gradient ascent on sampled episodes, with the
# same two functions (`discounted_returns`, `policy_loss`) that later train the car and align
# a language model. Here we track the *exact* $J(\theta)$ after every step. With fewer
# episodes per step the gradient is noisier and the climb is slower.
#
# PPO's clipped surrogate (`kind="ppo"`) has exactly REINFORCE's gradient when each batch is
# used for one step: the probability ratio $\pi_\theta / \pi_{old}$ is then 1, far from the
# clip range, so its curve lies on REINFORCE's. Clipping matters when a batch is reused for
# several steps, as the car's trainer does (10 epochs per batch).

# %%
runs = {"REINFORCE, 4 episodes/step": ("reinforce", 4)}
runs["REINFORCE, 256 episodes/step"] = ("reinforce", 256)
runs["PPO, 256 episodes/step"] = ("ppo", 256)
curves, policies = {}, {}
for label, (kind, batch_size) in runs.items():
    history = []
    policies[label] = train_policy_gradient(
        mdp,
        kind=kind,
        steps=TRAIN_STEPS,
        batch_size=batch_size,
        seed=0,
        callback=lambda step, logits, h=history: h.append(mdp.exact_objective(logits).item()),
    )
    curves[label] = history
    print(f"{label:29s} J after {TRAIN_STEPS} steps = {history[-1]:+.3f}")
print(f"{'optimum':29s} J*                  = {j_star:+.3f}")

# %% [markdown]
# The learned policy accelerates on a clear road and brakes when a car is ahead: progress
# without collisions. (`rlalign tabular` is the same demonstration on the command line.)

# %%
probs = torch.softmax(policies["PPO, 256 episodes/step"][0], dim=-1)
print("the trained policy at t=0, pi(action | state):")
for s, name in enumerate(mdp.state_names[:2]):
    row = dict(zip(mdp.action_names, [round(p, 3) for p in probs[s].tolist()], strict=True))
    print(f"  {name:11s}", row)

fig, ax = plt.subplots(figsize=(6.5, 3.8))
for (label, history), style in zip(curves.items(), ("-", "-", "--"), strict=True):
    ax.plot(range(1, TRAIN_STEPS + 1), history, style, label=label)
ax.axhline(j_star, color="k", ls=":", label="optimum $J^*$")
ax.axhline(j_uniform, color="gray", ls=":", label="uniform random policy")
ax.set_xlabel("gradient step")
ax.set_ylabel(r"exact $J(\theta)$")
ax.set_title("Policy gradient on the junction MDP")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **Next:** [the self-driving car](02_self_driving_car.py), where the state has 30 sensor
# readings and the same RL core trains a neural policy with PPO.
