"""The trajectory viewer: every sampled token as an action, with its credit.

``rlalign show RUN_DIR`` turns ``RUN_DIR/rollouts/iter_K.jsonl`` (written by ``rlalign rl``)
into one self-contained HTML page. Each response token is a span coloured by a chosen quantity
(advantage by default; log-prob, KL to the reference, reward, return G_t, value); hovering or
clicking a token shows its step t, the state (prompt + tokens so far), the action (token and
id), pi(a|s), the reference probability, the per-token KL, r_t, G_t with the run's gamma, V(s_t)
(PPO) and A_t. Rollouts can be filtered by reward and by prompt kind. The spans are written in
the HTML itself (``data-*`` attributes), so the numbers are there without JavaScript too.

A multi-turn episode (``rlalign rl env=...``; a row with ``turns``) is shown turn by turn: each
observation of the environment, then the tokens the model answered with, each with its credit
(the step's reward on the turn's last token, G_t discounted per environment step); the state of
a token is everything read and written before it.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any

from rlalign.errors import UserError
from rlalign.io import atomic_write_text

QUANTITIES = ("advantage", "logp", "kl", "reward", "return", "value")
FIELDS = ("t", "id", "logp", "ref_logp", "kl", "reward", "return", "value", "advantage")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.controls { position: sticky; top: 0; background: #fff; padding: 8px 0; border-bottom: 1px solid #ddd; z-index: 2; }
.controls label { margin-right: 1em; }
.rollout { border: 1px solid #ddd; border-radius: 6px; padding: 8px 10px; margin: 10px 0; }
.meta { font-size: 0.85em; color: #555; margin-bottom: 4px; }
.prompt { color: #444; white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 0.9em; }
.completion { font-family: ui-monospace, monospace; font-size: 1em; line-height: 1.9; }
.tok { padding: 2px 1px; border-radius: 3px; cursor: pointer; white-space: pre; }
.tok.selected { outline: 2px solid #111; }
#details { position: fixed; right: 1em; bottom: 1em; width: 26em; background: #fffbe6; border: 1px solid #d4b106;
           border-radius: 6px; padding: 8px 10px; font-size: 0.85em; max-height: 60vh; overflow: auto; }
#details table td { padding: 1px 6px; } #details .state { white-space: pre-wrap; font-family: ui-monospace, monospace; }
.hidden { display: none; }
"""

SCRIPT = r"""
const quantities = %(quantities)s;
const gamma = %(gamma)s;
function num(el, key) { const v = el.dataset[key]; return v === undefined || v === "" ? null : parseFloat(v); }
function colour(q, v, scale) {
  if (v === null || !isFinite(v)) return "transparent";
  if (q === "logp") { const a = Math.min(1, -v / scale); return `rgba(215,48,39,${(0.85 * a).toFixed(3)})`; }
  const a = Math.min(1, Math.abs(v) / scale);
  return v >= 0 ? `rgba(26,152,80,${(0.85 * a).toFixed(3)})` : `rgba(215,48,39,${(0.85 * a).toFixed(3)})`;
}
function paint() {
  const q = document.getElementById("quantity").value;
  const toks = Array.from(document.querySelectorAll(".tok"));
  let scale = 1e-9;
  toks.forEach(t => { const v = num(t, q === "return" ? "ret" : q); if (v !== null && isFinite(v)) scale = Math.max(scale, Math.abs(v)); });
  toks.forEach(t => { t.style.background = colour(q, num(t, q === "return" ? "ret" : q), scale); });
  document.getElementById("scale").textContent = `|${q}| up to ${scale.toFixed(3)}`;
}
function filter() {
  const kinds = new Set(Array.from(document.querySelectorAll(".kind:checked")).map(c => c.value));
  const lo = parseFloat(document.getElementById("rmin").value), hi = parseFloat(document.getElementById("rmax").value);
  let shown = 0;
  document.querySelectorAll(".rollout").forEach(r => {
    const ok = kinds.has(r.dataset.kind) && parseFloat(r.dataset.reward) >= lo && parseFloat(r.dataset.reward) <= hi;
    r.classList.toggle("hidden", !ok); if (ok) shown++;
  });
  document.getElementById("count").textContent = `${shown} shown`;
}
function fmt(v, d = 4) { return v === null || !isFinite(v) ? "-" : v.toFixed(d); }
function show(tok) {
  document.querySelectorAll(".tok.selected").forEach(t => t.classList.remove("selected"));
  tok.classList.add("selected");
  const r = tok.closest(".rollout");
  // the state: every observation and token before this one, in the order they came
  let state = "";
  for (const el of r.querySelectorAll(".prompt, .tok")) {
    if (el === tok) break;
    const isPrompt = el.classList.contains("prompt");
    const afterPrompt = !isPrompt && el.previousElementSibling === null;  // a turn's first token
    if ((isPrompt || afterPrompt) && state && !state.endsWith("\n")) state += "\n";
    state += el.textContent;
  }
  if (state.length > 400) state = "..." + state.slice(-400);
  const lp = num(tok, "logp"), rlp = num(tok, "ref_logp");
  const rows = [
    ...(tok.dataset.turn ? [["turn (environment step)", tok.dataset.turn]] : []),
    ["step t", tok.dataset.t], ["action a_t", `${JSON.stringify(tok.textContent)} (id ${tok.dataset.id})`],
    ["pi(a|s)", fmt(Math.exp(lp))], ["log pi(a|s)", fmt(lp)], ["pi_ref(a|s)", rlp === null ? "-" : fmt(Math.exp(rlp))],
    ["KL_t (k1)", fmt(num(tok, "kl"))], ["reward r_t", fmt(num(tok, "reward"))],
    [`return G_t (gamma=${gamma})`, fmt(num(tok, "ret"))], ["value V(s_t)", fmt(num(tok, "value"))],
    ["advantage A_t", fmt(num(tok, "advantage"))]];
  // built with textContent, never innerHTML: a token's text is model output, not markup
  const head = document.createElement("b");
  head.textContent = `token ${tok.dataset.t} of ${tok.dataset.turn ? "turn " + tok.dataset.turn + " of " : ""}rollout ${r.dataset.index}`;
  const table = document.createElement("table");
  rows.forEach(([k, v]) => { const tr = table.insertRow(); tr.insertCell().textContent = k; tr.insertCell().textContent = v; });
  const label = document.createElement("div");
  label.textContent = "state s_t (prompt + tokens so far):";
  const box = document.createElement("div");
  box.className = "state";
  box.textContent = state;
  document.getElementById("details").replaceChildren(head, table, label, box);
}
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("quantity").addEventListener("change", paint);
  document.querySelectorAll(".kind, #rmin, #rmax").forEach(e => e.addEventListener("input", filter));
  document.querySelectorAll(".tok").forEach(t => { t.addEventListener("mouseenter", () => show(t)); t.addEventListener("click", () => show(t)); });
  paint(); filter();
});
"""


