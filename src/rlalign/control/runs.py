"""A training run on disk, and evaluating / rendering a saved policy (the CLI's library API).

``train_run`` writes into ``out_dir``: ``config.yaml`` (the resolved config), ``metrics.jsonl``
(+ TensorBoard events), ``policy.safetensors`` + ``policy.json`` and ``result.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rlalign.checkpoint import checkpoint_root, latest_checkpoint
from rlalign.config import dump_config
from rlalign.control.baselines import BASELINES, make_baseline
from rlalign.control.checkpointing import has_checkpoints
from rlalign.control.envs import check_env_id, env_factory, is_driving
from rlalign.control.evaluate import evaluate
from rlalign.control.lm_driver import LMDriver
from rlalign.control.policies import resolve_policy
from rlalign.control.policy_io import save_policy
from rlalign.control.ppo import train_ppo
from rlalign.control.reinforce import train_reinforce
from rlalign.control.train_config import PPOConfig, ReinforceConfig
from rlalign.control.training import eval_seed
from rlalign.errors import UserError
from rlalign.io import atomic_write_json
from rlalign.rundir import locked_run_directory, refuse_foreign_directory, remove_run_outputs
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
    force: bool = False,
) -> dict[str, Any]:
    """Train, save the policy, evaluate it (and the baselines for the driving envs); the run's
    report.html is :func:`rlalign.report.car.write_run_report`'s.

    With ``resume``, continue from the newest checkpoint in ``out_dir``; without it, a directory
    holding an earlier run's results is refused unless ``force`` (which deletes them), and one
    holding files of no rlalign run is refused always. ``out_dir`` is locked while the run
    writes (:mod:`rlalign.rundir`). A run stopped by SIGTERM/SIGINT returns
    ``{"interrupted_by": signal, "env_steps": ..., "checkpoint": ...}`` after writing its
    checkpoint, without evaluating.
    """
    spec = check_env_id(env_id)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    if algo not in ("ppo", "reinforce"):
        raise UserError(f"unknown algorithm {algo!r}; choose 'ppo' or 'reinforce'")
    if resume and algo != "ppo":
        raise UserError("--resume: checkpoints are written by --algo ppo only")
    refuse_foreign_directory(out, key="--out")
    with locked_run_directory(out):
        if resume:
            _check_same_config(cfg, out / "config.yaml")
            _check_not_behind(cfg, out)
        else:
            _start_over(out, force)
        dump_config(cfg, out / "config.yaml")
        return _train(env_id, algo, cfg, out, spec, progress, baselines, resume)


# What a run writes in its directory; --force removes an earlier run's before starting over.
RUN_OUTPUTS = (
    "checkpoints",
    "metrics.jsonl",
    "tensorboard",
    "policy.safetensors",
    "policy.json",
    "result.json",
    "report.html",
    "plots",
    "episode.gif",
    "strip.png",
)


def _start_over(out: Path, force: bool) -> None:
    """Refuse to start on top of an earlier run's results (unless ``force``); clear them."""
    results = [
        n for n in ("checkpoints", "policy.safetensors", "result.json") if (out / n).exists()
    ]
    if results and not force:
        how = "pass --resume to continue it, " if has_checkpoints(out) else ""
        raise UserError(
            f"{out} already holds a training run ({', '.join(results)}); {how}--force to start "
            "over (its results are deleted), or choose another --out"
        )
    remove_run_outputs(out, RUN_OUTPUTS)


def _train(
    env_id: str,
    algo: str,
    cfg: PPOConfig | ReinforceConfig,
    out: Path,
    spec: Any,
    progress: bool,
    baselines: bool,
    resume: bool,
) -> dict[str, Any]:
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
    # A key the run's config.yaml lacks is newer than the run, which had the class default.
    default = type(cfg)().model_dump(mode="json")
    changed = sorted(
        k
        for k in set(saved) | set(now)
        if k != "total_steps" and saved.get(k, default.get(k)) != now.get(k)
    )
    if changed:
        first = changed[0]
        raise UserError(
            f"{path}: --resume with a different config ({', '.join(changed)}; e.g. {first}="
            f"{saved.get(first, default.get(first))!r} in the run, {now.get(first)!r} now); "
            "repeat the command line "
            "that started the run"
        )


def _check_not_behind(cfg: PPOConfig | ReinforceConfig, out: Path) -> None:
    """A resumed run cannot end before the step it has reached (nor record that it did)."""
    found = latest_checkpoint(out)
    if found is None:
        return
    done = int(found.name.rpartition("_")[2])
    if cfg.total_steps < done:
        raise UserError(
            f"--resume with total_steps={cfg.total_steps}, but the run in {out} is at "
            f"{done} environment steps ({found}) and cannot go back; give --steps {done} or more"
        )


def eval_policy(
    policy_dir: str | Path | None,
    episodes: int,
    seed: int,
    env_id: str | None = None,
    baseline: str | None = None,
) -> dict[str, Any]:
    """Evaluate a saved policy, a language-model driver or a baseline on episodes with seeds
    ``seed .. seed + episodes - 1`` (see :func:`evaluate_driver`)."""
    env_id, env_kwargs, policy, label = resolve_policy(policy_dir, env_id, baseline, seed)
    return {"env_id": env_id, "policy": label, "seed": seed,
            **evaluate_driver(policy, env_id, env_kwargs, episodes, seed)}  # fmt: skip


def evaluate_driver(
    policy: Any, env_id: str, env_kwargs: dict[str, Any], episodes: int, seed: int
) -> dict[str, Any]:
    """:func:`~rlalign.control.evaluate.evaluate`'s summary of ``policy`` on ``episodes``
    seeded episodes; a language model's adds ``invalid_actions_per_episode`` (replies that
    named no action; the car kept its speed)."""
    is_lm = isinstance(policy, LMDriver)
    # A language model drives every car at once: one sampler call per step.
    batch = episodes if is_lm else 32
    with torch_threads(1):
        stats = evaluate(env_factory(env_id, env_kwargs), policy, episodes, seed, batch=batch)
    result = stats.summary()
    if is_lm:
        result["invalid_actions_per_episode"] = policy.invalid_actions / episodes
        policy.close()
    return result
