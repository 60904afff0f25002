"""``RUN_DIR/report.html`` of a control run: one self-contained page, nothing fetched.

- PNG plots of ``metrics.jsonl`` over environment steps: the episode return (training episodes
  and the evaluations during training), the episode length and, for the driving envs, the
  collision rate; written to ``RUN_DIR/plots/`` and inlined in the page;
- the final evaluation of ``result.json`` and, for the driving envs, every baseline on the same
  seeded episodes;
- for the driving envs, the credit viewer: the first evaluation episode played by the learned
  policy beside the rule-based driver, each frame captioned with the action, r_t and G_t, as an
  animated GIF and as a strip of frames (``RUN_DIR/episode.gif``, ``RUN_DIR/episode_strip.png``).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from rlalign.control.episode import record_episode
from rlalign.control.render import evenly_spaced, save_gif, save_png, side_by_side, strip
from rlalign.metrics import read_metrics
from rlalign.report.html import image_tag, write_report
from rlalign.report.plots import plot_series

_COLUMNS = (
    ("return", "mean return", "{:.2f}"),
    ("collision_rate", "collision rate", "{:.1%}"),
    ("arrival_rate", "arrival rate", "{:.1%}"),
    ("mean_travel_time", "travel time (s)", "{:.1f}"),
    ("abrupt_brakes_per_episode", "abrupt brakes / episode", "{:.2f}"),
    ("red_lights_per_episode", "red lights / episode", "{:.3f}"),
    ("off_road_rate", "off road", "{:.1%}"),
)
VIEWER_FRAMES = 10


def _plots(
    run_dir: Path, rows: list[dict[str, Any]], result: dict[str, Any]
) -> list[tuple[Path, str]]:
    plots = run_dir / "plots"
    rule = (result.get("baselines") or {}).get("rule_based")
    if rule is not None and rows:
        # The rule-based driver's final-evaluation return, drawn as a level line for reference.
        rows = [*rows]
        rows[0] = {**rows[0], "rule_based_return": rule["return"]}
        rows[-1] = {**rows[-1], "rule_based_return": rule["return"]}
    out = []
    for name, keys, title, ylabel, percent in (
        (
            "return",
            ["episode_return", "eval_return", "rule_based_return"],
            "Episode return",
            "return",
            False,
        ),
        (
            "episode_length",
            ["episode_length", "eval_episode_length"],
            "Episode length",
            "steps",
            False,
        ),
        ("collisions", ["collision_rate", "eval_collision_rate"], "Collisions", "rate", True),
    ):
        labels = {
            keys[0]: "training episodes (last 20)",
            keys[1]: "evaluation during training",
            "rule_based_return": "rule-based driver (final evaluation)",
        }
        if name == "collisions":
            labels[keys[0]] = "training episodes (last 100)"
        path = plot_series(
            rows,
            keys,
            plots / f"{name}.png",
            title=f"{title} over environment steps",
            ylabel=ylabel,
            labels=labels,
            percent=percent,
        )
        if path is not None:
            out.append((path, title))
    return out


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _table(result: dict[str, Any]) -> str:
    policies = {f"{result['algo']} (learned)": result}
    policies.update(result.get("baselines") or {})
    driving = "collision_rate" in result
    cols = [c for c in _COLUMNS if driving or c[0] == "return"]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in cols)
    body = []
    for name, stats in policies.items():
        value = {"return": stats.get("return", stats.get("final_eval_return"))}
        cells = "".join(
            f"<td>{_cell(value.get(key, stats.get(key)), fmt)}</td>" for key, _, fmt in cols
        )
        body.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    seeds = result.get("eval_seeds") or ["?", "?"]
    note = (
        f"<p>{result['eval_episodes']} evaluation episodes (seeds {seeds[0]}-{seeds[1]}), "
        "the same for every policy; the learned policy acts greedily.</p>"
    )
    return note + f"<table><tr><th>policy</th>{head}</tr>{''.join(body)}</table>"


def _viewer(run_dir: Path, result: dict[str, Any]) -> str:
    seed = int((result.get("eval_seeds") or [0])[0])
    learned = record_episode(run_dir, seed)
    rule = record_episode(run_dir, seed, baseline="rule_based")
    frames = side_by_side(learned.captioned(), rule.captioned())
    gif = save_gif(frames, run_dir / "episode.gif", fps=8.0)
    png = save_png(strip(frames, evenly_spaced(len(frames), VIEWER_FRAMES)), run_dir / "strip.png")
    gif_b64 = base64.b64encode(gif.read_bytes()).decode("ascii")

    def line(ep: Any) -> str:
        s = ep.summary
        what = "collided" if s.get("collision") else "arrived" if s.get("arrived") else "stopped"
        return (
            f"{html.escape(ep.label)}: return {s['return']:+.2f}, {what} after {s['steps']} steps"
        )

    return (
        f"<p>Evaluation episode seed {seed}: learned policy (left) beside the rule-based driver "
        f"(right). Beneath each frame: the step t, the action taken, the reward r_t and the "
        f"return G_t = r_t + &gamma; G_(t+1) with the run's &gamma; = {learned.gamma}.</p>"
        f"<p>{line(learned)}<br>{line(rule)}</p>"
        f'<img alt="episode" src="data:image/gif;base64,{gif_b64}">'
        f"<p>The same episodes as a strip of {VIEWER_FRAMES} frames:</p>"
        + image_tag(png, "strip of frames")
    )


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` from the run's metrics, result and policy."""
    run_dir = Path(run_dir)
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    rows = read_metrics(run_dir)
    sections = [
        (
            "Training curves",
            "\n".join(image_tag(p, alt) for p, alt in _plots(run_dir, rows, result)),
        ),
        ("Final evaluation", _table(result)),
    ]
    if "collision_rate" in result:
        sections.append(("An episode, step by step", _viewer(run_dir, result)))
    facts = {
        k: result.get(k)
        for k in ("env_id", "algo", "seed", "env_steps", "env_steps_to_solve", "wall_seconds")
    }
    sections.append(("Run", f"<pre>{html.escape(json.dumps(facts, indent=2))}</pre>"))
    return write_report(
        run_dir / "report.html",
        title=f"rlalign control: {result['algo']} on {result['env_id']}",
        sections=sections,
    )
