"""The README's claims, checked from the runs themselves: the demo's goals on each world seed,
and the car's against its baselines.

``python -m rlalign.goals --seeds 0-9`` (``make goals SEEDS=0-9``) runs ``rlalign demo`` for
each world seed and the default car run, as many at a time as the cores allow (the demo with
its default threads, ``num_threads=auto``; the car with one), then reads every
``report.json``, ``rl/metrics.jsonl`` and ``result.json`` and prints one table. It exits 1 when
fewer rows than :func:`~rlalign.claims.required_rows` meet every goal, or when the car misses
one (the goals themselves: :mod:`rlalign.claims`). The tables are written to ``OUT/goals.md``
and ``OUT/goals.json``, and into every block of the README and the docs that quotes this run::

    <!-- goals seeds=0-9 -->  ...  <!-- /goals -->   (the demo's table for world seeds 0-9)
    <!-- goals car -->  ...  <!-- /goals -->         (the car's default run)
    <!-- goals card seed=0 -->  ...  <!-- /goals --> (world seed 0's report card)

so that the figures those pages show are the output of the command, never copied by hand.

``--quick`` (``make goals-quick``, which CI runs after ``make test`` on the CPU kinds where it
does not run ``make goals``) checks ``rlalign demo --quick`` instead, on what its fewer steps
can show: SFT far above the pretrained model, and RL above SFT, on the mean reward of the
held-out questions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlalign.claims import (
    Goal,
    all_met,
    car_goals,
    demo_goals,
    quick_demo_goals,
    required_rows,
)
from rlalign.demo import DemoConfig, demo_threads, rl_kl
from rlalign.errors import UserError
from rlalign.precision import cpu_model_and_flags
from rlalign.report_card import CRITERIA_LABELS, HIGHER_IS_BETTER, format_card

CAR_ENV = "rlalign/Driving-v0"

BLOCK = re.compile(r"(<!-- goals (?P<label>[^>]*?) -->\n)(?P<body>.*?)(<!-- /goals -->)", re.S)
QUOTING_FILES = ("README.md", "docs/results.md")


def parse_seeds(text: str) -> list[int]:
    """``"0-9"``, ``"0,3,5-7"`` -> sorted distinct seeds."""

    seeds: set[int] = set()
    for part in text.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise UserError(f"seeds {text!r}: expected numbers and ranges such as 0-9 or 0,3,5-7")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if hi < lo:
            raise UserError(f"seeds {text!r}: the range {part} is empty")
        seeds.update(range(lo, hi + 1))
    return sorted(seeds)


def seeds_label(seeds: Sequence[int]) -> str:
    """The inverse of :func:`parse_seeds`: ``[0, 1, 2, 5]`` -> ``"0-2,5"``."""

    parts, start = [], None
    for i, s in enumerate(seeds):
        if start is None:
            start = s
        if i + 1 == len(seeds) or seeds[i + 1] != s + 1:
            parts.append(str(start) if start == s else f"{start}-{s}")
            start = None
    return ",".join(parts)


def machine() -> str:
    """The CPU the runs ran on, as the docs name it: "AMD EPYC, 2 cores, no AMX"."""

    name, flags = cpu_model_and_flags()
    amx = "amx_tile" in flags.split()
    return f"{name or platform.machine()}, {os.cpu_count()} cores, {'with' if amx else 'no'} AMX"


def run_settings(reports: Sequence[dict[str, Any]]) -> str:
    """The precision and threads the demos computed with (their cards depend on both), from
    their ``report.json``: "bf16 autocast, 2 threads"; distinct settings joined by " / "."""

    seen: list[str] = []
    for report in reports:
        bf16 = report.get("precision", {}).get("bf16")
        threads = report.get("threads", {}).get("num_threads")
        if bf16 is None or threads is None:
            continue
        text = f"{'bf16 autocast' if bf16 else 'fp32'}, {threads} thread{'s' * (threads != 1)}"
        if text not in seen:
            seen.append(text)
    return " / ".join(seen)


def demo_table(rows: dict[int, list[Goal]], cpu: str = "") -> str:
    """One row per world seed, SFT → RL per goal; a missed goal is marked ✗."""

    names = [g.name for g in next(iter(rows.values()))]
    head = ["world seed", *names, "all met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for seed, goals in rows.items():
        cells = [g.shown if g.met else f"{g.shown} **✗**" for g in goals]
        lines.append(
            f"| {seed} | " + " | ".join(cells) + f" | {'yes' if all_met(goals) else '**no**'} |"
        )
    met = sum(all_met(g) for g in rows.values())
    lines += [
        "",
        f"{met} of {len(rows)} world seeds meet every goal" + (f" ({cpu})." if cpu else "."),
    ]
    return "\n".join(lines)


def rl_against_sft(stages: Sequence[dict[str, Any]]) -> str:
    """How many world seeds RL leaves better, the same and worse than SFT on each criterion of
    the report card (``stages``: each run's ``report.json`` ``stages``), as one sentence.

    Why: the table says whether each goal is met; this says where RL moves each criterion, the
    claim a reader draws from the table, so that the prose beside it is generated too."""

    parts = []
    for key, label in CRITERIA_LABELS.items():
        if key == "reward_mean":
            continue
        higher = HIGHER_IS_BETTER[key]
        counts = [0, 0, 0]  # better, the same, worse
        for stage in stages:
            delta = stage["rl"][key] - stage["sft"][key]
            if abs(delta) < 1e-9:
                counts[1] += 1
            else:
                counts[0 if (delta > 0) == higher else 2] += 1
        parts.append(f"{label} {counts[0]} / {counts[1]} / {counts[2]}")
    return (
        "RL against SFT on each criterion, world seeds where it is better / the same / worse: "
        + "; ".join(parts)
        + "."
    )


def car_table(result: dict[str, Any]) -> str:
    """PPO and the baselines on the car's seeded evaluation episodes."""

    def row(name: str, r: dict[str, Any], bold: bool = False) -> str:
        travel = r.get("mean_travel_time")
        cells = [
            f"{r['return']:.2f}",
            f"{r['collision_rate']:.3f}",
            f"{r['arrival_rate']:.3f}",
            "-" if travel is None else f"{travel:.1f}",
            f"{r['abrupt_brakes_per_episode']:.2f}",
            f"{r['red_lights_per_episode']:.3f}",
        ]
        if bold:
            name, cells = f"**{name}**", [f"**{c}**" if i == 0 else c for i, c in enumerate(cells)]
        return f"| {name} | " + " | ".join(cells) + " |"

    ours = {
        "return": result["final_eval_return"],
        **{
            k: result[k]
            for k in (
                "collision_rate",
                "arrival_rate",
                "mean_travel_time",
                "abrupt_brakes_per_episode",
                "red_lights_per_episode",
            )
        },
    }
    lines = [
        "| policy | mean return | collision rate | arrival rate | mean travel time (s) | "
        "abrupt brakes / episode | red lights / episode |",
        "|---|---:|---:|---:|---:|---:|---:|",
        row("PPO (learned)", ours, bold=True),
    ]
    names = {"rule_based": "rule-based driver", "constant_speed": "constant speed"}
    baselines = result.get("baselines", {})
    for name in sorted(baselines, key=lambda n: -baselines[n]["return"]):
        lines.append(row(names.get(name, name.replace("_", " ")), baselines[name]))
    return "\n".join(lines)


def replace_blocks(text: str, label: str, body: str) -> str:
    """Put ``body`` into every ``<!-- goals LABEL -->`` block of ``text``."""

    def sub(m: re.Match[str]) -> str:
        if m["label"].strip() != label:
            return m[0]
        return m[1] + body.rstrip("\n") + "\n" + m[4]

    return BLOCK.sub(sub, text)


def publish(root: Path, label: str, body: str) -> list[Path]:
    """Rewrite the blocks quoting ``label`` in the README and the docs; the files changed."""

    changed = []
    for name in QUOTING_FILES:
        path = root / name
        if not path.exists():
            continue
        old = path.read_text(encoding="utf-8")
        new = replace_blocks(old, label, body)
        if new != old:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


# ---------------------------------------------------------------------------- running the runs


def _run(argv: list[str], log: Path) -> tuple[int, float]:
    """Run ``python -m rlalign ARGV`` with its output in ``log``; ``(exit code, seconds)``."""

    t0 = time.perf_counter()
    with log.open("w", encoding="utf-8") as f:
        code = subprocess.run(
            [sys.executable, "-m", "rlalign", *argv], stdout=f, stderr=subprocess.STDOUT
        ).returncode
    return code, time.perf_counter() - t0


def _job(
    out: Path, name: str, done_file: str, argv: list[str], reuse: bool
) -> Callable[[], tuple[int, float]]:
    """Run ``python -m rlalign ARGV`` into ``out/NAME`` from scratch, or keep a finished run
    (one holding ``done_file``) with ``reuse``."""

    def job() -> tuple[int, float]:
        if reuse and (out / name / done_file).exists():
            return 0, 0.0
        shutil.rmtree(out / name, ignore_errors=True)
        return _run(argv, out / f"{name}.log")

    return job


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rlalign.goals",
        description="Run the demo for each world seed and the default car run, check the "
        "README's goals on them, print and write the tables.",
    )
    parser.add_argument("--seeds", default="0", help="world seeds, e.g. 0 or 0-9 (default 0)")
    parser.add_argument("--out", type=Path, default=Path("build/goals"), help="runs and tables")
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs at a time (default: the cores over the demo's torch threads)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="run `rlalign demo --quick` and check that each of its stages learns (the full "
        "demo's goals need the full flow)",
    )
    parser.add_argument("--no-car", action="store_true", help="skip the car")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo (the car alone)")
    parser.add_argument(
        "--reuse", action="store_true", help="keep runs that finished before (rebuild the tables)"
    )
    parser.add_argument(
        "--root", type=Path, default=Path("."), help="where README.md and docs/ are (default: .)"
    )
    args = parser.parse_args(argv)
    try:
        return _main(args)
    except UserError as e:
        print(f"python -m rlalign.goals: {e}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    seeds = [] if args.no_demo else parse_seeds(args.seeds)
    if args.no_demo and args.no_car:
        raise UserError("--no-demo and --no-car leave nothing to check")
    # The full demo runs with its default threads, so that each row is the card `rlalign demo
    # seed=N` prints on this machine; the quick demo's checks do not depend on the card's
    # digits, and one thread lets it run beside the car.
    demo_args = ["num_threads=1"] if args.quick else []
    threads = 1 if args.quick or not seeds else (demo_threads(DemoConfig()) or 1)
    if args.jobs is None:
        args.jobs = max(1, (os.cpu_count() or 1) // threads)
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    args.out.mkdir(parents=True, exist_ok=True)
    jobs: dict[str, Callable[[], tuple[int, float]]] = {}
    if not args.no_car:  # the longest single run first, so that it overlaps the demos
        argv = ["control", "train", "--env", CAR_ENV, "--out", str(args.out / "car")]
        jobs["car"] = _job(args.out, "car", "result.json", [*argv, "--no-progress"], args.reuse)
    # the quick demo's runs, tables and quoting blocks are named apart from the full demo's
    prefix, which, block = (
        ("quick-seed", "quick demo", "quick seeds") if args.quick else ("seed", "demo", "seeds")
    )
    for seed in seeds:
        name = f"{prefix}-{seed}"
        argv = ["demo", *(["--quick"] if args.quick else []), "--out", str(args.out / name)]
        argv += [f"seed={seed}", *demo_args]
        jobs[name] = _job(args.out, name, "report.json", argv, args.reuse)
    print(
        f"goals: {len(jobs)} runs ({', '.join(jobs)}), {args.jobs} at a time (the demo on "
        f"{threads} torch thread{'s' if threads > 1 else ''}), in {args.out}"
    )
    t0 = time.perf_counter()
    outcomes: dict[str, tuple[int, float]] = {}

    def tracked(name: str) -> None:
        outcomes[name] = jobs[name]()
        code, secs = outcomes[name]
        if code != 0:
            status = f"FAILED after {secs:.0f} s (exit {code}; see {args.out / (name + '.log')})"
        else:
            status = f"done in {secs:.0f} s" if secs else "kept from an earlier run (--reuse)"
        print(f"goals: {name} {status}", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(tracked, jobs))
    wall = time.perf_counter() - t0
    failed = [n for n, (code, _) in outcomes.items() if code != 0]
    if failed:
        print(f"goals: runs failed: {', '.join(failed)}", file=sys.stderr)
        return 1

    ok = True
    summary: dict[str, Any] = {"seeds": seeds, "wall_seconds": round(wall, 1), "runs": {}}
    text = ""
    if seeds:
        label = seeds_label(seeds)
        rows: dict[int, list[Goal]] = {}
        reports = []
        for seed in seeds:
            run_dir = args.out / f"{prefix}-{seed}"
            report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
            reports.append(report)
            if args.quick:
                rows[seed] = quick_demo_goals(report)
            else:
                kl = rl_kl(run_dir, report.get("config", {}).get("rl_runs", 1))
                rows[seed] = demo_goals(report, kl)
            summary["runs"][f"{prefix}-{seed}"] = {
                "goals": [asdict(g) for g in rows[seed]],
                "seconds": report["seconds"],
                "wall_seconds": round(outcomes[f"{prefix}-{seed}"][1], 1),
            }
        settings = run_settings(reports)
        table = demo_table(rows, machine() + (f"; {settings}" if settings else ""))
        if not args.quick:
            table += "\n\n" + rl_against_sft([r["stages"] for r in reports])
        met = sum(all_met(g) for g in rows.values())
        need = required_rows(len(seeds))
        print(f"\nThe {which}'s goals, world seeds {label}:\n\n{table}\n")
        if met < need:
            ok = False
            print(f"goals: NOT MET: {met} of {len(seeds)} world seeds meet every goal; {need} must")
        text += f"## The {which}, world seeds {label}\n\n{table}\n"
        for path in publish(args.root, f"{block}={label}", table):
            print(f"goals: wrote the table into {path}")
        if not args.quick:  # each world seed's report card, where a file quotes it
            for seed, report in zip(seeds, reports, strict=True):
                card = f"```\n{format_card(report['stages'])}\n```"
                for path in publish(args.root, f"card seed={seed}", card):
                    print(f"goals: wrote world seed {seed}'s report card into {path}")

    if not args.no_car:
        result = json.loads((args.out / "car" / "result.json").read_text(encoding="utf-8"))
        goals = car_goals(result)
        summary["runs"]["car"] = {
            "goals": [asdict(g) for g in goals],
            "wall_seconds": round(result["wall_seconds"], 1),
        }
        table = car_table(result)
        marks = "; ".join(f"{g.name}: {g.shown}{'' if g.met else ' ✗'}" for g in goals)
        print(
            f"The car ({CAR_ENV}, PPO seed {result['seed']}, the defaults):\n\n{table}\n\n{marks}\n"
        )
        if not all_met(goals):
            ok = False
            print("goals: NOT MET: the car misses " + ", ".join(g.name for g in goals if not g.met))
        text += ("\n" if text else "") + f"## The car\n\n{table}\n\n{marks}\n"
        for path in publish(args.root, "car", table):
            print(f"goals: wrote the car's table into {path}")

    summary["met"] = ok
    (args.out / "goals.md").write_text(text, encoding="utf-8")
    (args.out / "goals.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    times = ", ".join(f"{n} {outcomes[n][1]:.0f} s" for n in jobs)
    print(f"goals: {'met' if ok else 'NOT MET'}; wall {wall:.0f} s ({times}); {args.out}/goals.md")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
