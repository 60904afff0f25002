"""What every benchmark says about the machine it ran on, and the peak it is measured against.

- :func:`cpu_kind`: the CPU's model and the matrix instructions that decide its speed (AMX,
  AVX-512 BF16, AVX-512, AVX2), e.g. ``AMD EPYC, AVX2 only (no AVX-512, no AMX)``. Figures
  from different kinds differ 2-10x, so every table names the kind beside its figures.
- :func:`matmul_peak`: FLOP/s of a large matmul loop in a dtype, measured in the same run as the
  figures it divides (model-FLOPs utilisation, MFU = counted FLOPs / seconds / peak).
- :func:`matmul_params`: the parameters a forward multiplies by (the FLOP count's N).
- :func:`timed`: wall seconds per call and CPU use (process CPU seconds / wall seconds; about
  the number of threads on an idle machine, clearly lower when another job shared it).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import torch


def _cpu_model_and_flags() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.partition(":")[2].strip()
                if line.startswith("flags"):
                    flags = set(line.partition(":")[2].split())
                    break
    except OSError:
        pass
    return model, flags


def native_bf16(device: str = "cpu") -> bool:
    """Whether bf16 matrix products run natively (AMX, AVX-512 BF16, or any CUDA GPU torch
    supports). Elsewhere PyTorch emulates them ~10x slower than fp32, and a 2048^3 bf16 peak
    alone takes minutes: the benchmarks skip bf16 there unless asked for it."""
    if device.startswith("cuda"):
        return True
    flags = _cpu_model_and_flags()[1]
    return bool(flags & {"amx_bf16", "avx512_bf16"}) or not flags  # unknown: measure


def cpu_kind() -> str:
    """The CPU model and its fastest matrix instructions, in words."""
    model, flags = _cpu_model_and_flags()
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
