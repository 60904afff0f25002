"""Environment steps per second: rlalign/Driving-v0 against highway-env's highway-fast-v0.

    .venv/bin/python bench/bench_driving_env.py [--seconds 5]

Measures, in one process, back to back: Driving-v0 alone (random actions), Driving-v0 in a
16-env gymnasium SyncVectorEnv, DrivingContinuous-v0 alone, and the anchor highway-fast-v0 alone
(highway-env's own "fast" config). Each line prints the CPU use of that measurement (process
CPU time / wall time): about 1.0 core is an undisturbed single-threaded run here; clearly less
means another job took the core and the figure is void.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
from machine import cpu_kind

import rlalign  # noqa: F401  (registers rlalign/Driving-v0)


def measure(step_fn: Callable[[], int], seconds: float) -> tuple[float, float]:
    """Run ``step_fn`` (returns env steps done) for ``seconds``; ``(steps/s, cpu cores used)``."""
    steps = 0
    w0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - w0 < seconds:
        steps += step_fn()
    wall = time.perf_counter() - w0
    return steps / wall, (time.process_time() - c0) / wall


def single(env_id: str, seed: int = 0) -> Callable[[], int]:
    env = gym.make(env_id)
    env.reset(seed=seed)
    env.action_space.seed(seed)

    def step() -> int:
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
        return 1

    return step


def vectorised(env_id: str, n: int, seed: int = 0) -> Callable[[], int]:
    envs = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync")
    envs.reset(seed=seed)
    envs.action_space.seed(seed)

    def step() -> int:
        envs.step(envs.action_space.sample())
        return n

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--no-highway", action="store_true", help="skip the anchor")
    args = parser.parse_args()
    print(f"CPU: {cpu_kind()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at start")  # fmt: skip
    rows = []
    for label, fn in [
        ("rlalign/Driving-v0 (1 env)", single("rlalign/Driving-v0")),
        ("rlalign/Driving-v0 (SyncVectorEnv x16)", vectorised("rlalign/Driving-v0", 16)),
        ("rlalign/DrivingContinuous-v0 (1 env)", single("rlalign/DrivingContinuous-v0")),
    ]:
        rate, cpu = measure(fn, args.seconds)
        rows.append((label, rate, cpu))
        print(f"{label:42s} {rate:10.0f} steps/s   CPU {cpu:.2f} cores   "
              f"({rate / max(cpu, 1e-9):.0f} steps per CPU-second)")  # fmt: skip
    if not args.no_highway:
        import highway_env  # noqa: F401  (anchor; pip install -e '.[bench]')

        rate_h, cpu_h = measure(single("highway-fast-v0"), max(args.seconds, 10.0))
        print(f"{'highway-env highway-fast-v0 (1 env)':42s} {rate_h:10.1f} steps/s   "
              f"CPU {cpu_h:.2f} cores   ({rate_h / max(cpu_h, 1e-9):.1f} steps per CPU-second)")  # fmt: skip
        for label, rate, _ in rows[:2]:
            print(f"ratio {label} / highway-fast-v0: {rate / rate_h:8.0f}x  (goal >= 100x)")
    void = [r[0] for r in rows if r[2] < 0.9]
    if void:
        print("WARNING: CPU use < 0.9 core for", ", ".join(void), "-> shared machine, figures void")
    print(f"numpy {np.__version__}, gymnasium {gym.__version__}")


if __name__ == "__main__":
    main()
