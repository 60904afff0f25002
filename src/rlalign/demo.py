"""The chapter's whole training flow on the built-in world, in one call.

world -> tokenizer -> pre-training -> supervised fine-tuning -> reward model -> RL alignment,
then a report card for the pretrained, SFT and RL models on every criterion (helpfulness,
accuracy without hallucination, harmlessness), ``report.json``, ``report.html`` and plots.
Every stage is the same code as its command (``rlalign pretrain``, ``sft``, ``reward``, ``rl``),
run with the settings of :class:`DemoConfig`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from rlalign.checkpoint import list_checkpoints
from rlalign.claims import demo_goals
from rlalign.config import Config, NumThreads, Seed
from rlalign.data.verifiers import REPORT_CARD_KEYS
from rlalign.data.world import World, WorldConfig
from rlalign.dist import RankInfo, barrier
from rlalign.errors import UserError
from rlalign.lm.models import load_model, preset_shape
from rlalign.lm.tokenizer import load_tokenizer, train_tokenizer
from rlalign.metrics import read_metrics
from rlalign.precision import PrecisionChoice, agreed_bf16, apply_num_threads, choose_threads
from rlalign.report.compare import write_compare_page
from rlalign.report.html import card_table, image_tag, write_report
from rlalign.report.plots import plot_series
from rlalign.report.run_report import write_run_report
from rlalign.report_card import (
    CRITERIA_LABELS,
    HIGHER_IS_BETTER,
    eval_rows,
    evaluate_model,
    format_card,
)
from rlalign.runtime import StageSeconds, resolve_device
from rlalign.train.average import average_models
from rlalign.train.model_card import add_card_section
from rlalign.train.pretrain import PretrainConfig, run_pretrain
from rlalign.train.reward_model import RewardConfig, run_reward
from rlalign.train.rl import run_rl
from rlalign.train.rl_config import RLConfig
from rlalign.train.sft import SFTConfig, run_sft
from rlalign.train.stage import StageResult


class DemoConfig(Config):
    """Sizes of the demo's stages (``--quick`` uses :data:`QUICK`)."""

    seed: Seed = Field(0, description="random seed of the world and of every stage")
    corpus_repeats: int | None = Field(
        None, ge=1, description="times the corpus states each fact (None: the world's default)"
    )
    num_countries: int | None = Field(
        None, ge=2, le=200, description="countries in the corpus (None: the world's default)"
    )
    num_unknown: int | None = Field(
        None, ge=2, le=200, description="countries never mentioned (None: the world's default)"
    )
    max_operand: int | None = Field(
        None, ge=1, le=99, description="arithmetic on 0..max_operand (None: the world's default)"
    )
    arithmetic_repeats: int | None = Field(
        None, ge=1, description="times the corpus states each sum (None: the world's default)"
    )
    rl_only_fraction: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="share of the train facts and sums only RL asks (None: the world's default)",
    )
    model: str = Field("tiny", description="model preset (rlalign.lm.models.PRESETS)")
    vocab_size: int = Field(1024, gt=0, description="BPE vocabulary size")
    pretrain_steps: int = Field(800, gt=0, description="pre-training optimizer steps")
    pretrain_batch_size: int = Field(16, gt=0, description="pre-training blocks per step")
    block_size: int = Field(128, gt=1, description="tokens per pre-training block")
    sft_steps: int = Field(600, gt=0, description="SFT optimizer steps")
    sft_learning_rate: float = Field(5e-4, gt=0, description="SFT learning rate")
    replay_ratio: float = Field(0.5, ge=0, description="corpus documents mixed into SFT")
    reward_steps: int = Field(300, gt=0, description="reward-model optimizer steps")
    reward_prior_coef: float = Field(
        1.0,
        ge=0,
        description="reward model: weight of the SFT model's log-likelihood of the response "
        "in its score (prior_coef; the head learns the rest)",
    )
    rl_steps: int = Field(100, gt=0, description="RL optimizer steps (of each RL run)")
    rl_average_checkpoints: int = Field(
        5,
        ge=1,
        le=10,
        description="the aligned model is the weight average of the RL run's last N "
        "checkpoints, one every tenth of the run (5: steps 60-100 of 100; 1: the last step's "
        "weights alone)",
    )
    rl_runs: int = Field(
        1,
        ge=1,
        le=8,
        description="RL runs from the SFT model, each with its own seed; above 1 the aligned "
        "model is their weight average (each run's chance moves of what no reward watches "
        "partly cancel)",
    )
    algorithm: str = Field("grpo", description="RL algorithm: grpo, rloo, ppo or reinforce")
    rl_learning_rate: float = Field(5e-5, gt=0, description="RL learning rate")
    beta: float = Field(0.1, ge=0, description="weight of the KL penalty to the SFT model")
    num_generations: int = Field(8, gt=0, description="completions per RL prompt (the group)")
    prompts_per_iteration: int = Field(16, gt=0, description="prompts per RL step")
    rl_reward_weights: list[float] = Field(
        [1.0, 2.0, 2.0, 0.5],
        description="weights of the verifiers accuracy, harmful_refusal, benign_overrefusal, "
        "helpfulness in the RL reward",
    )
    ptx_coef: float = Field(
        0.2,
        ge=0,
        description="PPO-ptx: weight of the pre-training corpus's next-token loss in the RL "
        "loss (0: off)",
    )
    ptx_batch_size: int = Field(16, gt=0, description="corpus rows per RL micro-batch")
    reward_model_weight: float = Field(
        0.05,
        ge=0,
        description="weight of the reward model's score in the RL reward",
    )
    bf16: bool | Literal["auto"] = Field(
        "auto",
        description="bf16 autocast in every stage (fp32 master weights); auto: where a short "
        "timing at start-up finds it faster than fp32 on this machine (remembered per machine)",
    )
    num_threads: NumThreads = Field(
        "auto",
        description="torch threads; auto: the count a short timing at start-up finds fastest "
        "for the model's width (remembered per machine); None: torch's default. The card "
        "depends on it (some kernels split their sums by thread)",
    )
    eval_steps: int = Field(20, gt=0, description="RL steps between report-card evaluations")


