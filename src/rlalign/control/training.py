"""What the PPO and REINFORCE trainers share: evaluation schedule, logging, the result record."""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from rlalign.control.evaluate import evaluate
from rlalign.control.networks import ActorCritic
from rlalign.control.normalize import ObsNormalizer, RewardScaler
from rlalign.control.policy_io import Agent
from rlalign.metrics import MetricsLogger

EVAL_SEED_OFFSET = 1_000_000  # evaluation worlds never coincide with training worlds


def eval_seed(seed: int) -> int:
    """First seed of the final evaluation episodes of a run with this ``seed``."""
    return EVAL_SEED_OFFSET + 1000 * seed


def selection_seed(seed: int) -> int:
    """First seed of the evaluations *during* training (they pick the best policy, so they
    must not reuse the final evaluation's episodes: that would bias the reported figure)."""
    return 2 * EVAL_SEED_OFFSET + 1000 * seed


@dataclass
class TrainResult:
    """What a training run produced (the caller saves the policy and writes result.json)."""

    net: ActorCritic
    obs_norm: ObsNormalizer | None
    reward_scaler: RewardScaler | None = None
    env_steps: int = 0
    env_steps_to_solve: int | None = None
    train_seconds_to_solve: float | None = None
    evals: list[dict[str, float]] = field(default_factory=list)
    wall_seconds: float = 0.0
    train_seconds: float = 0.0  # wall time minus time spent in evaluations
    updates: int = 0
    best_eval: dict[str, float] | None = None  # set when the best evaluated policy was kept
    interrupted_by: int | None = None  # the signal (SIGTERM/SIGINT) that stopped the run
    resumed_from: str | None = None  # the checkpoint the run continued from
    wall_seconds_before: float = 0.0  # wall time spent training before the resume

    def agent(self, meta: dict[str, Any] | None = None) -> Agent:
        return Agent(self.net, self.obs_norm, meta or {}, deterministic=True)


