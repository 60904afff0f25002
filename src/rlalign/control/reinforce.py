"""REINFORCE with a learned baseline (Williams, 1992), on whole episodes.

Each update plays one complete episode in each of ``n_envs`` envs, pads them into ``(N, T)``
tensors with a mask, and takes one gradient step on

    G_t = rl.discounted_returns(r, gamma, mask, bootstrap=V(s_T) if the episode was cut by a
          time limit else 0)
    A_t = G_t - V(s_t)                                   (whitened over the batch: rl.whiten)
    L   = rl.policy_loss(kind="reinforce")  +  vf_coef * rl.value_loss(V, G)  -  ent_coef * H

The baseline ``V`` does not bias the gradient (it does not depend on the action) but lowers its
variance; the policy-loss term is the mean of ``-A_t log pi(a_t|s_t)`` over all steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rlalign.control.envs import env_factory
from rlalign.control.networks import ActorCritic, net_spec_for
from rlalign.control.normalize import ObsNormalizer
from rlalign.control.train_config import ReinforceConfig
from rlalign.control.training import Monitor, TrainResult
from rlalign.metrics import MetricsLogger
from rlalign.rl import discounted_returns, policy_loss, value_loss, whiten
from rlalign.runtime import torch_threads


def train_reinforce(
    env_id: str,
    cfg: ReinforceConfig,
    run_dir: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train REINFORCE-with-baseline on ``env_id``."""
    make_env = env_factory(env_id, cfg.env_kwargs)
    envs = [make_env() for _ in range(cfg.n_envs)]
    spec = net_spec_for(
        envs[0].observation_space, envs[0].action_space, cfg.hidden_sizes, cfg.activation,
        "reinforce", log_std_init=cfg.log_std_init, rescale_actions=cfg.rescale_actions,
    )  # fmt: skip
    threshold = envs[0].spec.reward_threshold if envs[0].spec is not None else None
    logger = MetricsLogger(run_dir) if run_dir is not None else None
    with torch_threads(cfg.torch_threads):
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        net = ActorCritic(spec)
        obs_norm = ObsNormalizer((spec.obs_dim,)) if cfg.normalize_obs else None
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, fused=True)
        result = TrainResult(net=net, obs_norm=obs_norm)
        monitor = Monitor(make_env, threshold, cfg, result, logger, progress)
        env_steps, first = 0, True
        monitor.begin()
        try:
            while True:
                seeds = [cfg.seed + i for i in range(len(envs))] if first else None
                first = False
                batch = _play(envs, net, obs_norm, gen, seeds)
                env_steps += batch["steps"]
                for ret in batch["episode_returns"]:
                    monitor.episode_done(ret)
                if cfg.anneal_lr:
                    frac = max(0.0, 1.0 - env_steps / cfg.total_steps)
                    optimizer.param_groups[0]["lr"] = cfg.learning_rate * max(frac, 0.05)
                stats = _update(cfg, net, optimizer, batch)
                if monitor.update(env_steps, stats):
                    break
        finally:
            monitor.close()
            for env in envs:
                env.close()
            if logger is not None:
                logger.close()
    return result


def _play(envs, net: ActorCritic, obs_norm, gen, seeds) -> dict:
    """One episode per env, stepped side by side; returns padded ``(N, T)`` tensors."""
    n = len(envs)
    obs = np.stack(
        [env.reset(seed=None if seeds is None else seeds[i])[0] for i, env in enumerate(envs)]
    ).astype(np.float32)
    alive = np.ones(n, dtype=bool)
    steps: list[dict] = []
    rewards_total = np.zeros(n)
    truncated = np.zeros(n, dtype=bool)
    final_obs = np.zeros_like(obs)
    while alive.any():
        if obs_norm is not None:
            # only the envs still playing: an ended episode's last observation, repeated until
            # the longest one ends, would pull the statistics towards its end state
            obs_norm.rms.update(obs[alive])
        x = obs_norm(obs) if obs_norm is not None else obs
        x_t = torch.from_numpy(x)
        with torch.inference_mode():
            a = net.sample(net.policy(x_t), gen)
        env_a = net.to_env_actions(a)
        r = np.zeros(n, dtype=np.float32)
        m = alive.astype(np.float32)
        for i in np.flatnonzero(alive):
            o, ri, term, trunc, _ = envs[i].step(env_a[i])
            r[i] = ri
            rewards_total[i] += ri
            obs[i] = o
            if term or trunc:
                alive[i] = False
                truncated[i] = bool(trunc and not term)
                final_obs[i] = o
        steps.append(
            {"obs": x_t, "act": a, "rew": torch.from_numpy(r), "mask": torch.from_numpy(m)}
        )
    final = obs_norm(final_obs) if obs_norm is not None else final_obs
    return {
        "obs": torch.stack([s["obs"] for s in steps], dim=1),  # (N, T, D)
        "act": torch.stack([s["act"] for s in steps], dim=1),
        "rew": torch.stack([s["rew"] for s in steps], dim=1),
        "mask": torch.stack([s["mask"] for s in steps], dim=1),
        "final_obs": torch.from_numpy(np.asarray(final, dtype=np.float32)),
        "truncated": torch.from_numpy(truncated.astype(np.float32)),
        "steps": int(sum(float(s["mask"].sum()) for s in steps)),
        "episode_returns": rewards_total.tolist(),
    }


def _update(cfg: ReinforceConfig, net: ActorCritic, optimizer, batch: dict) -> dict[str, float]:
    obs, act, rew, mask = batch["obs"], batch["act"], batch["rew"], batch["mask"]
    with torch.no_grad():
        bootstrap = batch["truncated"] * net.value(batch["final_obs"])
    returns = discounted_returns(rew, cfg.gamma, mask, bootstrap=bootstrap)
    out = net.policy(obs)
    logp = net.log_prob(out, act) * mask
    values = net.value(obs)
    adv = returns - values.detach()
    if cfg.whiten_advantages and mask.sum() > 1:
        adv = whiten(adv, mask)
    pg, _ = policy_loss(logp, None, adv, mask, kind="reinforce", loss_type="dapo")
    vl = value_loss(values, None, returns, mask)
    ent = net.entropy(out, mask)
    loss = pg + cfg.vf_coef * vl - cfg.ent_coef * ent
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
    optimizer.step()
    return {
        "policy_loss": float(pg.detach()),
        "value_loss": float(vl.detach()),
        "entropy": float(ent.detach()),
    }
