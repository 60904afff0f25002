"""rlalign from Python: one call per stage, the CLI's own code underneath.

::

    import rlalign

    sft = rlalign.sft(rlalign.SFTConfig(model="runs/pretrain/final", output_dir="runs/sft"),
                      train_dataset=my_dataset)             # a datasets.Dataset, rows, or a path
    rl = rlalign.align(rlalign.RLConfig(model=str(sft.final_dir), output_dir="runs/rl"),
                       reward_funcs=[my_reward])            # callables, or "file.py:fn" strings
    rl.final_dir, rl.metrics["reward_mean"]

Each call takes the stage's config (the class, a dict, or nothing) plus ``key=value`` keywords
on top of it, and what a Python user holds in memory:

- ``model`` / ``tokenizer``: a Hugging Face model and tokenizer (or directories). Objects are
  written to ``output_dir/inputs/model/`` with ``save_pretrained`` and the run reads them from
  there, so the run directory holds everything it was made from;
- ``train_dataset`` (and ``eval_dataset`` for the reward model): a ``datasets.Dataset``, a list
  of dicts, or a path in any format of :mod:`rlalign.data.tables`. Rows in memory are checked
  as a file's rows are (an error names ``the SFT data Dataset, row 3``) and written to
  ``output_dir/inputs/*.jsonl``;
- ``reward_funcs`` (RL): strings as in the CLI, and Python callables
  ``fn(prompts, completions, **fields) -> list[float]``. A string names a function that runs
  in a worker process under ``reward_timeout``. Callables score in this process, without a time
  limit, unless ``reward_timeout`` is given in the call and every callable can be imported by
  its module and name (a function at the top of a module, not of a notebook or ``__main__``):
  then they are sent to the worker by name, exactly as strings. ``config.yaml`` names an
  in-process callable ``python:NAME``: resume such a run with ``resume=True`` and the same
  callables.

The calls are :func:`pretrain`, :func:`sft`, :func:`reward` and :func:`align` (``rlalign rl``:
``rlalign.rl`` is the RL core's package), and :func:`control_train` for the car and other
Gymnasium envs (``rlalign control train``). A call returns a :class:`RunResult`. Mistakes raise :class:`rlalign.errors.UserError`
(:class:`~rlalign.errors.ConfigError` for a bad key), with the message the CLI prints. The
command line is a layer over these functions: ``rlalign sft key=value`` calls :func:`sft`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rlalign.config import Config, current_keys, load_config
from rlalign.control.runs import train_run
from rlalign.control.train_config import ALGOS, defaults_for
from rlalign.data.formats import load_preferences, load_prompts, load_sft
from rlalign.data.tables import read_rows
from rlalign.dist import RankInfo
from rlalign.errors import UserError
from rlalign.io import atomic_directory, write_jsonl
from rlalign.metrics import read_metrics
from rlalign.plugins import USER_MODULE_PREFIX
from rlalign.report.run_report import write_run_report
from rlalign.rewards.compose import IN_PROCESS, callable_name
from rlalign.rundir import lock_run_directory, lock_scope, refuse_foreign_directory
from rlalign.train.pretrain import PretrainConfig, run_pretrain
from rlalign.train.reward_model import RewardConfig, run_reward
from rlalign.train.rl import run_rl
from rlalign.train.rl_config import RLConfig
from rlalign.train.run import check_start
from rlalign.train.sft import SFTConfig, run_sft

__all__ = ["RunResult", "align", "control_train", "pretrain", "reward", "sft"]

C = TypeVar("C", bound=Config)
INPUTS = "inputs"


@dataclass(frozen=True)
class RunResult:
    """Where a stage's run is and how it ended.

    Attributes:
        output_dir: the run directory (config.yaml, metrics.jsonl, checkpoints/, report.html).
        final_dir: ``output_dir/final``, the trained model and tokenizer (``None`` when the run
            was interrupted before it wrote them).
        step: the optimizer steps done.
        metrics: the last value of every metric the run logged (``loss``, ``reward_mean``,
            ``eval_loss``, ...).
        eval_metrics: the held-out metrics of the run's last evaluation.
        interrupted_by: the signal that stopped the run, if one did (resume with
            ``resume=True``).
    """

    output_dir: Path
    final_dir: Path | None
    step: int
    metrics: dict[str, Any]
    eval_metrics: dict[str, float]
    interrupted_by: int | None = None


def _config(cls: type[C], config: C | Mapping[str, Any] | None, keys: dict[str, Any]) -> C:
    if isinstance(config, cls):
        base = config.model_dump(mode="python")
    elif config is None or isinstance(config, Mapping):
        base = dict(config or {})
    else:
        raise UserError(
            f"config must be a {cls.__name__}, a dict or None, got {type(config).__name__}"
        )
    # paths as text (a Path is what a user has); each layer by current names before merging
    keys = {k: str(v) if isinstance(v, Path) else v for k, v in keys.items()}
    return load_config(cls, None, [], defaults={**base, **current_keys(cls, keys)})


def _rows_of(source: Any) -> bool:
    """Whether ``source`` is rows in memory (a Dataset or a list), not a path."""
    return not isinstance(source, (str, Path))


def _last_metrics(output_dir: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for row in read_metrics(output_dir):
        merged.update(row)
    return merged


def _save_model(out: Path, model: Any, tokenizer: Any) -> str:
    """A model (and tokenizer) object written where the run reads it: ``inputs/model``."""
    if tokenizer is None:
        raise UserError("a model object needs its tokenizer: pass tokenizer=... as well")
    with atomic_directory(out / INPUTS / "model") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return str(out / INPUTS / "model")


def _run(
    cfg: Any,
    stage: Callable[..., Any],
    *,
    resume: bool,
    model: Any = None,
    tokenizer: Any = None,
    data: dict[str, tuple[Any, Callable[[Any], list[dict[str, Any]]]]] | None = None,
    **stage_kwargs: Any,
) -> RunResult:
    """Write the in-memory inputs into ``output_dir/inputs/``, run ``stage``, write the report.

    ``data`` maps a config key (``data``, ``eval_data``) to its rows in memory and the function
    that checks them and returns the rows to write (the format's own reader)."""
    out = Path(cfg.output_dir)
    updates: dict[str, Any] = {}
    to_write = {key: check(source) for key, (source, check) in (data or {}).items()}
    with lock_scope():
        rank = RankInfo.detect()
        if (model is not None or to_write) and rank.distributed:
            raise UserError(
                "a model object or rows in memory are for one process; under torchrun give "
                "the model directory and the data path"
            )
        if model is not None or to_write:
            # nothing is written over someone else's files, or over a run not to be replaced
            refuse_foreign_directory(out)
            check_start(cfg, resume)
            lock_run_directory(out)
            if model is not None:
                updates["model"] = _save_model(out, model, tokenizer)
                updates["tokenizer"] = None
            for key, rows in to_write.items():
                path = out / INPUTS / f"{key}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_jsonl(path, rows)
                updates[key] = str(path)
        if updates:
            cfg = cfg.model_copy(update=updates)
            cfg = type(cfg).model_validate(cfg.model_dump(mode="python"))
        result = stage(cfg, resume=resume, **stage_kwargs)
        if rank.is_main:
            write_run_report(out)
    final = result.final_dir if result.interrupted_by is None else None
    metrics = _last_metrics(out) if rank.is_main else {}
    return RunResult(
        out, final, result.step, metrics, dict(result.eval_metrics), result.interrupted_by
    )


def _model_args(model: Any, tokenizer: Any, keys: dict[str, Any]) -> tuple[Any, Any]:
    """``model``/``tokenizer`` given as directories become config keys; objects stay objects."""
    if isinstance(model, (str, Path)):
        keys["model"] = str(model)
        model = None
    if isinstance(tokenizer, (str, Path)):
        keys["tokenizer"] = str(tokenizer)
        tokenizer = None
    if tokenizer is not None and model is None:
        raise UserError("a tokenizer object needs its model object: pass model=... as well")
    return model, tokenizer


def _dataset(keys: dict[str, Any], key: str, source: Any, check: Callable[[Any], Any]):
    """A path goes to the config as it is; rows in memory are checked and written."""
    if source is None:
        return {}
    if not _rows_of(source):
        keys[key] = str(source)
        return {}
    keys.setdefault(key, "<in memory>")  # a required key has a value until the rows' path
    return {key: (source, check)}


def importable_name(fn: Any) -> str | None:
    """``module:function`` (or ``path/file.py:function``) when a worker process can import
    ``fn`` by that name (a function defined at the top of an importable module, or of a file
    rlalign loaded by its path), else ``None`` (a lambda, a closure, a function of
    ``__main__`` or of a notebook)."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or not name.isidentifier():
        return None
    try:
        found = getattr(importlib.import_module(module), name, None)
    except Exception:  # any failure means: not importable by name
        return None
    if found is not fn:
        return None
    if module.startswith(USER_MODULE_PREFIX):  # loaded from file.py:name; its module name
        file = getattr(sys.modules[module], "__file__", None)  # is this process's own
        return f"{file}:{name}" if file else None
    return f"{module}:{name}"


def _sft_rows(source: Any) -> list[dict[str, Any]]:
    return [{"messages": turns} for turns in load_sft(source)]


def _preference_rows(source: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in pair.items() if v is not None} for pair in load_preferences(source)]


def _prompt_rows(source: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "_where"} for row in load_prompts(source)]


def _corpus_rows(source: Any) -> list[dict[str, Any]]:
    rows = read_rows(source, what="corpus")
    for where, row in rows:
        if not isinstance(row.get("text"), str):
            raise UserError(f'{where}: needs a "text" field holding a string')
    return [{"text": row["text"]} for _, row in rows]


def pretrain(
    config: PretrainConfig | Mapping[str, Any] | None = None,
    *,
    train_dataset: Any = None,
    resume: bool = False,
    **keys: Any,
) -> RunResult:
    """Pre-train a causal LM (``rlalign pretrain``). ``train_dataset``: documents as rows with a
    ``text`` field (or a corpus path)."""
    data = _dataset(keys, "data", train_dataset, _corpus_rows)
    cfg = _config(PretrainConfig, config, keys)
    return _run(cfg, run_pretrain, resume=resume, data=data)


def sft(
    config: SFTConfig | Mapping[str, Any] | None = None,
    *,
    model: Any = None,
    tokenizer: Any = None,
    train_dataset: Any = None,
    resume: bool = False,
    **keys: Any,
) -> RunResult:
    """Supervised fine-tuning (``rlalign sft``) on ``messages`` or ``prompt``/``completion``
    rows."""
    model, tokenizer = _model_args(model, tokenizer, keys)
    data = _dataset(keys, "data", train_dataset, _sft_rows)
    cfg = _config(SFTConfig, config, keys)
    return _run(cfg, run_sft, resume=resume, model=model, tokenizer=tokenizer, data=data)


def reward(
    config: RewardConfig | Mapping[str, Any] | None = None,
    *,
    model: Any = None,
    tokenizer: Any = None,
    train_dataset: Any = None,
    eval_dataset: Any = None,
    resume: bool = False,
    **keys: Any,
) -> RunResult:
    """A reward model (``rlalign reward``) on ``prompt``/``chosen``/``rejected`` pairs."""
    model, tokenizer = _model_args(model, tokenizer, keys)
    data = _dataset(keys, "data", train_dataset, _preference_rows)
    data |= _dataset(keys, "eval_data", eval_dataset, _preference_rows)
    cfg = _config(RewardConfig, config, keys)
    return _run(cfg, run_reward, resume=resume, model=model, tokenizer=tokenizer, data=data)


def align(
    config: RLConfig | Mapping[str, Any] | None = None,
    *,
    model: Any = None,
    tokenizer: Any = None,
    train_dataset: Any = None,
    reward_funcs: Sequence[str | Callable[..., Any]] | None = None,
    resume: bool = False,
    **keys: Any,
) -> RunResult:
    """RL alignment (``rlalign rl``) on ``prompt`` rows (the built-in world's when none are
    given), with reward functions given as callables and/or strings (module docstring)."""
    model, tokenizer = _model_args(model, tokenizer, keys)
    data = _dataset(keys, "data", train_dataset, _prompt_rows)
    fns: list[Callable[..., Any]] = []
    if reward_funcs is not None:
        specs = [f for f in reward_funcs if isinstance(f, str)]
        fns = [f for f in reward_funcs if not isinstance(f, str)]
        if specs and fns:
            raise UserError(
                "reward_funcs: give Python callables or name strings, not both (a string's "
                "function can be imported and passed as a callable)"
            )
        for fn in fns:
            if not callable(fn):
                raise UserError(f"reward_funcs: {fn!r} is neither callable nor a name string")
        timeout_asked = "reward_timeout" in keys or (
            "reward_timeout" in config
            if isinstance(config, Mapping)
            else isinstance(config, RLConfig) and "reward_timeout" in config.model_fields_set
        )
        named = [importable_name(fn) for fn in fns]
        if fns and timeout_asked and all(named):
            specs, fns = named, []  # sent to the sandbox by name, under reward_timeout
        keys["reward_funcs"] = specs or [IN_PROCESS + callable_name(fn) for fn in fns]
    cfg = _config(RLConfig, config, keys)
    return _run(
        cfg, run_rl, resume=resume, model=model, tokenizer=tokenizer, data=data, reward_fns=fns
    )


def control_train(
    env: str,
    config: Mapping[str, Any] | Any | None = None,
    *,
    algo: str = "ppo",
    output_dir: str | Path,
    resume: bool = False,
    force: bool = False,
    baselines: bool = True,
    progress: bool = True,
    **keys: Any,
) -> RunResult:
    """Train an MLP agent on a Gymnasium env (``rlalign control train``): PPO or REINFORCE,
    from the env's tuned defaults (:data:`rlalign.control.train_config.ENV_DEFAULTS`), then
    ``config`` (a ``PPOConfig``/``ReinforceConfig`` or a dict), then ``keys``. The result's
    ``final_dir`` is ``output_dir`` (``policy.safetensors``) and its ``metrics`` the final
    evaluation (``result.json``: ``final_eval_return``, for the car ``collision_rate``, ...)."""
    if algo not in ALGOS:
        raise UserError(f"unknown algorithm {algo!r}; choose 'ppo' or 'reinforce'")
    cls = ALGOS[algo]
    # a config object gives only what was set in it: the env's defaults fill the rest
    base = config.model_dump(exclude_unset=True) if isinstance(config, Config) else config
    given = {**current_keys(cls, base or {}), **current_keys(cls, keys)}
    defaults = defaults_for(env, algo, given.get("env_kwargs"))
    cfg = load_config(cls, None, [], defaults={**defaults, **given})
    result = train_run(env, algo, cfg, output_dir, progress=progress, baselines=baselines,
                       resume=resume, force=force)  # fmt: skip
    out = Path(output_dir)
    if "interrupted_by" in result:
        return RunResult(out, None, result["env_steps"], {}, {}, result["interrupted_by"])
    metrics = {k: v for k, v in result.items() if isinstance(v, int | float) and v is not None}
    return RunResult(out, out, result["env_steps"], metrics, {})
