"""Measured choices for this machine: ``bf16: auto`` (bf16 autocast where it is the faster
choice, fp32 elsewhere) and ``num_threads: auto`` (the number of torch threads that trains a
model of this width fastest).

Why measured, not assumed: on a CPU that multiplies bf16 natively (Intel AMX, AVX-512 BF16 on
recent AMD EPYCs) bf16 matrix products run 2-5x faster than fp32, but on an AVX2-only CPU
PyTorch emulates them and they run ~30x *slower* (an AMD EPYC without AVX-512: fp32 ~33
GFLOP/s, bf16 ~1 GFLOP/s on one thread). CPU flags do not say which kernels a torch build
picks; a short timing does.

:func:`choose_bf16` times one linear layer of the model's width, in fp32 and under bf16
autocast (which casts at every call, as training does), on this process's threads. The result
is remembered per machine (CPU model and flags, torch version, threads, shape) in
``$RLALIGN_CACHE_DIR`` (default ``$XDG_CACHE_HOME/rlalign`` or ``~/.cache/rlalign``), so every
later run on the machine, a resumed one included, makes the same choice without timing again.

:func:`choose_threads` times a linear layer's forward and backward (a training step's matrix
products) on 1, 2, 4, ... threads up to the cores this process may use. Why: a tiny model's
products are too small to split well, and on a 2-core AVX2-only EPYC 2 threads pre-train the
``tiny`` preset 1.5x faster than 1 (bit-identical weights), while on many cores the same model
gains little from all of them. More threads must beat fewer by :data:`MARGIN`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F

from rlalign.dist import RankInfo, all_gather_objects
from rlalign.io import atomic_write_json

# bf16 must beat fp32 by this factor: a tie is fp32's (exact, and no cast at every call).
MARGIN = 1.1
CACHE_FILE = "precision.json"
THREADS_CACHE_FILE = "threads.json"
_Choice = TypeVar("_Choice", "PrecisionChoice", "ThreadsChoice")


@dataclass(frozen=True)
class PrecisionChoice:
    """The outcome of ``bf16: auto``: whether to use bf16 autocast, and why."""

    bf16: bool
    fp32_tflops: float
    bf16_tflops: float
    source: str  # "measured", "remembered" (the machine's cache), or "cuda"

    def describe(self) -> str:
        chosen = "bf16 autocast" if self.bf16 else "fp32"
        if self.source == "cuda":
            return f"bf16: auto -> {chosen} (CUDA device)"
        how = "measured now" if self.source == "measured" else "measured earlier on this machine"
        return (
            f"bf16: auto -> {chosen} (a linear layer: fp32 {self.fp32_tflops * 1e3:.1f} GFLOP/s, "
            f"bf16 {self.bf16_tflops * 1e3:.1f} GFLOP/s; {how})"
        )


def choose_bf16(
    hidden: int, inner: int, *, tokens: int = 2048, device: torch.device | None = None
) -> PrecisionChoice:
    """Whether bf16 autocast is faster than fp32 for ``[tokens, hidden] x [hidden, inner]``
    products on ``device`` (CPU: timed, or read from the machine's cache; CUDA: bf16 where the
    GPU supports it)."""
    if device is not None and device.type == "cuda":
        ok = bool(torch.cuda.is_bf16_supported())
        return PrecisionChoice(ok, 0.0, 0.0, "cuda")
    key = f"{_machine_key()}|threads={torch.get_num_threads()}|{tokens}x{hidden}x{inner}"

    def measure() -> PrecisionChoice:
        fp32, bf16 = _linear_tflops(hidden, inner, tokens)
        return PrecisionChoice(bf16 > fp32 * MARGIN, round(fp32, 5), round(bf16, 5), "measured")

    return _remembered(CACHE_FILE, key, PrecisionChoice, measure)


def agreed_bf16(
    hidden: int, inner: int, *, tokens: int = 2048, device: torch.device | None = None
) -> PrecisionChoice:
    """:func:`choose_bf16` on rank 0, and that choice on every rank (under torchrun), so the
    ranks compute alike and only one process times and writes the cache."""
    main = RankInfo.detect().is_main
    choice = choose_bf16(hidden, inner, tokens=tokens, device=device) if main else None
    return all_gather_objects(choice)[0]


def cache_dir() -> Path:
    """Where rlalign remembers facts about this machine."""
    if os.environ.get("RLALIGN_CACHE_DIR"):
        return Path(os.environ["RLALIGN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rlalign"


def _remembered(
    file: str, key: str, kind: type[_Choice], measure: Callable[[], _Choice]
) -> _Choice:
    """The choice ``file`` in :func:`cache_dir` remembers under ``key`` (source "remembered"),
    or ``measure()``'s, remembered there for the next run."""
    path = cache_dir() / file
    remembered = _read_cache(path)
    if key in remembered:
        return kind(**{**remembered[key], "source": "remembered"})
    choice = measure()
    remembered[key] = {k: v for k, v in asdict(choice).items() if k != "source"}
    with contextlib.suppress(OSError):  # a read-only home: the choice stands, unremembered
        atomic_write_json(path, remembered)
    return choice


