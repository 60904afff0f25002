"""The one training loop that every stage (pretrain, SFT, reward model, RL) plugs into.

A stage supplies three things and never copies the loop:

- a **batch source**: an iterator of micro-batches (any structure of tensors) with
  ``state_dict()`` / ``load_state_dict()``, so a resumed run sees the same data in the same
  order (:class:`BatchSource`);
- a **loss function** ``loss_fn(model, batch, num_items) -> (loss, metrics)``: ``num_items``
  is the number of loss terms (tokens, pairs, sequences) in the *whole* optimizer step, all
  micro-batches together, so the loss returns ``sum_over_its_items / num_items`` and gradient
  accumulation gives exactly the update of one big batch. Metrics are normalised the same way
  and are summed over the micro-batches of a step;
- a **count function** ``count_fn(batch) -> int | Tensor``: the loss terms of one micro-batch.

Optionally an ``eval_fn(model) -> dict[str, float]`` (run under no_grad, eval mode, autocast,
every ``eval_steps`` and at the end) and ``save_extra(directory)`` (writes e.g. the tokenizer
into every checkpoint).

On-policy RL collects what it learns from: its batch source is also an :class:`OnPolicySource`,
and the loop shows the two phases of RL by name, as Stable-Baselines3's ``collect_rollouts()``
then ``train()`` do. When the source has served every pass over its rollout, the loop calls
``collect_rollout()`` (the policy acts: sample, score, credit) before the next step; the
rollout's metrics (rewards, lengths, KL) join the next logged row.

One optimizer step, top to bottom::

    if rollouts.needs_rollout(): rollouts.collect_rollout()          # RL only
    micro = [next(data) for _ in range(gradient_accumulation_steps)]
    num_items = sum(count_fn(b) for b in micro)
    for b in micro: loss_fn(model, b, num_items)[0].backward()       # bf16 autocast optional
    clip_grad_norm_; stop on a non-finite loss/grad norm; optimizer.step(); scheduler.step()
    log / evaluate / checkpoint when due; SIGTERM or SIGINT -> checkpoint and return

A checkpoint is written only when every weight is finite, and a held-out loss of NaN or
infinity stops the run, so the newest checkpoint is always a good one to resume from.
Checkpoints (see :mod:`rlalign.checkpoint`) are atomic and hold model, optimizer,
scheduler, RNG states, data position and the metrics window, so ``fit(resume=True)`` continues
exactly where the run stopped (on CPU, bit-identical weights).

Under ``torchrun`` the same loop runs data-parallel (:mod:`rlalign.train.parallel`: DDP or
FSDP2). Every rank reads the same global stream of micro-batches and keeps its share
(:class:`~rlalign.train.data.RankShard`); ``num_items`` is summed over ranks and each rank's
loss is multiplied by the world size before ``backward`` (DDP/FSDP average gradients), so a
step equals the single-process step with the same global batch. Logged losses and metrics are
reduced over ranks; only rank 0 writes files and shows progress; a stop signal seen by any rank
stops every rank at the same step.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from tqdm.auto import tqdm

from rlalign import checkpoint as ckpt
from rlalign.dist import RankInfo, all_ranks_true, all_reduce_sum, barrier
from rlalign.errors import NonFiniteLossError, UserError
from rlalign.lm.fast_linear import fp32_prefers_onednn, training_linears
from rlalign.metrics import MetricsLogger
from rlalign.runtime import StopSignals, resolve_device, uses_bf16
from rlalign.train import parallel
from rlalign.train.config import TrainingConfig
from rlalign.train.data import RankShard
from rlalign.train.schedule import WarmupCosine, warmup_cosine_schedule

Batch = Any
LossFn = Callable[[nn.Module, Batch, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
CountFn = Callable[[Batch], "int | torch.Tensor"]
EvalFn = Callable[[nn.Module], dict[str, float]]


@runtime_checkable
class BatchSource(Protocol):
    """An endless, resumable iterator of micro-batches."""

    def __iter__(self) -> Iterator[Batch]: ...
    def __next__(self) -> Batch: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class OnPolicySource(BatchSource, Protocol):
    """A batch source that serves micro-batches of rollouts it collects itself (on-policy RL).

    ``collect_rollout()`` runs the current policy and returns the rollout's metrics;
    ``needs_rollout()`` is true once the last rollout has been served (or before the first).
    A rollout spans whole optimizer steps, so collecting between steps is exact.
    """

    def needs_rollout(self) -> bool: ...
    def collect_rollout(self) -> dict[str, float]: ...


@dataclass
class FitResult:
    """How :meth:`Trainer.fit` ended."""

    step: int
    interrupted_by: int | None = None  # the signal number when SIGTERM/SIGINT stopped the run
    last_checkpoint: Path | None = None
    eval_metrics: dict[str, float] = field(default_factory=dict)


def move_to(batch: Batch, device: torch.device) -> Batch:
    """Move every tensor of a nested dict/list/tuple batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of an FSDP2 parameter (a DTensor); a plain tensor as it is."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def build_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.AdamW:
    """AdamW; matrices decay, biases and norm gains do not (as in nanoGPT and HF).

    The fused kernel (one pass over all parameters, no per-tensor Python loop) is used where
    the device supports it; it is deterministic, so resume stays bit-exact.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": group, "weight_decay": wd}
        for group, wd in ((decay, cfg.weight_decay), (no_decay, 0.0))
        if group
    ]
    device_type = params[0].device.type if params else "cpu"
    return torch.optim.AdamW(
        groups,
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_epsilon,
        fused=device_type in {"cpu", "cuda"},
    )


def training_attention(cfg: TrainingConfig, device: torch.device, bf16: bool) -> str | None:
    """The attention implementation to train with; None keeps the model's own.

    ``auto`` picks ``eager`` (plain matmuls)

    - for bf16 autocast on CPU: there the matmuls run on the AMX tile units while PyTorch's CPU
      flash-attention kernel does not, and a training step of the ~25M preset at 256 tokens is
      ~1.6x faster (bench/bench_train.py ``--attn``);
    - on GPUs for stages whose batches are left-padded (RL: prompts of different lengths):
      a pad position attends to nothing, and the CUDA SDPA kernels' backward turns such fully
      masked rows into NaN gradients (seen on an H200, bf16, at RL step 2), where eager
      attention's finite mask value does not.
    """
    if cfg.attn_implementation != "auto":
        return cfg.attn_implementation
    if device.type == "cpu":
        return "eager" if bf16 else None
    return "eager" if getattr(cfg, "left_padded_batches", False) else None


@contextlib.contextmanager
def attention_kernels(model: nn.Module, name: str | None) -> Iterator[None]:
    """Switch a HF model's attention implementation for a block, then restore it."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    switchable = hasattr(model, "set_attn_implementation")  # a wrapper is left as it is
    if name is None or before is None or name == before or not switchable:
        yield
        return
    try:
        model.set_attn_implementation(name)
    except (ValueError, ImportError) as exc:
        raise UserError(f"attn_implementation={name!r}: {exc}".splitlines()[0]) from None
    try:
        yield
    finally:
        model.set_attn_implementation(before)


