"""PPO for any Gymnasium env with Discrete or Box actions (Schulman et al., 2017).

One update, top to bottom (every optimised number comes from :mod:`rlalign.rl`):

1. Roll out ``n_steps`` in each of ``n_envs`` vectorised envs with the current policy,
   normalising observations (running mean/std) and scaling rewards (running std of the
   discounted return). A time-limit truncation is bootstrapped: ``r_t += gamma V(s_final)``.
2. Advantages and returns by GAE: ``rl.gae(rewards, values, gamma, lam, last_value, dones)``.
3. ``n_epochs`` passes over shuffled minibatches minimising
   ``L = rl.policy_loss(kind="ppo") + vf_coef * rl.value_loss - ent_coef * H``, with the
   advantages whitened per minibatch (``rl.whiten``) and gradients clipped to
   ``max_grad_norm``. ``target_kl`` stops the epochs early when the policy moved too far.
"""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from rlalign.control.envs import env_factory
from rlalign.control.networks import ActorCritic, net_spec_for
from rlalign.control.normalize import ObsNormalizer, RewardScaler
from rlalign.control.train_config import PPOConfig
from rlalign.control.training import Monitor, TrainResult, torch_threads
from rlalign.metrics import MetricsLogger
from rlalign.rl import gae, policy_loss, value_loss, whiten


def train_ppo(
    env_id: str,
    cfg: PPOConfig,
    run_dir: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a PPO agent on ``env_id``; metrics go to ``run_dir/metrics.jsonl`` when given."""
    make_env = env_factory(env_id, cfg.env_kwargs)
    probe = make_env()
    spec = net_spec_for(
        probe.observation_space, probe.action_space, cfg.hidden_sizes, cfg.activation, "ppo"
    )
    threshold = probe.spec.reward_threshold if probe.spec is not None else None
    probe.close()
    logger = MetricsLogger(run_dir) if run_dir is not None else None
    with torch_threads(cfg.torch_threads):
        torch.manual_seed(cfg.seed)
        net = ActorCritic(spec)
        obs_norm = ObsNormalizer((spec.obs_dim,)) if cfg.normalize_obs else None
        result = TrainResult(net=net, obs_norm=obs_norm)
        monitor = Monitor(make_env, threshold, cfg, result, logger, progress)
        try:
            _loop(make_env, cfg, net, obs_norm, monitor)
        finally:
            monitor.close()
            if logger is not None:
                logger.close()
    return result


def _loop(
    make_env, cfg: PPOConfig, net: ActorCritic, obs_norm: ObsNormalizer | None, monitor: Monitor
) -> None:
    n, T = cfg.n_envs, cfg.n_steps
    gen = torch.Generator().manual_seed(cfg.seed)
    envs = gym.vector.SyncVectorEnv(
        [make_env] * n, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    # fused: one kernel for all parameters (the per-tensor loop dominates for tiny MLPs).
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, eps=1e-5, fused=True)
    scaler = RewardScaler(n, cfg.gamma) if cfg.normalize_reward else None
    monitor.result.reward_scaler = scaler  # its statistics are saved with the policy

    def norm(o: np.ndarray, update: bool = False) -> torch.Tensor:
        o = np.asarray(o, dtype=np.float32)
        return torch.from_numpy(obs_norm(o, update) if obs_norm is not None else o)

    obs_dim = net.spec.obs_dim
    act_shape = () if net.discrete else (net.spec.n_actions,)
    obs_b = torch.zeros(T, n, obs_dim)
    act_b = torch.zeros((T, n, *act_shape), dtype=torch.long if net.discrete else torch.float32)
    logp_b = torch.zeros(T, n)
    val_b = torch.zeros(T, n)
    rew_b = torch.zeros(T, n)
    done_b = torch.zeros(T, n)
    ep_ret = np.zeros(n)
    batch = n * T
    num_updates = math.ceil(cfg.total_steps / batch)
    env_steps = 0
    monitor.begin()
    try:
        obs, _ = envs.reset(seed=cfg.seed)
        for update in range(num_updates):
            if cfg.anneal_lr:
                for group in optimizer.param_groups:
                    group["lr"] = cfg.learning_rate * (1.0 - update / num_updates)
            # ---- 1. rollout
            for t in range(T):
                x = norm(obs, update=True)
                with torch.inference_mode():
                    out = net.actor(x)
                    a = net.sample(out, gen)
                    logp_b[t] = net.log_prob(out, a)
                    val_b[t] = net.value(x)
                obs, r, term, trunc, info = envs.step(net.to_env_actions(a))
                done = term | trunc
                ep_ret += r
                for i in np.flatnonzero(done):
                    monitor.episode_done(ep_ret[i])
                ep_ret[done] = 0.0
                r_train = scaler(r, done) if scaler is not None else r.astype(np.float64)
                cut = np.flatnonzero(trunc & ~term)
                if cut.size:
                    final = np.stack([info["final_obs"][i] for i in cut])
                    with torch.inference_mode():
                        r_train[cut] += cfg.gamma * net.value(norm(final)).numpy()
                obs_b[t], act_b[t] = x, a
                rew_b[t] = torch.from_numpy(np.asarray(r_train, dtype=np.float32))
                done_b[t] = torch.from_numpy(done.astype(np.float32))
            env_steps += batch
            with torch.inference_mode():
                last_value = net.value(norm(obs))
            # ---- 2. GAE (time axis last)
            adv, ret = gae(
                rew_b.T, val_b.T, cfg.gamma, cfg.gae_lambda, last_value=last_value, dones=done_b.T
            )
            stats = _optimise(cfg, net, optimizer, obs_b, act_b, logp_b, val_b, adv.T, ret.T)
            stats["learning_rate"] = optimizer.param_groups[0]["lr"]
            if monitor.update(env_steps, stats):
                break
    finally:
        envs.close()


def _optimise(cfg, net, optimizer, obs_b, act_b, logp_b, val_b, adv_b, ret_b) -> dict[str, float]:
    """``n_epochs`` of minibatch steps on one rollout; returns mean statistics."""
    N = obs_b.shape[0] * obs_b.shape[1]
    obs = obs_b.reshape(N, -1)
    act = act_b.reshape(N, *act_b.shape[2:])
    old_logp, old_v = logp_b.reshape(N), val_b.reshape(N)
    adv, ret = adv_b.reshape(N), ret_b.reshape(N)
    mb = min(cfg.minibatch_size, N)
    sums: dict[str, float] = {}
    count = 0
    for _epoch in range(cfg.n_epochs):
        perm = torch.randperm(N)
        kl_stop = False
        for start in range(0, N - mb + 1, mb):
            idx = perm[start : start + mb]
            out = net.actor(obs[idx])
            logp = net.log_prob(out, act[idx])
            values = net.value(obs[idx])
            a = whiten(adv[idx]) if mb > 1 else adv[idx]
            # A flat minibatch is one row of mb actions; "dapo" = mean over them.
            pg, st = policy_loss(
                logp[None], old_logp[idx][None], a[None], kind="ppo", loss_type="dapo",
                clip_eps=cfg.clip_eps,
            )  # fmt: skip
            vl = value_loss(values[None], old_v[idx][None], ret[idx][None], clip_eps=cfg.clip_value)
            ent = net.entropy(out)
            loss = pg + cfg.vf_coef * vl - cfg.ent_coef * ent
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
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
