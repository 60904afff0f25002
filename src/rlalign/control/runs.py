"""A training run on disk, and evaluating / rendering a saved policy (the CLI's library API).

``train_run`` writes into ``out_dir``: ``config.yaml`` (the resolved config), ``metrics.jsonl``
(+ TensorBoard events), ``policy.safetensors`` + ``policy.json`` and ``result.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rlalign.checkpoint import checkpoint_root
from rlalign.config import dump_config
from rlalign.control.baselines import BASELINES, make_baseline
from rlalign.control.checkpointing import has_checkpoints
from rlalign.control.envs import check_env_id, env_factory, is_driving
from rlalign.control.evaluate import evaluate
from rlalign.control.policies import resolve_policy
from rlalign.control.policy_io import save_policy
from rlalign.control.ppo import train_ppo
from rlalign.control.reinforce import train_reinforce
from rlalign.control.train_config import PPOConfig, ReinforceConfig
from rlalign.control.training import eval_seed
from rlalign.errors import UserError
from rlalign.io import atomic_write_json
from rlalign.runtime import torch_threads
from rlalign.version import __version__


def train_run(
    env_id: str,
    algo: str,
    cfg: PPOConfig | ReinforceConfig,
    out_dir: str | Path,
    progress: bool = True,
    baselines: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Train, save the policy, evaluate it (and the baselines for the driving envs); the run's
    report.html is :func:`rlalign.report.car.write_run_report`'s.

    With ``resume``, continue from the newest checkpoint in ``out_dir``. A run stopped by
    SIGTERM/SIGINT returns ``{"interrupted_by": signal, "env_steps": ..., "checkpoint": ...}``
    after writing its checkpoint, without evaluating.
    """
    spec = check_env_id(env_id)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    if algo not in ("ppo", "reinforce"):
        raise UserError(f"unknown algorithm {algo!r}; choose 'ppo' or 'reinforce'")
    if resume:
        if algo != "ppo":
            raise UserError("--resume: checkpoints are written by --algo ppo only")
        _check_same_config(cfg, out / "config.yaml")
    elif has_checkpoints(out):
        raise UserError(
            f"{out} already holds checkpoints of a training run; pass --resume to continue it, "
            f"or choose another --out (or delete {out / 'checkpoints'} to start over)"
        )
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    t0 = time.perf_counter()
    if algo == "ppo":
        res = train_ppo(env_id, cfg, run_dir=out, progress=progress, resume=resume)
    else:
        res = train_reinforce(env_id, cfg, run_dir=out, progress=progress)
    if res.interrupted_by is not None:
        return {
            "interrupted_by": res.interrupted_by,
            "env_steps": res.env_steps,
            "checkpoint": str(checkpoint_root(out) / f"step_{res.env_steps}"),
        }
    meta = {"env_id": env_id, "env_kwargs": dict(cfg.env_kwargs), "algo": algo, "seed": cfg.seed}
    save_policy(out, res.net, res.obs_norm, meta, res.reward_scaler)
    agent = res.agent(meta)
    make_env = env_factory(env_id, cfg.env_kwargs)
    seed0 = eval_seed(cfg.seed)
    with torch_threads(cfg.torch_threads):  # tiny batches: extra threads only add overhead
        final = evaluate(make_env, agent, cfg.final_eval_episodes, seed0).summary()
    result: dict[str, Any] = {
        "env_id": env_id,
        "algo": algo,
        "seed": cfg.seed,
        "env_steps": res.env_steps,
        "reward_threshold": spec.reward_threshold,
        "env_steps_to_solve": res.env_steps_to_solve,
        "train_seconds_to_solve": res.train_seconds_to_solve,
        "final_eval_return": final["return"],
        "final_eval_return_std": final["return_std"],
        "eval_episodes": final["episodes"],
        "eval_seeds": [seed0, seed0 + final["episodes"] - 1],
        "wall_seconds": None,  # filled below, once evaluation is included
        "train_seconds": res.train_seconds,
        "evals": res.evals,
        "kept_best_eval": res.best_eval,
        "resumed_from": res.resumed_from,
        "rlalign_version": __version__,
    }
    if is_driving(env_id):
        for key in (
            "collision_rate",
            "arrival_rate",
            "mean_travel_time",
            "abrupt_brakes_per_episode",
            "red_lights_per_episode",
            "off_road_rate",
        ):
            result[key] = final[key]
        if baselines:
            cfg_world = make_env().unwrapped.cfg
            result["baselines"] = {
                name: evaluate(
                    make_env, make_baseline(name, cfg_world, seed0), final["episodes"], seed0
                ).summary()
                for name in BASELINES
            }
    # Wall time of the whole run: the training before a resume counts too.
    result["wall_seconds"] = time.perf_counter() - t0 + res.wall_seconds_before
    atomic_write_json(out / "result.json", result)
    return result


def _check_same_config(cfg: PPOConfig | ReinforceConfig, path: Path) -> None:
    """A resumed run must use the config it started with (``total_steps`` may grow)."""
    if not path.exists():
        return
    import yaml

    saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    now = cfg.model_dump(mode="json")
    changed = sorted(
        k for k in set(saved) | set(now) if k != "total_steps" and saved.get(k) != now.get(k)
    )
    if changed:
        first = changed[0]
        raise UserError(
            f"{path}: --resume with a different config ({', '.join(changed)}; e.g. {first}="
            f"{saved.get(first)!r} in the run, {now.get(first)!r} now); repeat the command line "
            "that started the run"
        )


def eval_policy(
    policy_dir: str | Path | None,
    episodes: int,
    seed: int,
    env_id: str | None = None,
    baseline: str | None = None,
) -> dict[str, Any]:
    env_id, env_kwargs, policy, label = resolve_policy(policy_dir, env_id, baseline, seed)
    with torch_threads(1):
        stats = evaluate(env_factory(env_id, env_kwargs), policy, episodes, seed)
    return {"env_id": env_id, "policy": label, "seed": seed, **stats.summary()}
