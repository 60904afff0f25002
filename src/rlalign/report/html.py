"""A self-contained HTML report: images are embedded, nothing is fetched from the network."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlalign.io import atomic_write_text

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 960px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 6px 0; }
.plots img { width: 49%; }
.better { color: #1a7f37; font-weight: 600; } .worse { color: #b42318; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; }
"""


def image_tag(path: str | Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def card_table(
    cards: dict[str, dict[str, Any]], labels: dict[str, str], higher_is_better: dict[str, bool]
) -> str:
    """Criteria as rows, stages as columns; the last column is marked better/worse than the one
    before it."""
    names = list(cards)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = []
    for key, label in labels.items():
        cells = []
        prev = None
        for n in names:
            value = cards[n].get(key)
            if value is None:
                cells.append("<td>-</td>")
                continue
            text = f"{value:.3f}" if key == "reward_mean" else f"{100 * value:.1f}%"
            cls = ""
            if prev is not None and n == names[-1] and value != prev:
                cls = "better" if (value > prev) == higher_is_better[key] else "worse"
            cells.append(f'<td class="{cls}">{text}</td>')
            prev = value
        body.append(f"<tr><td>{html.escape(label)}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>criterion</th>{head}</tr>{''.join(body)}</table>"


def write_report(
    path: str | Path,
    *,
    title: str,
    sections: Sequence[tuple[str, str]],
) -> Path:
    """Write ``sections`` (heading, HTML body) as one page."""

    parts = [f"<h2>{html.escape(h)}</h2>\n{body}" for h, body in sections]
    page = (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    atomic_write_text(path, page)
    return Path(path)
