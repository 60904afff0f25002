"""The runtime every package may use: where tensors live, in which precision, how a run stops.

- :func:`resolve_device`: the ``device`` setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) as a
  :class:`torch.device`, one GPU per rank under torchrun;
- :func:`uses_bf16`: whether a run computes under bf16 autocast;
- :class:`StopSignals`: SIGTERM/SIGINT as a flag, so a run checkpoints and returns instead of
  dying mid-write;
- :func:`torch_threads`: a block run with a given number of intra-op threads.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import torch

from rlalign.dist import RankInfo
from rlalign.errors import UserError


def resolve_device(name: str, rank: RankInfo | None = None) -> torch.device:
    """``auto`` is CUDA when available, else CPU; under torchrun each rank takes the GPU of
    its ``LOCAL_RANK`` (``cuda`` without an index means that one)."""
    local = (rank or RankInfo.detect()).local_rank
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name!r} but CUDA is not available; use device=cpu or auto")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
    return device


def uses_bf16(setting: bool | None, device: torch.device) -> bool:
    """Whether training runs under bf16 autocast: ``setting`` (the ``bf16`` key) when given,
    else where the GPU does bf16 natively (a CPU opts in with ``bf16=true``)."""
    if setting is not None:
        return setting
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


class StopSignals:
    """While active, SIGTERM/SIGINT set a flag instead of killing the process."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        with contextlib.suppress(ValueError):  # signals can only be caught in the main thread
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads, restoring the previous setting afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
