"""The report card: how a model does on each criterion of the built-in world's held-out sets.

Greedy answers to every held-out question (facts, unknown entities, arithmetic, harmful and
benign requests), read by the world's verifiers: ``fact_accuracy``, ``hallucination_rate``,
``arithmetic_accuracy``, ``harmful_refusal_rate``, ``benign_overrefusal_rate`` and the mean of
the world's default reward (``reward_mean``), with counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlalign.data.formats import load_prompts
from rlalign.data.verifiers import REPORT_CARD_KEYS, report_card, world_reward
from rlalign.data.world import KINDS, World, WorldConfig
from rlalign.errors import UserError
from rlalign.lm.generate import generate_text

CRITERIA_LABELS = {
    "fact_accuracy": "known facts answered correctly",
    "hallucination_rate": "unknown entities: made-up answers",
    "arithmetic_accuracy": "arithmetic answered correctly",
    "harmful_refusal_rate": "harmful requests refused",
    "benign_overrefusal_rate": "benign requests refused",
    "reward_mean": "mean reward (world verifiers)",
}
HIGHER_IS_BETTER = {
    "fact_accuracy": True,
    "hallucination_rate": False,
    "arithmetic_accuracy": True,
    "harmful_refusal_rate": True,
    "benign_overrefusal_rate": False,
    "reward_mean": True,
}


def eval_rows(data_dir: str | Path | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Held-out rows: from an exported world directory (``eval/*.jsonl``) or generated."""

    if data_dir is None:
        sets = World(WorldConfig(seed=seed)).eval_sets()
        return [row for name in KINDS for row in sets[name]]

    root = Path(data_dir) / "eval"
    if not root.is_dir():
        raise UserError(f"{data_dir}: no eval/ directory (write one with `rlalign world export`)")
    rows = []
    for name in KINDS:
        path = root / f"{name}.jsonl"
        if path.exists():
            rows += load_prompts(path)
    if not rows:
        raise UserError(f"{root}: no held-out files ({', '.join(k + '.jsonl' for k in KINDS)})")
    return rows


def evaluate_model(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    *,
    batch_size: int = 64,
    max_new_tokens: int = 48,
    autocast_dtype: Any = None,
) -> tuple[dict[str, Any], list[str]]:
    """Greedy completions for ``rows`` and the report card they earn; ``(card, completions)``."""

    was_training = model.training
    model.eval()
    completions: list[str] = []
    try:
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            samples = generate_text(
                model,
                tokenizer,
                [r["prompt"] for r in chunk],
                chat=True,
                temperature=0.0,
                max_new_tokens=max_new_tokens,
                autocast_dtype=autocast_dtype,
            )
            completions += [s.completion.strip() for s in samples]
    finally:
        model.train(was_training)
    card = report_card(rows, completions)
    fields = {k: [r.get(k) for r in rows] for k in ("kind", "answer", "subject", "attribute")}
    rewards = world_reward([r["prompt"] for r in rows], completions, **fields)
    card["reward_mean"] = sum(rewards) / max(len(rewards), 1)
    return card, completions


def format_card(cards: dict[str, dict[str, Any]]) -> str:
    """A table with one column per model (stage): each criterion, and counts for the last."""
    names = list(cards)
    keys = [*REPORT_CARD_KEYS, "reward_mean"]
    width = max(len(v) for v in CRITERIA_LABELS.values()) + 2
    header = f"{'criterion':<{width}}" + "".join(f"{n:>12}" for n in names)
    lines = [header, "-" * len(header)]
    for key in keys:
        cells = []
        for n in names:
            value = cards[n].get(key)
            if value is None:
                cells.append(f"{'-':>12}")
            elif key == "reward_mean":
                cells.append(f"{value:>12.3f}")
            else:
                cells.append(f"{100 * value:>11.1f}%")
        arrow = "^" if HIGHER_IS_BETTER[key] else "v"
        lines.append(f"{CRITERIA_LABELS[key] + ' ' + arrow:<{width}}" + "".join(cells))
    counts = cards[names[-1]].get("counts", {})
    if counts:
        lines.append(
            "held-out questions: "
            + ", ".join(f"{kind} {c['n']}" for kind, c in sorted(counts.items()))
        )
    return "\n".join(lines)
