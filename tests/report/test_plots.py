"""`plot_series`: every label inside the picture, whatever the values' magnitude, and no plot
when there is nothing to draw."""

from __future__ import annotations

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import rlalign.report.plots as plots

# (steps, values): long tick labels on either axis, negative and tiny values, offsets ("1e6")
RANGES = {
    "loss": (range(1, 60), [0.5 + (i % 7) / 3 for i in range(59)]),
    "small_negative": (range(1, 25), [-0.0125 + (i % 5) * 2e-4 for i in range(24)]),
    "large": (range(1, 60), [120_000 + 1_000 * i for i in range(59)]),
    "million_steps": (range(2048, 2_100_000, 2048), [-10 + i * 3e-4 for i in range(1025)]),
    "learning_rate": (range(1, 60), [5e-4 * i / 60 for i in range(59)]),
    "one_point": ([7], [-1234.5678]),
}


def _saved_figures_and_rows(monkeypatch, name: str) -> tuple[list[Figure], list[dict]]:
    """A list that collects each figure `plot_series` saves, and metric rows of ``name``'s
    range."""
    made: list[Figure] = []
    original = Figure.savefig

    def keep(fig, path, *args, **kwargs):
        made.append(fig)
        return original(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    steps, values = RANGES[name]
    rows = [{"step": s, "value": v, "other": v / 2} for s, v in zip(steps, values, strict=True)]
    return made, rows


def _shown(labels, limits, coordinate: int) -> list:
    """The tick labels drawn: the locator's ticks outside the axis's limits are not."""
    low, high = sorted(limits)
    return [t for t in labels if t.get_text() and low <= t.get_position()[coordinate] <= high]


@pytest.mark.parametrize("name", sorted(RANGES))
@pytest.mark.parametrize("percent", [False, True])
def test_every_label_lies_inside_the_picture(monkeypatch, tmp_path, name, percent):
    made, rows = _saved_figures_and_rows(monkeypatch, name)
    path = plots.plot_series(
        rows, ["value", "other"], tmp_path / "p.png", title="rl: KL to the reference model",
        ylabel="KL (nats/token)", percent=percent,
    )  # fmt: skip
    assert path is not None and path.stat().st_size > 1000
    (fig,) = made
    canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    fig.draw(renderer)
    ax = fig.axes[0]
    texts = [ax.title, ax.xaxis.label, ax.yaxis.label]
    texts += _shown(ax.get_xticklabels(), ax.get_xlim(), 0)
    texts += _shown(ax.get_yticklabels(), ax.get_ylim(), 1)
    texts += [ax.xaxis.get_offset_text(), ax.yaxis.get_offset_text()]
    width, height = canvas.get_width_height()
    for text in texts:
        if not text.get_text() or not text.get_visible():
            continue
        box = text.get_window_extent(renderer)
        assert box.x0 >= 0 and box.y0 >= 0, (text.get_text(), box)
        assert box.x1 <= width and box.y1 <= height, (text.get_text(), box)
    # the y label clears the tick labels beside it
    ticks_left = min(
        t.get_window_extent(renderer).x0 for t in _shown(ax.get_yticklabels(), ax.get_ylim(), 1)
    )
    assert ax.yaxis.label.get_window_extent(renderer).x1 <= ticks_left


def test_nothing_to_draw_writes_nothing(tmp_path):
    assert plots.plot_series([{"step": 1}], ["loss"], tmp_path / "p.png", title="t") is None
    assert not (tmp_path / "p.png").exists()


def test_a_diverged_run_still_gets_its_plot(tmp_path):
    """NaN and inf in a metric (a run that diverged): the plot is written, the report with it."""
    for values in ([float("nan")] * 4, [1.0, 2.0, float("inf"), 3.0], [1.0, float("nan"), 2.0]):
        rows = [{"step": i, "loss": v} for i, v in enumerate(values)]
        path = plots.plot_series(rows, ["loss"], tmp_path / "p.png", title="t", ylabel="loss")
        assert path is not None and path.stat().st_size > 1000