class Monitor:
    """Evaluation on schedule, the first step that reaches the threshold, logs and progress.

    Its state (:meth:`state_dict`) travels in checkpoints, so a resumed run evaluates at the same
    steps, keeps the same best policy and logs the same rows.
    """

    def __init__(
        self,
        make_env: Callable[[], gym.Env],
        threshold: float | None,
        cfg: Any,
        result: TrainResult,
        logger: MetricsLogger | None,
        progress: bool,
    ) -> None:
        self.make_env = make_env
        self.threshold = threshold
        self.cfg = cfg
        self.result = result
        self.logger = logger
        self.progress = progress
        self.recent: deque[float] = deque(maxlen=20)
        self.recent_lengths: deque[int] = deque(maxlen=20)
        # Collisions of recent training episodes (envs that report info["collision"] only).
        self.recent_collisions: deque[bool] = deque(maxlen=100)
        self.next_eval = cfg.eval_every
        self.start = time.perf_counter()
        self.eval_time = 0.0
        self.seconds_before = 0.0  # training / wall seconds of the run before a resume
        self.wall_before = 0.0
        self.bar: Any = None
        self.last_eval: float | None = None
        # (eval return, env steps, weights, obs normaliser) of the best evaluation so far.
        self.best: tuple[float, int, dict, ObsNormalizer | None] | None = None

    def begin(self) -> None:
        """Start the clock (setup -- env construction, imports, the optimiser -- excluded)."""
        from tqdm.auto import tqdm

        self.start = time.perf_counter()
        self.eval_time = 0.0
        self.bar = tqdm(
            total=self.cfg.total_steps,
            initial=self.result.env_steps,
            unit="step",
            disable=not self.progress,
            leave=False,
        )

    def episode_done(self, ret: float, length: int = 0, info: dict[str, Any] | None = None) -> None:
        self.recent.append(float(ret))
        self.recent_lengths.append(int(length))
        if info is not None and "collision" in info:
            self.recent_collisions.append(bool(info["collision"]))

    def elapsed_train(self) -> float:
        return self.seconds_before + time.perf_counter() - self.start - self.eval_time

    def update(self, env_steps: int, stats: dict[str, float]) -> bool:
        """Record an update; evaluate when due. Returns True when training should stop."""
        res = self.result
        if self.bar is not None:
            self.bar.update(env_steps - res.env_steps)
        res.env_steps = env_steps
        res.updates += 1
        row = dict(stats)
        if self.recent:
            row["episode_return"] = float(np.mean(self.recent))
            row["episode_length"] = float(np.mean(self.recent_lengths))
        if self.recent_collisions:
            row["collision_rate"] = float(np.mean(self.recent_collisions))
        row["train_seconds"] = self.elapsed_train()
        stop = False
        if env_steps >= self.next_eval or env_steps >= self.cfg.total_steps:
            while self.next_eval <= env_steps:
                self.next_eval += self.cfg.eval_every
            t0 = time.perf_counter()
            stats_eval = evaluate(
                self.make_env, res.agent(), self.cfg.eval_episodes, selection_seed(self.cfg.seed)
            )
            ev = float(np.mean(stats_eval.returns))
            if self.best is None or ev > self.best[0]:
                self.best = (
                    ev,
                    env_steps,
                    copy.deepcopy(res.net.state_dict()),
                    copy.deepcopy(res.obs_norm),
                )
            self.eval_time += time.perf_counter() - t0
            self.last_eval = ev
            row["eval_return"] = ev
            row["eval_episode_length"] = float(np.mean(stats_eval.lengths))
            if stats_eval.is_driving:
                row["eval_collision_rate"] = float(np.mean(stats_eval.collisions))
            res.evals.append({"env_steps": env_steps, "return": ev})
            if self.threshold is not None and ev >= self.threshold:
                if res.env_steps_to_solve is None:
                    res.env_steps_to_solve = env_steps
                    res.train_seconds_to_solve = self.elapsed_train()
                stop = bool(self.cfg.stop_at_threshold)
        if self.logger is not None:
            self.logger.log(env_steps, **row)
        post = {"ret": f"{row.get('episode_return', float('nan')):.1f}"}
        if self.last_eval is not None:
            post["eval"] = f"{self.last_eval:.1f}"
        if self.bar is not None:
            self.bar.set_postfix(post, refresh=False)
        return stop or env_steps >= self.cfg.total_steps

    def best_net(self) -> ActorCritic | None:
        """A copy of the network holding the best evaluated weights (None before any)."""
        if self.best is None:
            return None
        net = copy.deepcopy(self.result.net)
        net.load_state_dict(self.best[2])
        return net

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`update` reads, as weights_only-loadable values (the best weights
        themselves are saved beside it as safetensors, see :meth:`best_net`)."""
        res = self.result
        best = None
        if self.best is not None:
            ev, steps, _, norm = self.best
            best = {"return": ev, "env_steps": steps}
            if norm is not None:
                best["obs_norm"] = norm.state_dict()
        return {
            "recent": list(self.recent),
            "recent_lengths": list(self.recent_lengths),
            "recent_collisions": list(self.recent_collisions),
            "next_eval": self.next_eval,
            "last_eval": self.last_eval,
            "best": best,
            "train_seconds": self.elapsed_train(),
            "wall_seconds": self.wall_before + time.perf_counter() - self.start,
            "result": {
                "env_steps": res.env_steps,
                "updates": res.updates,
                "env_steps_to_solve": res.env_steps_to_solve,
                "train_seconds_to_solve": res.train_seconds_to_solve,
                "evals": [dict(e) for e in res.evals],
            },
        }

    def load_state_dict(self, state: dict[str, Any], best_weights: dict | None) -> None:
        self.recent.extend(state["recent"])
        self.recent_lengths.extend(state["recent_lengths"])
        self.recent_collisions.extend(state["recent_collisions"])
        self.next_eval = int(state["next_eval"])
        self.last_eval = state["last_eval"]
        self.seconds_before = float(state["train_seconds"])
        self.wall_before = float(state["wall_seconds"])
        self.result.wall_seconds_before = self.wall_before
        best = state["best"]
        if best is not None and best_weights is not None:
            norm = None
            if "obs_norm" in best and self.result.obs_norm is not None:
                norm = copy.deepcopy(self.result.obs_norm)
                norm.load_state_dict(best["obs_norm"])
            self.best = (float(best["return"]), int(best["env_steps"]), best_weights, norm)
        res = self.result
        saved = state["result"]
        res.env_steps = int(saved["env_steps"])
        res.updates = int(saved["updates"])
        res.env_steps_to_solve = saved["env_steps_to_solve"]
        res.train_seconds_to_solve = saved["train_seconds_to_solve"]
        res.evals = [dict(e) for e in saved["evals"]]

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        res = self.result
        if getattr(self.cfg, "keep_best", False) and self.best is not None:
            # Like SB3's EvalCallback best_model: keep the policy that evaluated best.
            ev, steps, weights, norm = self.best
            res.net.load_state_dict(weights)
            if norm is not None and res.obs_norm is not None:
                res.obs_norm.rms = norm.rms
            res.best_eval = {"env_steps": steps, "return": ev}
        self.result.wall_seconds = self.wall_before + time.perf_counter() - self.start
        self.result.train_seconds = self.elapsed_train()
