"""The device the CUDA checks run on, and small helpers shared by them.

``RLALIGN_TEST_DEVICE`` (default ``cuda``) names it. ``RLALIGN_TEST_DEVICE=cpu`` runs the same
checks on the CPU, where each "device vs CPU" comparison compares the CPU with itself: how the
tests' own logic is debugged on a machine without a GPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
import torch

DEVICE = torch.device(os.environ.get("RLALIGN_TEST_DEVICE", "cuda"))
ON_CUDA = DEVICE.type == "cuda"

requires_device = pytest.mark.skipif(
    ON_CUDA and not torch.cuda.is_available(),
    reason="no CUDA device (RLALIGN_TEST_DEVICE=cpu runs these checks on the CPU)",
)


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """fp32 matmuls in full precision: TF32 off for cuBLAS and cuDNN (restored afterwards), so
    that a device and the CPU differ by fp32 rounding only."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32)
    matmul.allow_tf32 = False
    cudnn.allow_tf32 = False
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before


class DeviceUse:
    """Whether a block allocated memory on the device under test (a check that a run which
    resolves ``device=auto`` itself really used the GPU); always true on the CPU."""

    def __enter__(self) -> DeviceUse:
        if ON_CUDA:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_bytes = torch.cuda.max_memory_allocated() if ON_CUDA else None

    @property
    def used(self) -> bool:
        return self.peak_bytes is None or self.peak_bytes > 0
