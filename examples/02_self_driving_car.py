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
# # 2. The self-driving car
#
# *RL Introduction*, the chapter rlalign grew from, introduces reinforcement learning with a
# self-driving car:
#
# | | the car |
# |---|---|
# | **agent** | the onboard computer |
# | **state** $s$ | sensor data: speed, lane, gaps to other cars, the traffic signal, pedestrians |
# | **action** $a$ | accelerate, brake, steer (change lane), come to a complete stop |
# | **reward** $r$ | positive for a short travel time; negative for abrupt braking and collisions |
# | **policy** $\pi$ | which manoeuvre to make given the sensors |
#
# rlalign ships that car as a Gymnasium environment, `rlalign/Driving-v0`, and trains it with
# the same RL core (`rlalign.rl`) that later aligns a language model. This notebook looks at
# the environment's state, actions and reward components, then puts three drivers side by
# side: a random one, a rule-based one and one trained with PPO.
#
# At its normal settings it trains for 500,000 environment steps: about two minutes of one
# CPU core's time (4.5 minutes in all on a busy 2-core server).

# %% tags=["parameters"]
import os
from pathlib import Path

# The test suite sets RLALIGN_TUTORIAL_QUICK=1 to run every notebook on tiny settings.
QUICK = os.environ.get("RLALIGN_TUTORIAL_QUICK") == "1"
OUT = Path(os.environ.get("RLALIGN_TUTORIAL_OUT", "runs/tutorials")) / "02_self_driving_car"
TRAIN_STEPS = 2_048 if QUICK else 500_000  # environment steps of PPO
EVAL_EPISODES = 4 if QUICK else 100  # seeded episodes per driver in the comparison
SEED = 0

# %%
import base64
import shlex
import warnings

# Without ipywidgets, tqdm warns that it cannot draw notebook progress bars; we use none.
warnings.filterwarnings("ignore", message="IProgress not found")

import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import HTML

import rlalign  # registers rlalign/Driving-v0  # noqa: F401
from rlalign.cli import main as rlalign_main
from rlalign.control.baselines import BASELINES, make_baseline
from rlalign.control.render import render_frame
from rlalign.control.runs import eval_policy
from rlalign.metrics import read_metrics


def rlalign_cli(command: str) -> None:
    """Run an `rlalign` command line in this kernel, exactly as it would run in a shell."""
    status = rlalign_main(shlex.split(command))
    if status != 0:
        raise RuntimeError(f"`rlalign {command}` exited with status {status}")


OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. State, actions and reward
#
# A 600 m, three-lane road to a destination, with 14 other cars, a traffic signal at 250 m
# and a crosswalk at 430 m where pedestrians step out. One step is 0.5 s.
#
# The **state** the agent observes is a vector of 30 sensor readings, each scaled to about
# $[-1, 1]$; `env.unwrapped.obs_fields` names them.

# %%
env = gym.make("rlalign/Driving-v0", render_mode="rgb_array")
obs, info = env.reset(seed=1)
fields = env.unwrapped.obs_fields
for i in range(0, len(fields), 3):
    print("   ".join(f"{name:>24s} {obs[j]:+.2f}" for j, name in enumerate(fields[i : i + 3], i)))

# %%
plt.figure(figsize=(11, 2.6))
plt.imshow(render_frame(env.unwrapped, title="seed 1, t = 0"))
plt.axis("off")
plt.show()

# %% [markdown]
# The **actions** are the chapter's manoeuvres (`Discrete(6)`; `rlalign/DrivingContinuous-v0`
# takes `[acceleration, steering]` instead):

# %%
print(dict(enumerate(env.unwrapped.action_names)))

# %% [markdown]
# The **reward** is a sum of components, each weighted in
# `rlalign.control.driving_config.RewardConfig` (and changeable:
# `gym.make("rlalign/Driving-v0", reward={"collision": -20})`), and each reported in
# `info["reward_components"]` after every step:

# %%
print(env.unwrapped.cfg.reward)
obs, reward, terminated, truncated, info = env.step(1)  # accelerate
print(
    f"reward {reward:+.4f} =", {k: round(float(v), 4) for k, v in info["reward_components"].items()}
)


# %% [markdown]
# One episode of each baseline driver, with the reward components added up over the episode.
# A baseline is a callable on a batch of observations, like a learned policy.


# %%
def play(policy, seed):
    """One episode: the per-step rewards and the sum of each reward component."""
    obs, _ = env.reset(seed=seed)
    rewards, totals = [], {}
    while True:
        obs, reward, terminated, truncated, info = env.step(policy(obs[None])[0])
        rewards.append(float(reward))
        for name, value in info["reward_components"].items():
            totals[name] = totals.get(name, 0.0) + float(value)
        if terminated or truncated:
            return np.array(rewards), totals, info


for name in BASELINES:
    rewards, totals, last = play(make_baseline(name, env.unwrapped.cfg, seed=SEED), seed=1)
    outcome = next((k for k in ("collision", "off_road", "arrived") if last[k]), "time out")
    parts = ", ".join(f"{k} {v:+.2f}" for k, v in totals.items() if v)
    print(
        f"{name:15s} {len(rewards):3d} steps, {outcome:9s} return {rewards.sum():+6.2f} = {parts}"
    )