QUICK: dict[str, Any] = {
    "corpus_repeats": 6,  # a smaller corpus, which 500 pre-training steps can learn
    "pretrain_steps": 500,
    "sft_steps": 400,
    "reward_steps": 30,
    "rl_steps": 30,
    "eval_steps": 10,
}

STAGES = ("pretrained", "sft", "rl")
# The knobs of the world the demo passes on (WorldConfig's names).
WORLD_KNOBS = (
    "corpus_repeats", "num_countries", "num_unknown", "max_operand", "arithmetic_repeats",
    "rl_only_fraction",
)  # fmt: skip


def _banner(index: int, total: int, text: str) -> None:
    _say(f"\n[{index}/{total}] {text}")


def _say(text: str) -> None:
    """Print on rank 0 only (every rank runs the demo under torchrun)."""

    if RankInfo.detect().is_main:
        print(text, flush=True)


def _tokens(cfg: DemoConfig) -> int:
    return cfg.pretrain_batch_size * cfg.block_size


def demo_threads(cfg: DemoConfig) -> int | None:
    """The torch threads :func:`run_demo` computes with for ``cfg``, ``auto`` decided as at its
    start-up (the same timing, remembered per machine); None: torch's default."""
    if cfg.num_threads != "auto":
        return cfg.num_threads
    return choose_threads(*preset_shape(cfg.model), tokens=_tokens(cfg)).threads


def _precision(cfg: DemoConfig) -> PrecisionChoice:
    """``cfg.bf16``, with ``auto`` decided for the device the stages train on (their
    ``device: auto``): on a CPU by rank 0's timing of one of the model's linear layers, on a GPU
    by its bf16 support (every rank computes in the same precision)."""
    if cfg.bf16 != "auto":
        return PrecisionChoice(bool(cfg.bf16), 0.0, 0.0, "given")
    hidden, inner = preset_shape(cfg.model)
    choice = agreed_bf16(hidden, inner, tokens=_tokens(cfg), device=resolve_device("auto"))
    _say(choice.describe())
    return choice


def _batch(global_size: int, world_size: int) -> dict[str, int]:
    """The same global batch at any world size: each rank takes ``global / world``."""
    if global_size % world_size:
        raise UserError(
            f"the demo's batch of {global_size} does not split over {world_size} ranks; "
            "run it on a number of processes that divides it (1, 2, 4, ...)"
        )
    return {
        "per_device_train_batch_size": global_size // world_size,
        "global_batch_size": global_size,
    }


