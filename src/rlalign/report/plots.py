"""PNG plots of a run's ``metrics.jsonl`` (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_series(
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    path: str | Path,
    *,
    title: str,
    ylabel: str = "",
    labels: dict[str, str] | None = None,
    percent: bool = False,
) -> Path | None:
    """Plot ``keys`` against ``step`` (rows lacking a key are skipped); None if nothing to plot."""
    # A bare Figure, not pyplot: no backend switch and no global figure state, so a library
    # call never changes how the user's own notebook or script draws (and no display needed).
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    ax = fig.subplots()
    drawn = 0
    for key in keys:
        points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        if percent:
            ys = [100 * y for y in ys]
        ax.plot(
            xs,
            ys,
            marker="o" if len(xs) < 30 else None,
            markersize=3,
            label=(labels or {}).get(key, key),
        )
        drawn += 1
    if not drawn:
        return None
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel + (" (%)" if percent else ""))
    ax.grid(alpha=0.3)
    if drawn > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