# %% [markdown]
# ## 2. Training a driver with PPO
#
# `rlalign control train` runs PPO (`rlalign.control.ppo`): 16 environments side by side,
# rollouts of 128 steps, returns and GAE advantages from `rlalign.rl.gae`, the clipped
# surrogate `rlalign.rl.policy_loss(kind="ppo")`, `rlalign.rl.value_loss` and an entropy
# bonus. The command below is exactly what you would type in a shell; the run directory holds
# `config.yaml`, `metrics.jsonl`, TensorBoard events, the policy (`policy.safetensors`) and
# `result.json` (`--force` lets a re-run of this notebook replace them). The defaults train
# for 2 million steps (four to five minutes of one core); here we stop at a quarter of that,
# so the car will be far from perfect.

# %%
quick_eval = "eval_every=1024 eval_episodes=2 final_eval_episodes=2" if QUICK else ""
rlalign_cli(
    f"control train --env rlalign/Driving-v0 --seed {SEED} --steps {TRAIN_STEPS} "
    f"--out {OUT / 'car'} --force --no-progress --no-baselines {quick_eval}"
)

# %% [markdown]
# The learning curve: the mean return of the episodes finished during training, and of the
# evaluation episodes run every 50,000 steps (the policy of the best evaluation is kept).

# %%
rows = read_metrics(OUT / "car")
train = [(r["step"], r["episode_return"]) for r in rows if "episode_return" in r]
evals = [(r["step"], r["eval_return"]) for r in rows if "eval_return" in r]
plt.figure(figsize=(6.5, 3.5))
if train:
    plt.plot(*zip(*train, strict=True), label="training episodes")
if evals:
    plt.plot(*zip(*evals, strict=True), "o-", label="evaluation episodes")
plt.xlabel("environment steps")
plt.ylabel("mean episode return")
plt.title("PPO on rlalign/Driving-v0")
plt.legend()
plt.show()

# %% [markdown]
# ## 3. Random, rule-based and trained drivers, side by side
#
# Every driver plays the same seeded episodes (episode $k$ uses seed $1000 + k$: the same
# traffic, the same signal timing). `rlalign.control.runs.eval_policy` is what
# `rlalign control eval` runs.

# %%
drivers = {
    name: eval_policy(None, EVAL_EPISODES, 1000, env_id="rlalign/Driving-v0", baseline=name)
    for name in ("random", "constant_speed", "rule_based")
}
drivers["PPO (trained here)"] = eval_policy(OUT / "car", EVAL_EPISODES, 1000)
print(f"{'driver':20s} {'return':>8s} {'collisions':>11s} {'arrived':>8s} {'abrupt brakes':>14s}")
for name, r in drivers.items():
    print(
        f"{name:20s} {r['return']:8.2f} {r['collision_rate']:11.0%} {r['arrival_rate']:8.0%} "
        f"{r['abrupt_brakes_per_episode']:14.2f}"
    )

# %%
metrics = [
    ("return", "mean return", "{:.1f}"),
    ("collision_rate", "collision rate", "{:.0%}"),
    ("abrupt_brakes_per_episode", "abrupt brakes per episode", "{:.2f}"),
]
fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
colours = ["#bbbbbb", "#8da0cb", "#66c2a5", "#fc8d62"]
for ax, (key, title, fmt) in zip(axes, metrics, strict=True):
    values = [drivers[name][key] for name in drivers]
    bars = ax.bar(range(len(drivers)), values, color=colours)
    ax.bar_label(bars, [fmt.format(v) for v in values], fontsize=8)
    ax.set_xticks(range(len(drivers)), [n.replace(" (", "\n(") for n in drivers], fontsize=8)
    ax.set_title(title)
    ax.axhline(0, color="k", lw=0.5)
    ax.margins(y=0.15)  # room for the bar labels
fig.suptitle(f"rlalign/Driving-v0, {EVAL_EPISODES} seeded episodes per driver")
fig.tight_layout()
fig.savefig(OUT / "drivers.png", dpi=100)
plt.show()

# %% [markdown]
# After 500,000 steps, a quarter of the default, the trained car gets a far better return than
# the random and constant-speed drivers: it arrives in most episodes, and it brakes abruptly
# less often than the random driver. But it collides more often than the careful
# rule-based driver, whose return it does not reach. With the default 2 million steps the
# learned car beats the rule-based driver on mean return, faster but with a few collisions (the
# Results page of the documentation has the table).
#
# ## 4. One episode, learned car above and rule-based driver below
#
# `rlalign control render` plays one seeded episode and writes an animated GIF; `--compare`
# plays a second driver on the same seed beneath it.

# %%
gif = OUT / "ppo_vs_rule_based.gif"
rlalign_cli(f"control render {OUT / 'car'} --seed 1 --compare rule_based --out {gif}")
HTML(
    f'<img src="data:image/gif;base64,{base64.b64encode(gif.read_bytes()).decode()}" width="100%">'
)

# %% [markdown]
# **Next:** [next-token prediction](03_next_token_prediction.py): the same agent, with tokens
# as actions.
