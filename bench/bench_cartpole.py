"""Wall time to solve CartPole-v1: rlalign PPO against Stable-Baselines3 PPO (rl-zoo settings).

    .venv/bin/python bench/bench_cartpole.py [--seeds 5] [--max-steps 100000]

Both agents train on 8 vectorised CartPole-v1 envs, one torch thread each (their fastest setting
for small MLPs), and are evaluated with the same protocol: every 4096 environment steps, 10
deterministic episodes on fixed seeds; "solved" is the first evaluation with mean return >= 475.
Reported: environment steps to solve and *training* wall seconds to solve (time spent inside
the evaluations is excluded for both). SB3 uses the rl-zoo ``ppo.yml`` CartPole-v1 entry
(n_envs 8, n_steps 32, batch 256, gae_lambda 0.8, gamma 0.98, 20 epochs, ent 0, lr and clip
range linearly decayed from 1e-3 / 0.2, 1e5 steps). rlalign uses its CartPole defaults
(``rlalign.control.train_config.ENV_DEFAULTS``). Each run prints its CPU use (process CPU time
/ wall time): about 1.0 is an undisturbed single-threaded run; clearly less = shared, void.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from machine import machine_line

EVAL_EVERY = 4096
EVAL_EPISODES = 10
THRESHOLD = 475.0


def run_rlalign(seed: int, max_steps: int) -> dict:
    from rlalign.control.ppo import train_ppo
    from rlalign.control.train_config import PPOConfig, defaults_for

    cfg = PPOConfig(
        **{
            **defaults_for("CartPole-v1", "ppo"),
            "seed": seed,
            "total_steps": max_steps,
            "eval_every": EVAL_EVERY,
            "eval_episodes": EVAL_EPISODES,
            "stop_at_threshold": True,
        }
    )
    w0, c0 = time.perf_counter(), time.process_time()
    res = train_ppo("CartPole-v1", cfg, progress=False)
    wall = time.perf_counter() - w0
    return {
        "steps": res.env_steps_to_solve,
        "seconds": res.train_seconds_to_solve,
        "cpu": (time.process_time() - c0) / wall,
    }


def run_sb3(seed: int, max_steps: int) -> dict:
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    def linear(start: float):
        return lambda progress_remaining: progress_remaining * start

    class EvalStop(BaseCallback):
        """Evaluate every EVAL_EVERY steps (timed separately) and stop at the threshold."""

        def __init__(self) -> None:
            super().__init__()
            self.next_eval = EVAL_EVERY
            self.eval_seconds = 0.0
            self.solved_steps: int | None = None
            self.solved_seconds: float | None = None
            self.start = time.perf_counter()
            self.env = gym.make("CartPole-v1")

        def _on_step(self) -> bool:
            if self.num_timesteps < self.next_eval:
                return True
            self.next_eval += EVAL_EVERY
            t0 = time.perf_counter()
            rets = []
            for k in range(EVAL_EPISODES):
                obs, _ = self.env.reset(seed=1_000_000 + 1000 * seed + k)
                done, total = False, 0.0
                while not done:
                    action, _ = self.model.predict(obs, deterministic=True)
                    obs, r, term, trunc, _ = self.env.step(int(action))
                    total += float(r)
                    done = term or trunc
                rets.append(total)
            self.eval_seconds += time.perf_counter() - t0
            if np.mean(rets) >= THRESHOLD:
                self.solved_steps = self.num_timesteps
                self.solved_seconds = time.perf_counter() - self.start - self.eval_seconds
                return False
            return True

    w0, c0 = time.perf_counter(), time.process_time()
    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        ent_coef=0.0,
        learning_rate=linear(1e-3),
        clip_range=linear(0.2),
        seed=seed,
        device="cpu",
        verbose=0,
    )
    cb = EvalStop()
    cb.start = time.perf_counter()
    model.learn(total_timesteps=max_steps, callback=cb)
    wall = time.perf_counter() - w0
    return {
        "steps": cb.solved_steps,
        "seconds": cb.solved_seconds,
        "cpu": (time.process_time() - c0) / wall,
    }


def _fmt(r: dict) -> str:
    steps = "never" if r["steps"] is None else f"{r['steps']:6d} steps"
    secs = "   -   " if r["seconds"] is None else f"{r['seconds']:6.2f} s"
    return f"{steps:>12s} {secs}  CPU {r['cpu']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=100_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine_line(1))
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    ours, theirs = [], []
    for seed in range(args.seeds):
        a = run_rlalign(seed, args.max_steps)
        b = run_sb3(seed, args.max_steps)
        ours.append(a)
        theirs.append(b)
        print(f"seed {seed}: rlalign {_fmt(a)}   |   SB3 {_fmt(b)}")

    def med(rows: list[dict], key: str) -> float | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return statistics.median(vals) if len(vals) == len(rows) else None

    for name, rows in (("rlalign", ours), ("SB3", theirs)):
        solved = sum(r["steps"] is not None for r in rows)
        print(f"{name:8s} solved {solved}/{len(rows)}; median steps {med(rows, 'steps')}, "
              f"median seconds {med(rows, 'seconds')}")  # fmt: skip
    s_ours, s_sb3 = med(ours, "seconds"), med(theirs, "seconds")
    if s_ours and s_sb3:
        print(f"speed-up (SB3 median seconds / rlalign median seconds): {s_sb3 / s_ours:.1f}x "
              "(goal >= 3x)")  # fmt: skip
    low = [r["cpu"] for r in ours + theirs if r["cpu"] < 0.9]
    if low:
        print(f"WARNING: {len(low)} runs used < 0.9 core (shared machine): the timings are void")


if __name__ == "__main__":
    main()
