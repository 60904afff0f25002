"""PPO for any Gymnasium env with Discrete or Box actions (Schulman et al., 2017).

One update, top to bottom (every optimised number comes from :mod:`rlalign.rl`):

1. Roll out ``n_steps`` in each of ``n_envs`` vectorised envs with the current policy,
   normalising observations (running mean/std) and scaling rewards (running std of the
   discounted return). A time-limit truncation is bootstrapped: ``r_t += gamma V(s_final)``
   (:func:`bootstrap_time_limits`). With gSDE (``use_sde``, Box actions) each env's noise
   matrix is drawn at the rollout's start and again every ``sde_sample_freq`` steps.
2. Advantages and returns by GAE: ``rl.gae(rewards, values, gamma, lam, last_value, dones)``.
3. ``num_iterations`` passes over shuffled minibatches minimising
   ``L = rl.policy_loss(kind="ppo") + vf_coef * rl.value_loss - ent_coef * H``, with the
   advantages whitened per minibatch (``rl.whiten``) and gradients clipped to
   ``max_grad_norm``. ``target_kl`` stops the epochs early when the policy moved too far.

Between updates (a rollout boundary) the run can be checkpointed: every ``save_every`` env
steps, at the end, and when SIGTERM/SIGINT arrives (see :mod:`rlalign.control.checkpointing`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlalign.checkpoint import rng_state, set_rng_state
from rlalign.control import checkpointing
from rlalign.control.envs import env_factory
from rlalign.control.networks import ActorCritic, net_spec_for
from rlalign.control.normalize import ObsNormalizer, RewardScaler
from rlalign.control.train_config import PPOConfig
from rlalign.control.training import Monitor, TrainResult
from rlalign.control.vec import EnvBatch
from rlalign.errors import NonFiniteLossError
from rlalign.metrics import MetricsLogger
from rlalign.rl import gae, policy_loss, value_loss, whiten
from rlalign.runtime import torch_threads


def train_ppo(
    env_id: str,
    cfg: PPOConfig,
    run_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = False,
) -> TrainResult:
    """Train a PPO agent on ``env_id``; metrics and checkpoints go to ``run_dir`` when given.

    With ``resume``, the newest checkpoint of ``run_dir`` (if any) is loaded and training
    continues from it exactly.
    """
    make_env = env_factory(env_id, cfg.env_kwargs)
    probe = make_env()
    spec = net_spec_for(
        probe.observation_space,
        probe.action_space,
        cfg.hidden_sizes,
        cfg.activation,
        "ppo",
        exploration="gsde" if cfg.use_sde else "gaussian",
        log_std_init=cfg.log_std_init,
        rescale_actions=cfg.rescale_actions,
    )
    threshold = probe.spec.reward_threshold if probe.spec is not None else None
    probe.close()
    with torch_threads(cfg.torch_threads):
        torch.manual_seed(cfg.seed)
        net = ActorCritic(spec)
        obs_norm = ObsNormalizer((spec.obs_dim,)) if cfg.normalize_obs else None
        result = TrainResult(net=net, obs_norm=obs_norm)
        trainer = _PPO(env_id, make_env, cfg, net, obs_norm, result, run_dir)
        found = checkpointing.resumable(run_dir) if (resume and run_dir is not None) else None
        if found is not None:
            trainer.load(found)
            result.resumed_from = str(found)
        logger = None
        if run_dir is not None:
            logger = MetricsLogger(run_dir, resume_step=trainer.env_steps if found else None)
        trainer.monitor = monitor = trainer.make_monitor(threshold, logger, progress)
        if found is not None:
            monitor.load_state_dict(trainer.loaded["monitor"], trainer.loaded_best)
        try:
            with checkpointing.StopSignals() as signals:
                trainer.run(signals)
        finally:
            trainer.envs.close()
            monitor.close()
            if logger is not None:
                logger.close()
    return result


class _PPO:
    """The PPO loop with everything it reads between updates (what a checkpoint holds)."""

    def __init__(
        self,
        env_id: str,
        make_env,
        cfg: PPOConfig,
        net: ActorCritic,
        obs_norm: ObsNormalizer | None,
        result: TrainResult,
        run_dir: str | Path | None,
    ) -> None:
        self.env_id, self.make_env, self.cfg = env_id, make_env, cfg
        self.net, self.obs_norm, self.result = net, obs_norm, result
        self.run_dir = run_dir
        n = cfg.n_envs
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.envs = EnvBatch(make_env, n)
        # fused: one kernel for all parameters (the per-tensor loop dominates for tiny MLPs).
        self.optimizer = torch.optim.Adam(
            net.parameters(), lr=cfg.learning_rate, eps=1e-5, fused=True
        )
        self.scaler = RewardScaler(n, cfg.gamma) if cfg.normalize_reward else None
        result.reward_scaler = self.scaler  # its statistics are saved with the policy
        self.num_updates = math.ceil(cfg.total_steps / (n * cfg.n_steps))
        self.update = 0  # index of the next update
        self.env_steps = 0
        self.finished = False
        self.ep_ret = np.zeros(n)
        self.ep_len = np.zeros(n, dtype=np.int64)
        self.started = False  # envs reset (a fresh run) or restored (a resumed one)
        self.monitor: Monitor | None = None
        self.loaded: dict[str, Any] = {}
        self.loaded_best: dict | None = None
        self.last_saved = -1

    def make_monitor(self, threshold, logger, progress) -> Monitor:
        return Monitor(self.make_env, threshold, self.cfg, self.result, logger, progress)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        assert self.monitor is not None
        return {
            "algo": "ppo",
            "env_id": self.env_id,
            "step": self.env_steps,
            "update": self.update,
            "finished": self.finished,
            "optimizer": self.optimizer.state_dict(),
            "obs_norm": self.obs_norm.state_dict() if self.obs_norm is not None else None,
            "reward_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "generator": self.gen.get_state(),
            "rng": rng_state(),
            "envs": self.envs.state_dict(),
            "episode_return": torch.from_numpy(self.ep_ret.copy()),
            "episode_length": torch.from_numpy(self.ep_len.copy()),
            "monitor": self.monitor.state_dict(),
        }

    def save(self) -> None:
        if self.run_dir is None or self.env_steps == self.last_saved:
            return
        assert self.monitor is not None
        checkpointing.save(
            self.run_dir,
            self.env_steps,
            self.net,
            self.state_dict(),
            self.monitor.best_net() if self.cfg.keep_best else None,
            self.cfg.keep_checkpoints,
        )
        self.last_saved = self.env_steps

    def load(self, path: Path) -> None:
        state = checkpointing.load(path, self.net, "ppo", self.env_id)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.obs_norm is not None:
            self.obs_norm.load_state_dict(state["obs_norm"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["reward_scaler"])
        self.gen.set_state(state["generator"])
        self.envs.load_state_dict(state["envs"])
        self.ep_ret = state["episode_return"].numpy().copy()
        self.ep_len = state["episode_length"].numpy().copy()
        self.update = int(state["update"])
        self.env_steps = self.last_saved = int(state["step"])
        self.finished = bool(state["finished"])
        self.started = True
        self.loaded = state
        if state["monitor"]["best"] is not None:
            best = ActorCritic(self.net.spec)  # (its random init draws from torch's generator)
            if checkpointing.load_best(path, best):
                self.loaded_best = best.state_dict()
        set_rng_state(state["rng"])  # last: nothing after this may draw before the next rollout

    # ------------------------------------------------------------------ the loop
    def norm(self, o: np.ndarray, update: bool = False) -> torch.Tensor:
        o = np.asarray(o, dtype=np.float32)
        return torch.from_numpy(self.obs_norm(o, update) if self.obs_norm is not None else o)

    def final_values(self, final_obs, envs: np.ndarray) -> np.ndarray:
        """``V(s_final)`` of the observations the given envs ended their episodes on."""
        final = np.stack([final_obs[i] for i in envs])
        with torch.inference_mode():
            return self.net.value(self.norm(final)).numpy()

    def run(self, signals: checkpointing.StopSignals) -> None:
        cfg, net, monitor = self.cfg, self.net, self.monitor
        assert monitor is not None
        n, T = cfg.n_envs, cfg.n_steps
        obs_dim = net.spec.obs_dim
        act_shape = () if net.discrete else (net.spec.n_actions,)
        obs_b = torch.zeros(T, n, obs_dim)
        act_b = torch.zeros((T, n, *act_shape), dtype=torch.long if net.discrete else torch.float32)
        logp_b = torch.zeros(T, n)
        val_b = torch.zeros(T, n)
        rew_b = torch.zeros(T, n)
        done_b = torch.zeros(T, n)
        batch = n * T
        monitor.begin()
        if not self.started:
            self.envs.reset(seed=cfg.seed)
            self.started = True
        while not self.finished and self.update < self.num_updates:
            if cfg.anneal_lr:
                for group in self.optimizer.param_groups:
                    group["lr"] = cfg.learning_rate * (1.0 - self.update / self.num_updates)
            # ---- 1. rollout
            sde_matrices = None
            for t in range(T):
                if net.sde and (
                    t == 0 or (cfg.sde_sample_freq > 0 and t % cfg.sde_sample_freq == 0)
                ):
                    # New gSDE noise at each rollout's start (so a checkpoint, taken between
                    # rollouts, needs none of it) and every sde_sample_freq steps.
                    sde_matrices = net.sample_sde_matrices(n, self.gen)
                x = self.norm(self.envs.obs, update=True)
                with torch.inference_mode():
                    out = net.policy(x)
                    a = net.sample(out, self.gen, sde_matrices)
                    logp_b[t] = net.log_prob(out, a)
                    val_b[t] = net.value(x)
                step = self.envs.step(net.to_env_actions(a))
                r, term, trunc = step.rewards, step.terminated, step.truncated
                if not np.all(np.isfinite(r)):
                    i = int(np.flatnonzero(~np.isfinite(r))[0])
                    raise NonFiniteLossError(
                        f"env {i} returned reward {r[i]} at environment step "
                        f"{self.env_steps + (t + 1) * n}; stopped before learning from it; "
                        f"last good checkpoint: {self._last_checkpoint()}"
                    )
                done = term | trunc
                self.ep_ret += r
                self.ep_len += 1
                for i in np.flatnonzero(done):
                    monitor.episode_done(self.ep_ret[i], self.ep_len[i], step.final_info[i])
                self.ep_ret[done] = 0.0
                self.ep_len[done] = 0
                scaler = self.scaler
                r_train = bootstrap_time_limits(
                    scaler(r, done) if scaler is not None else r,
                    term,
                    trunc,
                    cfg.gamma,
                    partial(self.final_values, step.final_obs),
                )
                obs_b[t], act_b[t] = x, a
                rew_b[t] = torch.from_numpy(np.asarray(r_train, dtype=np.float32))
                done_b[t] = torch.from_numpy(done.astype(np.float32))
            self.env_steps += batch
            self.update += 1
            with torch.inference_mode():
                last_value = net.value(self.norm(self.envs.obs))
            # ---- 2. GAE (time axis last)
            adv, ret = gae(
                rew_b.T, val_b.T, cfg.gamma, cfg.lam, last_value=last_value, dones=done_b.T
            )
            # ---- 3. optimise
            try:
                stats = _optimise(
                    cfg, net, self.optimizer, obs_b, act_b, logp_b, val_b, adv.T, ret.T
                )
            except FloatingPointError as exc:
                raise NonFiniteLossError(
                    f"{exc} in update {self.update} (environment step {self.env_steps}); "
                    f"stopped before applying it; last good checkpoint: {self._last_checkpoint()} "
                    "(try a lower learning_rate or max_grad_norm)"
                ) from None
            stats["learning_rate"] = self.optimizer.param_groups[0]["lr"]
            self.finished = monitor.update(self.env_steps, stats) or (
                self.update >= self.num_updates
            )
            if self.finished or signals.received is not None or self._save_due():
                self.save()
            if signals.received is not None and not self.finished:
                self.result.interrupted_by = signals.received
                return
        self.save()  # a resumed, already finished run: nothing new, keeps the final checkpoint

    def _last_checkpoint(self) -> str:
        found = checkpointing.latest(self.run_dir) if self.run_dir is not None else None
        return str(found) if found is not None else "none"

    def _save_due(self) -> bool:
        every = self.cfg.save_every
        return every is not None and self.env_steps // every > max(self.last_saved, 0) // every


def bootstrap_time_limits(
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
    final_values: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    r"""The rewards PPO learns from when a time limit cut some episodes short.

    .. math::
        r'_i = \begin{cases} r_i + \gamma\, V(s'_i) & \text{env } i \text{ truncated and not
        terminated} \\ r_i & \text{otherwise} \end{cases}

    where :math:`s'_i` is the observation env ``i`` ended its episode on. A time limit is not
    a property of the task: the return would have continued, so the value of the state
    reached stands in for it. A terminated episode's return truly ends there, so nothing is
    added. GAE then treats the step as done (no bootstrap across the reset), and its TD error
    is :math:`r'_i - V(s_i) = r_i + \gamma V(s'_i) - V(s_i)`, the one-step error the
    uncut episode would have had.

    Args:
        rewards: ``(n,)`` rewards of one vectorised step (scaled, when the run scales them).
        terminated: ``(n,)`` bool, the episode reached a terminal state.
        truncated: ``(n,)`` bool, the episode hit its time limit.
        gamma: the discount factor.
        final_values: ``final_values(envs)`` returns ``V(s')`` for the env indices ``envs``
            (called once, only when some env needs it: the value network runs on those rows).

    Returns:
        ``(n,)`` float64: a new array, ``rewards`` is not modified.
    """
    out = np.array(rewards, dtype=np.float64)
    cut = np.flatnonzero(truncated & ~terminated)
    if cut.size:
        out[cut] += gamma * final_values(cut)
    return out


def _optimise(cfg, net, optimizer, obs_b, act_b, logp_b, val_b, adv_b, ret_b) -> dict[str, float]:
    """``num_iterations`` passes of minibatch steps on one rollout; returns mean statistics."""
    N = obs_b.shape[0] * obs_b.shape[1]
    obs = obs_b.reshape(N, -1)
    act = act_b.reshape(N, *act_b.shape[2:])
    old_logp, old_v = logp_b.reshape(N), val_b.reshape(N)
    adv, ret = adv_b.reshape(N), ret_b.reshape(N)
    mb = min(cfg.minibatch_size, N)
    sums: dict[str, float] = {}
    count = 0
    for _epoch in range(cfg.num_iterations):
        perm = torch.randperm(N)
        kl_stop = False
        for start in range(0, N - mb + 1, mb):
            idx = perm[start : start + mb]
            out = net.policy(obs[idx])
            logp = net.log_prob(out, act[idx])
            values = net.value(obs[idx])
            a = whiten(adv[idx]) if mb > 1 else adv[idx]
            # A flat minibatch is one row of mb actions; "dapo" = mean over them.
            pg, st = policy_loss(
                logp[None], old_logp[idx][None], a[None], kind="ppo", loss_type="dapo",
                clip_eps=cfg.epsilon,
            )  # fmt: skip
            vl = value_loss(
                values[None], old_v[idx][None], ret[idx][None], clip_eps=cfg.cliprange_value
            )
            ent = net.entropy(out)
            loss = pg + cfg.vf_coef * vl - cfg.ent_coef * ent
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
            # Never apply an update computed from NaN/inf (the weights stay the last good ones).
            if not bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):
                raise FloatingPointError(f"loss {float(loss):.4g} / gradient norm is not finite")
            optimizer.step()
            for k, v in (
                ("policy_loss", pg),
                ("value_loss", vl),
                ("entropy", ent),
                ("approx_kl", st["approx_kl"]),
                ("clip_fraction", st["clip_fraction"]),
            ):
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            count += 1
            if cfg.target_kl is not None and float(st["approx_kl"]) > cfg.target_kl:
                kl_stop = True
                break
        if kl_stop:
            break
    return {k: v / max(count, 1) for k, v in sums.items()}