def rollout_files(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(K, path)`` of every ``rollouts/iter_K.jsonl``, in iteration order."""
    root = Path(run_dir) / "rollouts"
    found = []
    for path in root.glob("iter_*.jsonl"):
        match = re.fullmatch(r"iter_(\d+)\.jsonl", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def load_rollouts(
    run_dir: str | Path, iteration: int | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """The rollouts of one iteration (default: the last one saved)."""
    files = rollout_files(run_dir)
    if not files:
        raise UserError(
            f"{run_dir}: no rollouts/iter_K.jsonl files (is this an `rlalign rl` run directory, "
            "and was save_rollouts > 0?)"
        )
    available = {k: p for k, p in files}
    k = files[-1][0] if iteration is None else iteration
    if k not in available:
        shown = ", ".join(str(i) for i in list(available)[-10:])
        raise UserError(f"{run_dir}: no rollouts for iteration {k} (saved: {shown})")
    rows = []
    for lineno, line in enumerate(available[k].read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{available[k]}:{lineno}: invalid JSON ({exc.msg})") from None
            problem = _rollout_problem(row)
            if problem:  # a hand-edited or foreign file: one line, not a traceback later
                raise UserError(f"{available[k]}:{lineno}: {problem}")
            rows.append(row)
    return k, rows


def _rollout_problem(row: Any) -> str | None:
    """What makes ``row`` something the viewer cannot show (None: nothing)."""
    if not isinstance(row, dict):
        return f"a rollout is a JSON object, got {type(row).__name__}"
    reward = row.get("reward", 0.0)
    if isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward):
        return f"'reward' must be a finite number, got {reward!r}"
    for key in ("components", "counters"):
        values = row.get(key) or {}
        if not isinstance(values, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values.values()
        ):
            return f"'{key}' must map names to numbers"
    for key in ("prompt", "prompt_text"):
        if key in row and not isinstance(row[key], str | None):
            return f"'{key}' must be text"
    turns = row.get("turns", [])
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        return "'turns' must be a list of objects"
    for turn in turns:
        if not isinstance(turn.get("observation", ""), str):
            return "a turn's 'observation' must be text"
        if not isinstance(turn.get("reward", 0.0), int | float):
            return "a turn's 'reward' must be a number"
    tokens = list(row.get("tokens") or []) if "turns" not in row else []
    tokens += [t for turn in turns for t in (turn.get("tokens") or [])]
    if not all(isinstance(t, dict) for t in tokens):
        return "every token must be a JSON object"
    return None


def _attr(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _tokens(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Every token of a rollout: a single completion's, or each turn's of an episode."""
    if "turns" in row:
        return [t for turn in row["turns"] for t in turn.get("tokens", [])]
    return row.get("tokens", [])


def _body(row: dict[str, Any], scale: float, has_values: bool) -> str:
    """A single-turn rollout: its prompt and its tokens; an episode: each observation and the
    tokens that answered it."""
    if "turns" not in row:
        spans = "".join(_token_span(t, scale, has_values) for t in row.get("tokens", []))
        prompt = html.escape(row.get("prompt_text") or row.get("prompt", ""))
        return f'<div class="prompt">{prompt}</div><div class="completion">{spans}</div>'
    parts = []
    for k, turn in enumerate(row["turns"]):
        spans = "".join(_token_span(t, scale, has_values, turn=k) for t in turn.get("tokens", []))
        note = f" &middot; r = {float(turn.get('reward', 0.0)):+.3f}"
        if turn.get("invalid"):
            note += " &middot; not an action"
        parts.append(
            f'<div class="prompt">{html.escape(turn.get("observation", ""))}</div>'
            f'<div class="completion">{spans}<span class="meta">{note}</span></div>'
        )
    return "".join(parts)


def _token_span(
    token: dict[str, Any], scale: float, has_values: bool, turn: int | None = None
) -> str:
    # V(s_t) exists for PPO only (the others save 0): shown as "-" rather than a false 0
    attrs = " ".join(
        f'data-{"ret" if key == "return" else key}="{_attr(token.get(key))}"'
        if key != "value" or has_values
        else 'data-value=""'
        for key in FIELDS
    )
    if turn is not None:
        attrs += f' data-turn="{turn}"'
    adv = token.get("advantage") or 0.0
    alpha = min(1.0, abs(adv) / scale) * 0.85 if scale > 0 else 0.0
    rgb = "26,152,80" if adv >= 0 else "215,48,39"
    text = html.escape(token.get("token", ""))
    return f'<span class="tok" {attrs} style="background:rgba({rgb},{alpha:.3f})">{text}</span>'


def render_viewer(rows: list[dict[str, Any]], *, title: str, iteration: int) -> str:
    """The HTML page for ``rows`` (rollouts of one iteration)."""
    gamma = rows[0].get("gamma", 1.0) if rows else 1.0
    scale = max((abs(t.get("advantage") or 0.0) for r in rows for t in _tokens(r)), default=0.0)
    kinds = sorted({str(r.get("kind") or "-") for r in rows})
    rewards = [float(r.get("reward", 0.0)) for r in rows] or [0.0]
    # the filter's bounds are shown to 3 decimals: round outwards, or the best and the worst
    # rollouts (e.g. a reward of 1.6201 against a bound of 1.620) start hidden
    lo, hi = math.floor(min(rewards) * 1000) / 1000, math.ceil(max(rewards) * 1000) / 1000
    blocks = []
    for r in rows:
        has_values = r.get("algorithm", "ppo") == "ppo"
        parts = (r.get("components") or r.get("counters") or {}).items()
        comps = ", ".join(f"{k} {v:+.2f}" for k, v in parts)
        if "turns" in r:
            comps = f"{len(r['turns'])} turns, ended: {r.get('end', '-')}; {comps}"
        blocks.append(
            f'<div class="rollout" data-kind="{html.escape(str(r.get("kind") or "-"))}" '
            f'data-reward="{float(r.get("reward", 0.0)):.6g}" data-index="{r.get("index", "")}">'
            f'<div class="meta">#{r.get("index", "")} &middot; kind <b>{html.escape(str(r.get("kind") or "-"))}</b>'
            f" &middot; reward <b>{float(r.get('reward', 0.0)):+.3f}</b> ({html.escape(comps)})</div>"
            f"{_body(r, scale, has_values)}</div>"
        )
    options = "".join(f'<option value="{q}">{q}</option>' for q in QUANTITIES)
    kind_boxes = "".join(
        f'<label><input type="checkbox" class="kind" value="{html.escape(k)}" checked> {html.escape(k)}</label>'
        for k in kinds
    )
    controls = (
        f'<div class="controls">colour by <select id="quantity">{options}</select> '
        f'<span id="scale"></span> &nbsp; {kind_boxes} reward from '
        f'<input id="rmin" type="number" step="0.1" value="{lo:.3f}"> to '
        f'<input id="rmax" type="number" step="0.1" value="{hi:.3f}"> <span id="count"></span></div>'
    )
    script = SCRIPT % {"quantities": json.dumps(list(QUANTITIES)), "gamma": json.dumps(gamma)}
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>Iteration {iteration}: {len(rows)} sampled responses. "
        "Each token is an action a_t taken in the state s_t (the prompt and the tokens before "
        "it); hover or click one for its credit.</p>"
        f"{controls}{''.join(blocks)}"
        '<div id="details">hover over a token</div>'
        f"<script>{script}</script></body></html>\n"
    )


def write_viewer(
    run_dir: str | Path, out: str | Path | None = None, iteration: int | None = None
) -> Path:
    """Write the viewer page for ``run_dir`` (default ``RUN_DIR/viewer_iter_K.html``)."""

    k, rows = load_rollouts(run_dir, iteration)
    path = Path(out) if out is not None else Path(run_dir) / f"viewer_iter_{k}.html"
    title = f"rlalign rollouts: {Path(run_dir).name}"
    atomic_write_text(path, render_viewer(rows, title=title, iteration=k))
    return path
