"""The report of one LM stage's run directory: ``plots/*.png`` and ``report.html``.

Written by rank 0 when ``rlalign pretrain|sft|reward|rl`` ends (finished or stopped by a
signal), and again by ``rlalign report RUN_DIR``. Everything comes from the run directory
itself: ``config.yaml`` (the stage and its settings), ``metrics.jsonl`` (the curves, and for RL
the report card of the held-out evaluations), ``checkpoints/`` and ``final/`` (the status) and,
for RL, ``rollouts/iter_K.jsonl`` (the viewer pages linked from the report).

``report.html`` is one self-contained file: the PNGs are inlined as data URIs, there is no
script and nothing is fetched from the network. The viewer pages it links to sit beside it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rlalign.checkpoint import list_checkpoints
from rlalign.errors import UserError
from rlalign.metrics import read_metrics
from rlalign.report.html import card_table, image_tag, write_report
from rlalign.report.plots import plot_series
from rlalign.report.viewer import rollout_files, write_viewer
from rlalign.report_card import CRITERIA_LABELS, HIGHER_IS_BETTER

STAGES = ("pretrain", "sft", "reward", "rl")
# a key that only one stage's config has (every config.yaml holds all of its stage's keys)
_SIGNATURE = {
    "algorithm": "rl",
    "use_margin": "reward",
    "replay_data": "sft",
    "block_size": "pretrain",
}
MAX_VIEWER_PAGES = 5


@dataclass(frozen=True)
class Plot:
    """One PNG: ``keys`` (metrics.jsonl columns; a trailing ``/`` means every key under it)."""

    name: str
    title: str
    keys: tuple[str, ...]
    ylabel: str = ""
    percent: bool = False


_LM_LOSS = (
    Plot("loss", "training and held-out loss", ("loss", "eval_loss"), "loss (nats/token)"),
    Plot("learning_rate", "learning rate", ("learning_rate",), "learning rate"),
    Plot("grad_norm", "gradient norm (before clipping)", ("grad_norm",), "L2 norm"),
)
PLOTS: dict[str, tuple[Plot, ...]] = {
    "pretrain": (
        *_LM_LOSS,
        Plot("perplexity", "held-out perplexity", ("eval_perplexity",), "perplexity"),
    ),
    "sft": _LM_LOSS,
    "reward": (
        Plot("loss", "Bradley-Terry loss", ("loss", "eval_loss"), "loss"),
        Plot(
            "accuracy",
            "pairwise accuracy (chosen scored above rejected)",
            ("accuracy", "eval_accuracy"),
            "accuracy",
            percent=True,
        ),
        Plot(
            "accuracy_by_kind",
            "held-out pairwise accuracy by kind of pair",
            ("eval_accuracy/",),
            "accuracy",
            percent=True,
        ),
        Plot("margin", "reward margin r(chosen) - r(rejected)", ("reward_margin",), "margin"),
    ),
    "rl": (
        Plot("reward", "mean reward per rollout", ("reward_mean",), "reward"),
        Plot("reward_components", "reward components", ("reward/",), "score"),
        Plot("kl", "KL to the reference model", ("kl_ref", "approx_kl"), "nats/token"),
        Plot("entropy", "policy entropy", ("entropy",), "nats/token"),
        Plot("clip_fraction", "share of clipped ratios", ("clip_fraction",), "fraction"),
        Plot("value_loss", "value loss (PPO)", ("value_loss",), "loss"),
        Plot("length", "completion length", ("completion_length",), "tokens"),
        Plot("criteria", "held-out criteria during training", ("eval/",), "", percent=True),
        # multi-turn runs (env=...): episodes instead of single responses
        Plot("episode_return", "mean episode return", ("env/return", "eval/return"), "return"),
        Plot("episode_turns", "steps per episode", ("env/turns", "eval/turns"), "turns"),
        Plot("env_counters", "the environment's counters, per episode", ("env/",), "per episode"),
    ),
}


def detect_stage(config: dict[str, Any], where: str) -> str:
    for key, stage in _SIGNATURE.items():
        if key in config:
            return stage
    raise UserError(
        f"{where}: not the config.yaml of an LM stage run (pretrain, sft, reward, rl); "
        "a car run (rlalign control train) writes its own result files"
    )


def read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run directory not found")
    if not path.is_file():
        raise UserError(f"{run_dir}: no config.yaml (is this a run's output_dir?)")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: expected a mapping of config keys")
    return config


def _expand(keys: tuple[str, ...], rows: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for key in keys:
        if key.endswith("/"):
            out += sorted({k for r in rows for k in r if k.startswith(key)})
        else:
            out.append(key)
    return out


def write_plots(run_dir: Path, stage: str, rows: list[dict[str, Any]]) -> list[tuple[Plot, Path]]:
    """``run_dir/plots/<stage>_<name>.png`` for every plot with data; ``[(plot, path)]``."""

    labels = {f"eval/{k}": v for k, v in CRITERIA_LABELS.items()}
    made = []
    for plot in PLOTS[stage]:
        keys = _expand(plot.keys, rows)
        if plot.name == "criteria":  # rates only; the mean reward has its own scale
            keys = [k for k in keys if k in labels and k != "eval/reward_mean"]
        if plot.name == "env_counters":  # the return and the length have plots of their own
            keys = [k for k in keys if k not in ("env/return", "env/turns")]
        path = plot_series(
            rows,
            keys,
            run_dir / "plots" / f"{stage}_{plot.name}.png",
            title=f"{stage}: {plot.title}",
            ylabel=plot.ylabel,
            labels=labels,
            percent=plot.percent,
        )
        if path is not None:
            made.append((plot, path))
    return made


def rl_report_card(rows: list[dict[str, Any]]) -> str | None:
    """The held-out report card at the first and the last evaluation of an RL run."""

    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    if not evals:
        return None
    chosen = [evals[0], evals[-1]] if len(evals) > 1 else evals
    cards = {
        f"step {r['step']}": {k: r[f"eval/{k}"] for k in CRITERIA_LABELS if f"eval/{k}" in r}
        for r in chosen
    }
    return card_table(cards, CRITERIA_LABELS, HIGHER_IS_BETTER)


def write_viewer_pages(run_dir: Path) -> list[tuple[int, Path]]:
    """Viewer pages of up to :data:`MAX_VIEWER_PAGES` iterations, first and last included."""

    files = rollout_files(run_dir)
    if not files:
        return []
    n = len(files)
    picks = sorted(
        {round(i * (n - 1) / max(MAX_VIEWER_PAGES - 1, 1)) for i in range(MAX_VIEWER_PAGES)}
    )
    picks = [i for i in picks if i < n]
    return [(files[i][0], write_viewer(run_dir, None, files[i][0])) for i in picks]


def _status(run_dir: Path, config: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    max_steps = config.get("max_steps")
    checkpoints = list_checkpoints(run_dir)
    newest = checkpoints[-1][0] if checkpoints else None
    last = rows[-1]["step"] if rows else 0
    if (run_dir / "final").is_dir() and newest == max_steps:
        return f"finished: {max_steps} steps; the trained model is in final/"
    resume = f"checkpoint step_{newest}" if newest is not None else "no checkpoint yet"
    return (
        f"stopped at step {last} of {max_steps} ({resume}); continue with "
        "--resume and the same config"
    )


def _last_values(rows: list[dict[str, Any]]) -> str:
    """The newest logged value of every numeric metric (skipping timing columns)."""
    latest: dict[str, tuple[int, Any]] = {}
    for r in rows:
        for k, v in r.items():
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                latest[k] = (r["step"], v)
    if not latest:
        return "<p>no metrics logged</p>"
    cells = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.6g}</td><td>{step}</td></tr>"
        for k, (step, v) in sorted(latest.items())
    )
    return f"<table><tr><th>metric</th><th>last value</th><th>at step</th></tr>{cells}</table>"


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``plots/*.png`` (and, for RL, viewer pages) and ``report.html``; its path."""

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    stage = detect_stage(config, str(run_dir / "config.yaml"))
    rows = read_metrics(run_dir)
    plots = write_plots(run_dir, stage, rows)
    sections: list[tuple[str, str]] = [
        ("Status", f"<p>{html.escape(_status(run_dir, config, rows))}</p>")
    ]
    if stage == "rl":
        card = rl_report_card(rows)
        if card is not None:
            sections.append(("Report card (held-out questions, first and last evaluation)", card))
    images = "\n".join(image_tag(path, plot.title) for plot, path in plots)
    curves = f'<div class="plots">{images}</div>' if images else "<p>no metrics logged yet</p>"
    sections.append(("Curves", curves))
    if stage == "rl":
        pages = write_viewer_pages(run_dir)
        links = "".join(
            f'<li><a href="{html.escape(p.name)}">iteration {k}</a></li>' for k, p in pages
        )
        sections.append(
            (
                "Per-token viewer (each sampled token with its log-prob, KL, return and advantage)",
                f"<ul>{links}</ul>" if pages else "<p>no rollouts saved (save_rollouts=0)</p>",
            )
        )
    sections.append(("Last logged values", _last_values(rows)))
    config_text = yaml.safe_dump(config, sort_keys=False)
    sections.append(("Resolved config (config.yaml)", f"<pre>{html.escape(config_text)}</pre>"))
    return write_report(
        run_dir / "report.html",
        title=f"rlalign {stage}: {run_dir.resolve().name}",
        sections=sections,
    )
