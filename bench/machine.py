"""What every benchmark says about the machine it ran on, and the peak it is measured against.

- :func:`cpu_kind`: the CPU's model and the matrix instructions that decide its speed (AMX,
  AVX-512 BF16, AVX-512, AVX2), e.g. ``AMD EPYC, AVX2 only (no AVX-512, no AMX)``. Figures
  from different kinds differ 2-10x, so every table names the kind beside its figures.
- :func:`matmul_peak`: FLOP/s of a large matmul loop in a dtype, measured in the same run as the
  figures it divides (model-FLOPs utilisation, MFU = counted FLOPs / seconds / peak).
- :func:`matmul_params`: the parameters a forward multiplies by (the FLOP count's N).
- :func:`bench_dtypes`: fp32, and bf16 where ``bf16: auto`` would choose it on this machine.
- :func:`timed`: wall seconds per call and CPU use (process CPU seconds / wall seconds; about
  the number of threads on an idle machine, clearly lower when another job shared it).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import torch

from rlalign.precision import choose_bf16, cpu_model_and_flags


def bench_dtypes(requested: str | None, device: str = "cpu") -> list[str]:
    """The dtypes to measure: ``requested`` (``fp32,bf16``), or by default fp32 plus bf16 where
    ``bf16: auto`` would choose it on this machine (:func:`rlalign.precision.choose_bf16`).
    Where it would not, bf16 is emulated or slow, and a 2048^3 bf16 peak alone takes minutes:
    the line printed says so."""
    if requested:
        dtypes = requested.split(",")
        if not set(dtypes) <= {"fp32", "bf16"}:
            raise SystemExit(f"--dtypes {requested!r}: give fp32 and/or bf16, e.g. fp32,bf16")
        return dtypes
    choice = choose_bf16(512, 1280, device=torch.device(device))
    if choice.bf16:
        return ["fp32", "bf16"]
    print(f"{choice.describe()}: bf16 skipped (--dtypes fp32,bf16 measures it anyway)")
    return ["fp32"]


def cpu_kind() -> str:
    """The CPU model and its fastest matrix instructions, in words."""
    model, flags = cpu_model_and_flags()
    model, flags = model or platform.machine(), set(flags.split())
    if not flags:
        return model
    if "amx_bf16" in flags:
        isa = "AMX"
    elif "avx512_bf16" in flags:
        isa = "AVX-512 BF16, no AMX"
    elif "avx512f" in flags:
        isa = "AVX-512 without BF16, no AMX"
    elif "avx2" in flags:
        isa = "AVX2 only (no AVX-512, no AMX)"
    else:
        isa = "no AVX2"
    return f"{model}, {isa}"


def machine_line(threads: int | None = None) -> str:
    """One line for the top of a benchmark's output: CPU kind, torch, threads."""
    threads = threads or torch.get_num_threads()
    return (
        f"CPU: {cpu_kind()}; torch {torch.__version__} "
        f"(kernels {torch.backends.cpu.get_cpu_capability()}), {threads} threads"
    )


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(wall seconds per call, CPU cores used) over ``repeats`` calls."""
    _sync()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    _sync()
    wall = time.perf_counter() - wall
    return wall / repeats, (time.process_time() - cpu) / wall


def matmul_peak(
    dtype: torch.dtype, device: str = "cpu", n: int = 2048, seconds: float = 3.0
) -> tuple[float, float]:
    """FLOP/s of an n x n x n matmul loop in ``dtype``, and the CPU use while measuring.

    On CPU the peak is the faster of ``torch.matmul`` and oneDNN's linear kernel: training runs
    fp32 linear layers on oneDNN (:func:`rlalign.lm.fast_linear.training_linears`), which on
    an AMD CPU is ~2x MKL's sgemm behind ``torch.matmul``.
    """
    from rlalign.lm.fast_linear import onednn_available

    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, dtype=dtype, device=device)
    kernels = [lambda: torch.matmul(a, b, out=out)]
    if device == "cpu" and onednn_available():
        kernels.append(lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], ""))
    best = (0.0, 0.0)
    for kernel in kernels:
        try:
            kernel()  # warm up (oneDNN picks and caches its kernel)
        except RuntimeError:  # e.g. oneDNN's bf16 kernels on a CPU without AVX-512
            continue
        reps = max(1, int(seconds / 2 / timed(kernel, 1)[0]))
        per_call, cpu = timed(kernel, reps)
        best = max(best, (2 * n**3 / per_call, cpu))
    return best


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters used in matmuls: all, minus an input embedding that is not tied."""
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is emb
    unique = {id(p): p.numel() for p in model.parameters()}
    return sum(unique.values()) - (0 if tied else emb.numel())