class _Window:
    """Sums of the steps since the last logged row (tensors: no sync until logging)."""

    def __init__(self) -> None:
        self.steps = 0
        self.loss = torch.zeros((), dtype=torch.float64)
        self.items = torch.zeros((), dtype=torch.float64)
        self.metrics: dict[str, torch.Tensor] = {}
        self.started = time.perf_counter()

    def add(self, loss: torch.Tensor, items: torch.Tensor, metrics: dict[str, torch.Tensor]):
        self.steps += 1
        self.loss += loss.double().cpu()
        self.items += items.double().cpu()
        for key, value in metrics.items():
            self.metrics[key] = self.metrics.get(key, 0.0) + value.double().cpu()

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "loss": self.loss,
            "items": self.items,
            "metrics": self.metrics,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps, self.loss, self.items = state["steps"], state["loss"], state["items"]
        self.metrics = dict(state["metrics"])


class Trainer:
    """Trains ``model`` on ``train_data`` with ``loss_fn``; see the module docstring.

    Construction moves the model to ``cfg.device`` and builds the optimizer and schedule;
    :meth:`fit` runs the loop (resuming first when asked); :meth:`train_step` is one optimizer
    step, public for benchmarks and for stages that need to drive steps themselves.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        train_data: BatchSource,
        cfg: TrainingConfig,
        *,
        count_fn: CountFn,
        eval_fn: EvalFn | None = None,
        save_extra: Callable[[Path], None] | None = None,
        item_name: str = "items",
        rank: RankInfo | None = None,
    ) -> None:
        self.cfg = cfg
        self.rank = rank or RankInfo.detect()
        self.device = resolve_device(cfg.device, self.rank)
        self.accumulation = cfg.accumulation_steps(self.rank.world_size)
        self.bf16 = uses_bf16(cfg.bf16, self.device, model)
        # fp32 master weights; autocast computes in bf16. ``module`` is the model itself,
        # ``model`` what trains (the same object, or its DDP wrapper; FSDP2 shards in place).
        self.module = model.to(self.device)
        self.model = parallel.wrap_for_training(
            self.module, cfg.distributed, self.device, bf16=self.bf16
        )
        # Why compile is opt-in: at d = 128 a step is mostly the fixed cost of small elementwise
        # ops, which compiling fuses (the `tiny` preset trains 1.1-1.2x faster), but it costs
        # about 30 s before the first step and rounds differently from eager (docs/benchmarks.md).
        # The compiled wrapper computes the loss only: parameter names, checkpoints and
        # evaluation stay those of ``model``, so a run may be resumed with or without compiling.
        self.training_forward = torch.compile(self.model) if cfg.torch_compile else self.model
        self.loss_fn, self.count_fn, self.eval_fn = loss_fn, count_fn, eval_fn
        self.data = train_data
        # On-policy RL: the source itself, before any rank sharding (every rank collects).
        self.rollouts = train_data if isinstance(train_data, OnPolicySource) else None
        self.rollout_metrics: list[dict[str, float]] = []  # since the last logged row
        if self.rank.distributed:
            self.data = RankShard(train_data, self.rank.rank, self.rank.world_size)
        self.save_extra = save_extra
        self.item_name = item_name
        self.output_dir = Path(cfg.output_dir)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = warmup_cosine_schedule(
            self.optimizer,
            warmup_steps=cfg.warmup_steps,
            max_steps=cfg.max_steps,
            min_lr_ratio=cfg.min_lr_ratio,
        )
        self.step = 0
        self.last_lr = cfg.learning_rate
        self.window = _Window()

    # --- the loop ------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> FitResult:
        """Train until ``max_steps`` (or a stop signal); returns how it ended."""
        cfg = self.cfg
        if not resume and ckpt.list_checkpoints(self.output_dir):
            # a fresh run would mix its checkpoints with the earlier run's, and pruning keeps
            # the highest step numbers: its own newest would be deleted, the old ones kept
            raise UserError(
                f"{self.output_dir} holds checkpoints of an earlier run: continue it with "
                "fit(resume=True), or train in an empty directory"
            )
        if self.rank.is_main:  # what a killed run was writing is of no use to this one
            ckpt.remove_stale_temporaries(self.output_dir)
        resumed_from = self._resume() if resume else None
        logger = MetricsLogger(
            self.output_dir,
            enabled=self.rank.is_main,
            resume_step=self.step if resumed_from is not None else None,
            report_to=cfg.report_to,
            config=cfg.model_dump(mode="json"),
        )
        result = FitResult(step=self.step, last_checkpoint=resumed_from)
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=cfg.disable_tqdm or not self.rank.is_main,
            dynamic_ncols=True,
        )
        attention = training_attention(cfg, self.device, self.bf16)
        self.model.train()
        with logger, bar, StopSignals() as signals, attention_kernels(self.model, attention):
            # One agreement per step on whether to stop (a collective under torchrun).
            stopping = self._stop_requested(signals)
            while self.step < cfg.max_steps and not stopping:
                if self.rollouts is not None and self.rollouts.needs_rollout():
                    self.rollout_metrics.append(self.rollouts.collect_rollout())  # act ...
                loss, items, grad_norm, metrics = self.train_step()  # ... then learn
                self.step += 1
                bar.update(1)
                self.window.add(loss, items, metrics)
                last = self.step == cfg.max_steps
                row: dict[str, Any] = {}
                if self.eval_fn is not None and (self.step % cfg.eval_steps == 0 or last):
                    result.eval_metrics = self._evaluate()
                    self._require_finite_eval_loss(result.eval_metrics)
                    row.update(result.eval_metrics)
                if row or self.step % cfg.logging_steps == 0 or last:
                    row = {**self._window_row(grad_norm), **row}
                    row.update(self._rollout_row())
                    logger.log(self.step, **row)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['learning_rate']:.2e}")
                stopping = self._stop_requested(signals)
                if self.step % cfg.save_steps == 0 or last or stopping:
                    result.last_checkpoint = self.save()
            result.step = self.step
            if self.step < cfg.max_steps:
                result.interrupted_by = signals.received or signal.SIGTERM
        return result

    def _rollout_row(self) -> dict[str, float]:
        """Means of the rollout metrics collected since the last logged row."""
        pending, self.rollout_metrics = self.rollout_metrics, []
        keys = {k for m in pending for k in m}
        return {
            k: sum(m[k] for m in pending if k in m) / sum(k in m for m in pending)
            for k in sorted(keys)
        }

    def _stop_requested(self, signals: StopSignals) -> bool:
        """A stop signal reached this rank -- or, under torchrun, any rank (all stop together,
        at the same step, so their checkpoints agree)."""
        if not self.rank.distributed:
            return signals.received is not None
        return not all_ranks_true(signals.received is None, self.device)

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """One optimizer step over ``gradient_accumulation_steps`` micro-batches."""
        cfg = self.cfg
        micro = [next(self.data) for _ in range(self.accumulation)]
        # The normaliser of the whole step, all ranks together: every micro-batch divides by
        # the same count.
        num_items = sum(
            torch.as_tensor(self.count_fn(b), dtype=torch.float64).to(self.device) for b in micro
        )
        num_items = all_reduce_sum(num_items)
        num_items_dev = num_items.to(self.device, torch.float32).clamp_min(1.0)
        # DDP and FSDP average gradients over ranks; the step wants their sum.
        scale = float(self.rank.world_size)
        total = torch.zeros((), device=self.device)
        metrics: dict[str, torch.Tensor] = {}
        for i, batch in enumerate(micro):
            with parallel.gradient_sync(self.model, i == len(micro) - 1):
                with self._autocast(), self._linears():
                    loss, extra = self.loss_fn(
                        self.training_forward, move_to(batch, self.device), num_items_dev
                    )
                (loss * scale if scale != 1.0 else loss).backward()
            total += loss.detach().float()
            for key, value in extra.items():
                value = torch.as_tensor(value, device=self.device).detach().float()
                metrics[key] = metrics.get(key, 0.0) + value
        total, metrics = self._reduce_over_ranks(total, metrics)
        num_items = num_items.cpu()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
        grad_norm = parallel.to_local(torch.nn.utils.clip_grad_norm_(params, max_norm))
        # The one host sync of a step: never apply an update computed from NaN/inf.
        if not bool(torch.isfinite(total) & torch.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            kept = ckpt.latest_checkpoint(self.output_dir)
            raise NonFiniteLossError(
                f"loss {total.item():.4g} / gradient norm {grad_norm.item():.4g} is not finite at "
                f"step {self.step + 1}; stopped before updating the weights; last good "
                f"checkpoint: {kept or 'none'} (try a lower learning_rate or max_grad_norm)"
            )
        self.last_lr = self.optimizer.param_groups[0]["lr"]  # the rate this update used
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total, num_items, grad_norm, metrics

    def _reduce_over_ranks(
        self, total: torch.Tensor, metrics: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sum the loss and metrics of every rank (each is its share of the step's mean)."""
        if not self.rank.distributed:
            return total, metrics
        keys = sorted(metrics)
        packed = torch.stack([total, *(torch.as_tensor(metrics[k]).reshape(()) for k in keys)])
        all_reduce_sum(packed)
        return packed[0], {k: packed[i + 1] for i, k in enumerate(keys)}

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _linears(self) -> contextlib.AbstractContextManager:
        """fp32 on an AMD CPU: linear layers forward and backward on oneDNN (~2x MKL's sgemm
        there; :func:`rlalign.lm.fast_linear.training_linears`), compiled or not."""
        if self.bf16 or self.device.type != "cpu" or not fp32_prefers_onednn():
            return contextlib.nullcontext()
        return training_linears(self.module, traceable=self.cfg.torch_compile)

    def _require_finite_eval_loss(self, metrics: dict[str, float]) -> None:
        """A held-out loss of NaN or infinity means the model is broken: stop before saving."""
        bad = {k: v for k, v in metrics.items() if "loss" in k.rpartition("/")[2]}
        bad = {k: v for k, v in bad.items() if not math.isfinite(v)}
        if bad:
            key, value = next(iter(bad.items()))
            kept = ckpt.latest_checkpoint(self.output_dir)
            raise NonFiniteLossError(
                f"held-out {key} is {value} at step {self.step}: the model's outputs are not "
                f"finite; stopped without saving this step; last good checkpoint: "
                f"{kept or 'none'} (try a lower learning_rate or max_grad_norm)"
            )

    @torch.no_grad()
    def require_finite_weights(self) -> None:
        """Never save a model with a NaN or infinite weight: raise instead, naming the step and
        the newest checkpoint (every one saved passed this check). Collective under torchrun."""
        flags = [torch.isfinite(_local(p)).all() for p in self.model.parameters()]
        finite = bool(torch.stack(flags).all()) if flags else True
        if self.rank.distributed:
            finite = all_ranks_true(finite, self.device)
        if not finite:
            kept = ckpt.latest_checkpoint(self.output_dir)
            raise NonFiniteLossError(
                f"the weights after step {self.step} are not finite (NaN or infinity), so they "
                f"were not saved; last good checkpoint: {kept or 'none'} (try a lower "
                "learning_rate or max_grad_norm)"
            )

    @torch.no_grad()
    def _evaluate(self) -> dict[str, float]:
        assert self.eval_fn is not None
        self.model.eval()
        try:
            with self._autocast():  # every rank evaluates (FSDP needs all of them in forward)
                return {k: float(v) for k, v in self.eval_fn(self.module).items()}
        finally:
            self.model.train()

    def _window_row(self, grad_norm: torch.Tensor) -> dict[str, Any]:
        """Means over the steps since the last row, then reset the window."""
        w = self.window
        elapsed = max(time.perf_counter() - w.started, 1e-9)
        row: dict[str, Any] = {
            "loss": float(w.loss) / max(w.steps, 1),
            "learning_rate": self.last_lr,
            "grad_norm": float(grad_norm),
            f"{self.item_name}_per_s": float(w.items) / elapsed,
        }
        row.update({k: float(v) / max(w.steps, 1) for k, v in w.metrics.items()})
        self.window = _Window()
        return row

    # --- checkpoints ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything but the weights needed to continue exactly (weights_only-loadable).

        The optimizer state is keyed by parameter name and unsharded, so it loads at any world
        size; collective under torchrun (call it on every rank; rank 0 gets the state)."""
        return {
            "step": self.step,
            "optimizer": parallel.full_optimizer_state(self.model, self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "data": self.data.state_dict(),
            "rng": ckpt.rng_state(),
            "metrics_window": self.window.state_dict(),
            # collected since the last logged row (a save between logging rows, a stop signal):
            # the next row averages them with the rollouts after the resume
            "rollout_metrics": [{k: float(v) for k, v in m.items()} for m in self.rollout_metrics],
        }

    def save(self) -> Path | None:
        """Write ``checkpoints/step_<step>/`` (rank 0) and prune to ``save_total_limit``.

        Collective under torchrun: every rank calls it (the state is gathered to rank 0)."""
        self.require_finite_weights()
        model_state = parallel.full_model_state(self.model) if self.rank.distributed else None
        state = self.state_dict()
        path = None
        if self.rank.is_main:
            path = ckpt.save_checkpoint(
                self.output_dir,
                self.step,
                self.module,
                state,
                save_extra=self.save_extra,
                keep=self.cfg.save_total_limit,
                model_state=model_state,
            )
        barrier()
        return path

    def full_state_of(self, part: nn.Module) -> dict[str, torch.Tensor] | None:
        """The unsharded weights of ``part`` (the model or a submodule of it, e.g. the policy
        inside a value-head wrapper) for saving; None in a single process (save ``part``
        itself). Collective under torchrun; only rank 0 gets the weights."""
        if not self.rank.distributed:
            return None
        full = parallel.full_model_state(self.model)
        if part is self.module:
            return full
        prefix = next(
            (name + "." for name, m in self.module.named_modules() if m is part and name), None
        )
        if prefix is None:
            raise ValueError("the module to save is not part of the trained model")
        return {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)}

    def _follow_configured_schedule(self) -> None:
        """After loading, the schedule is this config's (e.g. a larger ``max_steps``) again.

        ``LambdaLR.load_state_dict`` restores the saved schedule's settings; the learning rate
        of the next update is recomputed exactly as ``scheduler.step()`` computes it, so with
        an unchanged config nothing changes, bit for bit.
        """
        cfg, sched = self.cfg, self.scheduler
        factor = WarmupCosine(cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
        sched.lr_lambdas = [factor] * len(sched.base_lrs)
        for group, base_lr in zip(self.optimizer.param_groups, sched.base_lrs, strict=True):
            group["lr"] = base_lr * factor(sched.last_epoch)
        sched._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _resume(self) -> Path | None:
        """Load the newest whole checkpoint, if any (a damaged newer one is moved aside, with
        one line on stderr); returns its path."""
        found = ckpt.resumable_checkpoint(self.output_dir)
        barrier()  # every rank has read the checkpoints before any is moved
        if found is None:
            return None
        note = ckpt.move_damaged_aside(found) if self.rank.is_main else None
        if note is not None:
            print(note, file=sys.stderr)
        path, state = found.path, found.state
        if self.rank.distributed:  # rank 0 reads the weights and broadcasts them
            weights = ckpt.read_model_weights(self.module, path) if self.rank.is_main else {}
            parallel.load_full_model_state(self.model, weights)
        else:
            ckpt.load_model_weights(self.module, path)
        parallel.load_full_optimizer_state(self.model, self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._follow_configured_schedule()
        self.data.load_state_dict(state["data"])
        self.window.load_state_dict(state["metrics_window"])
        # .get: checkpoints written before this key carried no pending rollout metrics
        self.rollout_metrics = [dict(m) for m in state.get("rollout_metrics", [])]
        ckpt.set_rng_state(state["rng"])
        self.step = int(state["step"])
        return path
