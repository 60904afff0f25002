"""A training run on disk, and evaluating / rendering a saved policy (the CLI's library API).

``train_run`` writes into ``out_dir``: ``config.yaml`` (the resolved config), ``metrics.jsonl``
(+ TensorBoard events), ``policy.safetensors`` + ``policy.json`` and ``result.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rlalign import __version__
from rlalign.config import dump_config
from rlalign.control.baselines import BASELINES, make_baseline
from rlalign.control.checkpointing import has_checkpoints
from rlalign.control.envs import check_env_id, env_factory, is_driving
from rlalign.control.evaluate import BatchPolicy, evaluate
from rlalign.control.policy_io import Agent, load_policy, save_policy
from rlalign.control.train_config import PPOConfig, ReinforceConfig
from rlalign.control.training import eval_seed, torch_threads
from rlalign.errors import UserError
from rlalign.io import atomic_write_json
from rlalign.train.checkpoint import checkpoint_root


def train_run(
    env_id: str,
    algo: str,
    cfg: PPOConfig | ReinforceConfig,
    out_dir: str | Path,
    progress: bool = True,
    baselines: bool = True,
    resume: bool = False,
    report: bool = True,
) -> dict[str, Any]:
    """Train, save the policy, evaluate it (and the baselines for the driving envs).

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
        from rlalign.control.ppo import train_ppo

        res = train_ppo(env_id, cfg, run_dir=out, progress=progress, resume=resume)
    else:
        from rlalign.control.reinforce import train_reinforce

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
    if report:
        from rlalign.control.report import write_run_report

        write_run_report(out)
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


def resolve_policy(
    policy_dir: str | Path | None,
    env_id: str | None,
    baseline: str | None,
    seed: int = 0,
) -> tuple[str, dict[str, Any], BatchPolicy, str]:
    """``(env_id, env_kwargs, policy, label)`` for a saved policy directory or a baseline.

    A policy used on an env other than its own is a ``UserError``.
    """
    agent: Agent | None = None
    env_kwargs: dict[str, Any] = {}
    if policy_dir is not None:
        agent = load_policy(policy_dir, seed=seed)
        own = agent.env_id
        env_kwargs = dict(agent.meta.get("env_kwargs") or {})
        if env_id is not None and env_id != own:
            raise UserError(
                f"{policy_dir}: this policy was trained on {own!r}, not {env_id!r}; drop --env "
                f"or pass a policy trained on {env_id!r}"
            )
        env_id = own
    if env_id is None:
        raise UserError("give a policy directory or --env (to run a baseline without a policy)")
    check_env_id(env_id)
    make_env = env_factory(env_id, env_kwargs)
    probe = make_env()
    if agent is not None:
        _check_spaces(policy_dir, agent, probe)
    if baseline is not None and baseline != "learned":
        if not hasattr(probe.unwrapped, "obs_fields"):
            raise UserError(
                f"baseline {baseline!r} drives the rlalign driving envs only, not {env_id!r}"
            )
        if baseline not in BASELINES:
            raise UserError(
                f"unknown --policy {baseline!r}; choose learned, {', '.join(BASELINES)}"
            )
        policy: BatchPolicy = make_baseline(baseline, probe.unwrapped.cfg, seed)
        label = baseline
    elif agent is not None:
        policy, label = agent, f"{agent.meta.get('algo', 'learned')}"
    else:
        raise UserError("--policy learned needs a policy directory")
    probe.close()
    return env_id, env_kwargs, policy, label


def _check_spaces(policy_dir: Any, agent: Agent, env: Any) -> None:
    spec = agent.net.spec
    obs_shape = tuple(env.observation_space.shape or ())
    if obs_shape != (spec.obs_dim,):
        raise UserError(
            f"{policy_dir}: policy expects observations of shape ({spec.obs_dim},), "
            f"the env gives {obs_shape}"
        )
    n = getattr(env.action_space, "n", None)
    dims = tuple(getattr(env.action_space, "shape", ()) or ())
    if (spec.kind == "discrete" and n != spec.n_actions) or (
        spec.kind == "box" and dims != (spec.n_actions,)
    ):
        raise UserError(f"{policy_dir}: policy actions do not match the env's {env.action_space}")


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