def _read_cache(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cpu_model_and_flags() -> tuple[str, str]:
    """The CPU's model name and its feature flags as ``/proc/cpuinfo`` gives them (x86
    ``flags``, Arm ``Features``); empty strings where it cannot be read."""
    model, flags = "", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.partition(":")[2].strip()
                if line.startswith(("flags", "Features")):
                    flags = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    return model, flags


def _machine_key() -> str:
    """The CPU model and its flags (hashed), and the torch build: what the kernels depend on."""
    model, flags = cpu_model_and_flags()
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
    return f"{model or platform.machine()}|flags={digest}|torch={torch.__version__}"


def _linear_tflops(
    hidden: int, inner: int, tokens: int, budget_s: float = 0.3
) -> tuple[float, float]:
    """TFLOP/s of ``F.linear`` in fp32 and under bf16 autocast, the best of a few calls each
    (within about ``budget_s`` per dtype)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, hidden, generator=generator)
    w = torch.randn(inner, hidden, generator=generator)
    flops = 2.0 * tokens * hidden * inner
    rates = []
    for bf16 in (False, True):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            rates.append(flops / _best_seconds(lambda: F.linear(x, w), budget_s) / 1e12)
    return rates[0], rates[1]


def _best_seconds(step: Callable[[], object], budget_s: float) -> float:
    """The fastest of a few calls of ``step`` after one warm-up (kernels chosen, memory
    allocated): at least 3, then more while within ``budget_s`` (at most 50)."""
    step()
    best, spent, calls = float("inf"), 0.0, 0
    while calls < 3 or (spent < budget_s and calls < 50):
        t0 = time.perf_counter()
        step()
        dt = time.perf_counter() - t0
        best, spent, calls = min(best, dt), spent + dt, calls + 1
    return best


# --- num_threads: auto -------------------------------------------------------------------------


@dataclass(frozen=True)
class ThreadsChoice:
    """The outcome of ``num_threads: auto``: the torch threads to use, and why."""

    threads: int
    tflops: dict[str, float]  # threads (as text, for JSON) -> TFLOP/s of the timed step
    source: str  # "measured", "remembered" (the machine's cache), or "one core"

    def describe(self) -> str:
        if self.source == "one core":
            return "num_threads: auto -> 1 (one core available)"
        how = "measured now" if self.source == "measured" else "measured earlier on this machine"
        rates = ", ".join(f"{n} {'thread' if n == '1' else 'threads'} {r * 1e3:.1f}"
                          for n, r in self.tflops.items())  # fmt: skip
        return (
            f"num_threads: auto -> {self.threads} (a linear layer's forward and backward, "
            f"GFLOP/s: {rates}; {how})"
        )


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; all of them where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def thread_counts(cores: int) -> list[int]:
    """The thread counts :func:`choose_threads` tries: 1, 2, 4, ... and ``cores`` itself."""
    counts, n = {max(cores, 1)}, 1
    while n < cores:
        counts.add(n)
        n *= 2
    return sorted(counts)


def choose_threads(
    hidden: int, inner: int, *, tokens: int = 2048, cores: int | None = None
) -> ThreadsChoice:
    """The torch threads, of :func:`thread_counts` up to ``cores`` (default: the cores this
    process may use), that run ``[tokens, hidden] x [hidden, inner]`` training products
    fastest; a count must beat every smaller one by :data:`MARGIN`. Timed, or read from the
    machine's cache."""
    cores = cores or available_cores()
    if cores <= 1:
        return ThreadsChoice(1, {}, "one core")
    key = f"{_machine_key()}|cores={cores}|{tokens}x{hidden}x{inner}"

    def measure() -> ThreadsChoice:
        tflops: dict[str, float] = {}
        best, best_rate = 1, 0.0
        before = torch.get_num_threads()
        try:
            for n in thread_counts(cores):
                torch.set_num_threads(n)
                rate = _train_linear_tflops(hidden, inner, tokens)
                tflops[str(n)] = round(rate, 5)
                if rate > best_rate * MARGIN:
                    best, best_rate = n, rate
        finally:
            torch.set_num_threads(before)
        return ThreadsChoice(best, tflops, "measured")

    return _remembered(THREADS_CACHE_FILE, key, ThreadsChoice, measure)


def agreed_threads(
    hidden: int, inner: int, *, tokens: int = 2048, cores: int | None = None
) -> ThreadsChoice:
    """:func:`choose_threads` on rank 0, and that choice on every rank (under torchrun the ranks
    of one machine share its cores: each is timed with its share)."""
    rank = RankInfo.detect()
    if cores is None:
        cores = max(1, available_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    choice = choose_threads(hidden, inner, tokens=tokens, cores=cores) if rank.is_main else None
    return all_gather_objects(choice)[0]


def _train_linear_tflops(hidden: int, inner: int, tokens: int, budget_s: float = 0.3) -> float:
    """TFLOP/s of a linear layer's forward and backward in fp32 (three products: the output,
    and the gradients of the input and of the weight), the best of a few steps."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, hidden, generator=generator, requires_grad=True)
    w = torch.randn(inner, hidden, generator=generator, requires_grad=True)
    grad = torch.randn(tokens, inner, generator=generator)
    flops = 6.0 * tokens * hidden * inner

    def step() -> None:
        x.grad = w.grad = None
        F.linear(x, w).backward(grad)

    return flops / _best_seconds(step, budget_s) / 1e12


def apply_num_threads(
    setting: int | str | None, hidden: int, inner: int, *, tokens: int = 2048
) -> ThreadsChoice | None:
    """Set torch's threads from a demo's ``num_threads``: a count, ``"auto"``
    (:func:`agreed_threads` for a model of this width), or None (torch's default, untouched).
    Returns the choice when ``auto`` made one."""
    if setting is None:
        return None
    choice = agreed_threads(hidden, inner, tokens=tokens) if setting == "auto" else None
    torch.set_num_threads(choice.threads if choice else int(setting))
    return choice