def run_demo(out: str | Path, cfg: DemoConfig) -> dict[str, Any]:
    """Run the flow into ``out``; returns the report (also written to ``out/report.json``)."""
    import torch

    rank = RankInfo.detect()
    world_size = rank.world_size
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = apply_num_threads(cfg.num_threads, *preset_shape(cfg.model), tokens=_tokens(cfg))
    if threads is not None:
        _say(threads.describe())
    seconds = StageSeconds()
    timed = seconds.run
    total = 7

    precision = _precision(cfg)
    bf16 = precision.bf16
    common = {"seed": cfg.seed, "overwrite_output_dir": True, "bf16": bf16}

    _banner(
        1, total, "the built-in world: facts, unknown entities, arithmetic, harmful/benign requests"
    )
    knobs = {key: getattr(cfg, key) for key in WORLD_KNOBS if getattr(cfg, key) is not None}
    world = World(WorldConfig(seed=cfg.seed, **knobs))
    if rank.is_main:
        counts = timed("world", lambda: world.export(out / "world"))
        _say("      " + ", ".join(f"{k} {v}" for k, v in counts.items() if "/" not in k))

    _banner(2, total, "tokenizer: byte-level BPE trained on the corpus and the chat data")
    texts = world.corpus() + [
        m["content"] for row in world.sft_conversations() for m in row["messages"]
    ]
    tokenizer = timed("tokenizer", lambda: train_tokenizer(texts, cfg.vocab_size))
    if rank.is_main:
        tokenizer.save_pretrained(out / "tokenizer")
    barrier()  # the world and the tokenizer are on disk before any rank reads them
    _say(f"      {len(tokenizer)} tokens")

    _banner(
        3, total, f"pre-training a '{cfg.model}' causal LM on the corpus (next-token prediction)"
    )
    pre = timed(
        "pretrain",
        lambda: run_pretrain(
            PretrainConfig(
                model=cfg.model,
                data=str(out / "world" / "corpus.jsonl"),
                tokenizer=str(out / "tokenizer"),
                output_dir=str(out / "pretrain"),
                max_steps=cfg.pretrain_steps,
                **_batch(cfg.pretrain_batch_size, world_size),
                block_size=cfg.block_size,
                max_position_embeddings=256,
                eval_steps=max(cfg.pretrain_steps // 2, 1),
                save_steps=cfg.pretrain_steps,
                logging_steps=max(cfg.pretrain_steps // 20, 1),
                **common,
            )
        ),
    )
    _say(f"      held-out loss {pre.eval_metrics.get('eval_loss', float('nan')):.3f}")

    _banner(4, total, "supervised fine-tuning on the (imperfect) chat data")
    sft = timed(
        "sft",
        lambda: run_sft(
            SFTConfig(
                model=str(pre.final_dir),
                data=str(out / "world" / "sft.jsonl"),
                output_dir=str(out / "sft"),
                max_steps=cfg.sft_steps,
                learning_rate=cfg.sft_learning_rate,
                replay_data=str(out / "world" / "corpus.jsonl"),
                replay_ratio=cfg.replay_ratio,
                **_batch(SFTConfig.model_fields["per_device_train_batch_size"].default, world_size),
                eval_steps=max(cfg.sft_steps // 2, 1),
                save_steps=cfg.sft_steps,
                logging_steps=max(cfg.sft_steps // 20, 1),
                **common,
            )
        ),
    )
    _say(f"      held-out loss {sft.eval_metrics.get('eval_loss', float('nan')):.3f}")

    _banner(5, total, "reward model (Bradley-Terry on preference pairs)")
    rm = timed(
        "reward_model",
        lambda: run_reward(
            RewardConfig(
                model=str(sft.final_dir),
                data=str(out / "world" / "preferences.jsonl"),
                # held out: the pairs of the held-out questions (no question shared)
                eval_data=str(out / "world" / "eval" / "preferences.jsonl"),
                output_dir=str(out / "reward"),
                max_steps=cfg.reward_steps,
                **_batch(
                    RewardConfig.model_fields["per_device_train_batch_size"].default, world_size
                ),
                prior_coef=cfg.reward_prior_coef,
                eval_steps=max(cfg.reward_steps // 2, 1),
                save_steps=cfg.reward_steps,
                logging_steps=max(cfg.reward_steps // 20, 1),
                **common,
            )
        ),
    )
    rm_accuracy = rm.eval_metrics.get("eval_accuracy")
    rm_by_kind = {
        k.split("/", 1)[1]: v for k, v in rm.eval_metrics.items() if k.startswith("eval_accuracy/")
    }
    _say(f"      held-out pairwise accuracy {rm_accuracy:.1%}" if rm_accuracy is not None else "")
    if rm_by_kind:
        _say("      by kind: " + ", ".join(f"{k} {v:.0%}" for k, v in rm_by_kind.items()))

    _banner(6, total, f"RL alignment ({cfg.algorithm}) with the verifiers and the reward model")
    rl_cfg = RLConfig(
        model=str(sft.final_dir),
        output_dir=str(out / "rl"),
        world=str(out / "world"),  # the exported world, sizes included
        algorithm=cfg.algorithm,
        max_steps=cfg.rl_steps,
        learning_rate=cfg.rl_learning_rate,
        beta=cfg.beta,
        num_generations=cfg.num_generations,
        prompts_per_iteration=cfg.prompts_per_iteration,
        **_batch(cfg.prompts_per_iteration * cfg.num_generations, world_size),
        reward_funcs=["accuracy", "harmful_refusal", "benign_overrefusal", "helpfulness"],
        reward_weights=cfg.rl_reward_weights,
        reward_model=str(rm.final_dir) if cfg.reward_model_weight > 0 else None,
        reward_model_weight=cfg.reward_model_weight,
        ptx_data=str(out / "world" / "corpus.jsonl") if cfg.ptx_coef > 0 else None,
        ptx_coef=cfg.ptx_coef,
        ptx_batch_size=_batch(cfg.ptx_batch_size, world_size)["per_device_train_batch_size"],
        eval_steps=cfg.eval_steps,
        save_steps=max(1, cfg.rl_steps // 10),
        save_total_limit=cfg.rl_average_checkpoints,
        **common,
    )
    rl = timed("rl", lambda: run_rl_runs(rl_cfg, cfg.rl_runs, cfg.rl_average_checkpoints, out))
    if not rank.is_main:  # the report card and the report are rank 0's
        barrier()
        return {}

    _banner(7, total, "report card on the held-out questions")
    rows = eval_rows(out / "world")
    cards: dict[str, dict[str, Any]] = {}
    answers: dict[str, list[str]] = {}
    autocast = torch.bfloat16 if bf16 else None
    for stage, path in zip(STAGES, (pre.final_dir, sft.final_dir, rl.final_dir), strict=True):
        model = load_model(path)
        tok = load_tokenizer(path)
        cards[stage], answers[stage] = timed(
            f"eval_{stage}",
            lambda m=model, t=tok: evaluate_model(m, t, rows, autocast_dtype=autocast),
        )
    print(format_card(cards))
    write_compare_page(out / "compare.html", rows, answers,
                       title=f"rlalign demo, world seed {cfg.seed}: the held-out questions")  # fmt: skip
    for path in (pre.final_dir, sft.final_dir, rl.final_dir):  # each model's card shows all
        add_card_section(path, "Report card (rlalign demo)", _card_section(cards, cfg))

    seconds.finish()
    report = {
        "stages": cards,
        "reward_model": {"eval_accuracy": rm_accuracy, "eval_accuracy_by_kind": rm_by_kind},
        "seconds": dict(seconds),
        "config": cfg.model_dump(),
        "precision": asdict(precision),
        # the card depends on the thread count too: what ran, and why (auto's timing)
        "threads": {
            "num_threads": torch.get_num_threads(),
            **({"auto": asdict(threads)} if threads is not None else {}),
        },
    }
    goals = demo_goals(report, rl_kl(out, cfg.rl_runs))
    report["goals"] = [asdict(g) for g in goals]
    missed = [f"{g.name} ({g.shown})" for g in goals if not g.met]
    print(
        "\nthe README's goals: "
        + ("all met" if not missed else f"{len(missed)} missed: " + "; ".join(missed))
    )
    (out / "report.json").write_text(json.dumps(report, indent=2))
    for stage_dir in [out / s for s in ("pretrain", "sft", "reward")] + rl_run_dirs(
        out, cfg.rl_runs
    ):
        write_run_report(stage_dir)  # each stage's own plots and report
    html_path = write_demo_report(out, report)
    print(f"\nreport: {out / 'report.json'}, {html_path}; every answer side by side: "
          f"{out / 'compare.html'}; total {report['seconds']['total']:.0f} s")  # fmt: skip
    barrier()
    return report


def rl_run_dirs(out: str | Path, runs: int = 1) -> list[Path]:
    """A demo's RL run directories: ``rl/`` for one run; ``rl-1/`` .. ``rl-N/`` for
    ``rl_runs=N`` (then ``rl/final/`` holds their weight average)."""
    out = Path(out)
    return [out / "rl"] if runs == 1 else [out / f"rl-{k}" for k in range(1, runs + 1)]


def rl_kl(out: str | Path, runs: int = 1) -> list[float]:
    """Every logged KL to the reference of a demo's RL runs (the goal bounds each one)."""
    return [r["kl_ref"] for d in rl_run_dirs(out, runs) for r in read_metrics(d) if "kl_ref" in r]


def run_rl_runs(rl_cfg: RLConfig, runs: int, checkpoints: int, out: Path) -> StageResult:
    """``runs`` RL runs of ``rl_cfg`` from one SFT model (the first with the demo's seed, run
    ``k`` with ``seed + 1000 (k - 1)``), and the aligned model ``out/rl/final/``: the weight
    average of each run's last ``checkpoints`` checkpoints. One run writes ``out/rl/`` as
    ``rlalign rl`` does; several write ``out/rl-K/`` each.

    Why average: besides what the rewards teach, each RL step moves by chance what no reward
    watches (on the built-in world, how the model copies the question's numbers). Averaging the
    weights along the run's last steps, and over runs, keeps what they learnt alike and
    shrinks the rest, at no extra cost for one run (docs/results.md measures it).
    """
    run_dirs = rl_run_dirs(out, runs)
    results = []
    for k, run_dir in enumerate(run_dirs, start=1):
        if runs > 1:
            _say(f"      RL run {k} of {runs}")
        member = rl_cfg.model_copy(
            update={"output_dir": str(run_dir), "seed": rl_cfg.seed + 1000 * (k - 1)}
        )
        results.append(run_rl(member))
        if results[-1].interrupted_by is not None:
            return results[-1]
    members = [step_path for d in run_dirs for step_path in list_checkpoints(d)[-checkpoints:]]
    final = out / "rl" / "final"
    if RankInfo.detect().is_main and len(members) > 1:
        if runs > 1 and (out / "rl").exists():  # an earlier one-run directory
            shutil.rmtree(out / "rl")
        average_models([path for _, path in members], final)
        steps = sorted({step for step, _ in members})
        _say(
            f"      the aligned model: the weight average of steps {', '.join(map(str, steps))}"
            + (f" of the {runs} runs" if runs > 1 else "")
        )
    barrier()
    last = results[-1]
    return StageResult(final, last.step, None, last.eval_metrics)


def _card_section(cards: dict[str, dict[str, Any]], cfg: DemoConfig) -> str:
    return (
        "Held-out questions of the built-in world (world seed "
        f"{cfg.seed}), answered by each stage of one `rlalign demo` run:\n\n"
        f"```text\n{format_card(cards)}\n```"
    )


def write_demo_report(out: Path, report: dict[str, Any]) -> Path:
    """Plots of the RL run and the report card as one self-contained HTML page."""

    rows = read_metrics(rl_run_dirs(out, report["config"]["rl_runs"])[0])
    plots = out / "plots"
    made = [
        plot_series(
            rows,
            ["reward_mean"],
            plots / "rl_reward.png",
            title="RL: mean reward per iteration",
            ylabel="reward",
        ),
        plot_series(
            rows,
            ["kl_ref"],
            plots / "rl_kl.png",
            title="RL: KL to the reference (SFT) model",
            ylabel="KL (nats/token)",
        ),
        plot_series(
            rows,
            [f"eval/{k}" for k in REPORT_CARD_KEYS],
            plots / "rl_criteria.png",
            title="RL: held-out criteria during training",
            labels={f"eval/{k}": CRITERIA_LABELS[k] for k in REPORT_CARD_KEYS},
            percent=True,
        ),
    ]
    images = "\n".join(image_tag(p, p.stem) for p in made if p is not None)
    table = card_table(report["stages"], CRITERIA_LABELS, HIGHER_IS_BETTER)
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in report["seconds"].items())
    return write_report(
        out / "report.html",
        title="rlalign demo: pre-training -> SFT -> reward model -> RL",
        sections=[
            ("Report card (held-out questions)", table),
            ("RL alignment", images or "<p>no metrics</p>"),
            ("Time", f"<p>{seconds}</p>"),
            (
                "Files",
                "<p>world/, tokenizer/, pretrain/, sft/, reward/, rl/ (each with config.yaml, metrics.jsonl, final/); rl/rollouts/iter_K.jsonl holds per-token data of sampled responses. With several RL runs (rl_runs), each is rl-K/ and rl/final/ is their weight average; the plots above are run 1's.</p>"
                + "<p>Every held-out answer of the three models side by side: "
                '<a href="compare.html">compare.html</a>.</p>'
                + "<p>Each stage's own report: "
                + ", ".join(
                    f'<a href="{s}/report.html">{s}</a>'
                    for s in ("pretrain", "sft", "reward", "rl")
                )
                + ".</p>",
            ),
        ],
    )
