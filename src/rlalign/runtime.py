"""The runtime every package may use: where tensors live, in which precision, how a run stops.

- :func:`resolve_device`: the ``device`` setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) as a
  :class:`torch.device`, one GPU per rank under torchrun;
- :func:`uses_bf16`: whether a run computes under bf16 autocast;
- :func:`device_memory_bytes`: how much memory a device has in all;
- :class:`StopSignals`: a first SIGTERM/SIGINT as a flag, so a run checkpoints and returns
  instead of dying mid-write; a second one ends the process at once;
- :func:`torch_threads`: a block run with a given number of intra-op threads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch

from rlalign.dist import RankInfo
from rlalign.errors import UserError
from rlalign.precision import agreed_bf16


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


def uses_bf16(setting: bool | str | None, device: torch.device, model: Any = None) -> bool:
    """Whether training runs under bf16 autocast: ``setting`` (the ``bf16`` key) when it is
    true or false; None: where the GPU does bf16 natively (a CPU opts in with ``bf16=true``);
    ``auto``: on a CPU, where a timing of one of ``model``'s linear layers finds bf16 faster
    (:func:`rlalign.precision.choose_bf16`, remembered per machine). Under torchrun every rank
    takes rank 0's choice, so the ranks compute alike."""
    if setting == "auto":
        return _auto_bf16(device, model)
    if setting is not None:
        return bool(setting)
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


_told: set[str] = set()


def _linear_shape(model: Any) -> tuple[int, int]:
    """(hidden, MLP width) of the first Hugging Face config inside ``model`` (a wrapper such as
    RL's policy with a value head, or a reward model, holds one), else a mid-sized default."""
    candidates = [model]
    if isinstance(model, torch.nn.Module):
        candidates += list(model.modules())
    for candidate in candidates:
        hidden = getattr(getattr(candidate, "config", None), "hidden_size", None)
        if isinstance(hidden, int) and hidden > 0:
            inner = getattr(candidate.config, "intermediate_size", None)
            return hidden, inner if isinstance(inner, int) and inner > 0 else 4 * hidden
    return 512, 2048


def _auto_bf16(device: torch.device, model: Any) -> bool:
    hidden, inner = _linear_shape(model)
    choice = agreed_bf16(hidden, inner, device=device)
    told = f"{choice.bf16}|{hidden}x{inner}"
    if told not in _told and RankInfo.detect().is_main:  # once per process, model and choice
        _told.add(told)
        print(choice.describe(), flush=True)
    return choice.bf16


def device_memory_bytes(device: torch.device) -> int | None:
    """The memory of ``device`` in all (a GPU's own; the machine's RAM for the CPU); None when
    it cannot be told."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        if device.type == "cpu":
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError, RuntimeError):
        pass
    return None


class StopSignals:
    """While active, a first SIGTERM/SIGINT sets :attr:`received` instead of killing the
    process (the run stops cleanly at its next step boundary); a second one ends the process
    at once with status 128 + the signal (130 for SIGINT, 143 for SIGTERM).

    Python runs a signal handler only between bytecodes of the main thread, so a handler alone
    would wait for a long forward pass to return. The signal numbers therefore also go to a
    pipe (``signal.set_wakeup_fd``, written by the C-level handler the moment the signal
    arrives) that a watcher thread reads: it says on stderr that the run will stop, and on the
    second signal exits. What that exit leaves behind is what ``kill -9`` leaves: the previous
    checkpoints, intact, and at most a half-written one that ``--resume`` deletes.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._previous_wakeup: int | None = None
        self._write_fd: int | None = None
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> StopSignals:
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # signals can only be caught in the main thread
            return self
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)  # the C-level handler must never block
        self._previous_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        self._write_fd = write_fd
        self._watcher = threading.Thread(
            target=self._watch, args=(read_fd,), name="rlalign-stop-signals", daemon=True
        )
        self._watcher.start()
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    @classmethod
    def _watch(cls, read_fd: int) -> None:
        seen = 0
        try:
            while data := os.read(read_fd, 64):  # empty once the write end is closed
                for signum in data:
                    if signum not in cls.SIGNALS:
                        continue
                    seen += 1
                    name = signal.Signals(signum).name
                    if seen == 1:
                        _say(
                            f"rlalign: {name} received: stopping after this step with a "
                            f"checkpoint; send it again to stop at once"
                        )
                    else:
                        _say(
                            f"rlalign: {name} received again: stopping now, without a "
                            "checkpoint (--resume continues from the last one)"
                        )
                        os._exit(128 + signum)
        finally:
            os.close(read_fd)

    def __exit__(self, *exc: object) -> None:
        if self._write_fd is not None:
            signal.set_wakeup_fd(-1 if self._previous_wakeup is None else self._previous_wakeup)
            os.close(self._write_fd)  # the watcher reads the end of the pipe and returns
            self._write_fd = None
            if self._watcher is not None:
                self._watcher.join(timeout=5)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def _say(line: str) -> None:
    """One line on stderr, written with one system call (safe from any thread, at any time)."""
    with contextlib.suppress(OSError):
        os.write(2, (line + "\n").encode())


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads, restoring the previous setting afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class StageInterrupted(Exception):
    """A stage of a flow stopped on SIGTERM/SIGINT with its checkpoint saved, so the flow stops
    there too instead of going on with a stage that has no final model."""

    def __init__(self, stage: str, signum: int, step: int | None) -> None:
        at = f" at step {step}" if step is not None else ""
        super().__init__(f"stopped by signal {signum} during {stage}{at} (checkpoint saved)")
        self.stage, self.signum, self.step = stage, signum, step


class StageSeconds(dict):
    """The wall-clock seconds of each named stage of a flow (a demo), measured as it runs:
    ``seconds.run("sft", lambda: run_sft(cfg))`` returns the stage's result and records
    ``seconds["sft"]``; ``finish()`` records the ``total`` since the flow began. A stage whose
    result says a signal stopped it (``interrupted_by``) raises :class:`StageInterrupted`."""

    def __init__(self) -> None:
        super().__init__()
        self.started = time.perf_counter()

    def finish(self) -> None:
        self["total"] = round(time.perf_counter() - self.started, 1)

    def run(self, name: str, fn: Any) -> Any:
        started = time.perf_counter()
        result = fn()
        self[name] = round(time.perf_counter() - started, 1)
        signum = getattr(result, "interrupted_by", None)
        if signum is not None:
            raise StageInterrupted(name, signum, getattr(result, "step", None))
        return result
