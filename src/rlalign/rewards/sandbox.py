"""Run a user reward function in a worker process with a per-call time limit.

A thread cannot be stopped, so a hung reward function would hang training; a process can be
killed. Each :class:`TimedRewardFunction` keeps one worker alive between calls (importing the
function once, under the same time limit: a module's top-level code can hang, raise or call
``sys.exit`` too), and replaces it after a timeout or a crash.

Nothing a worker started outlives it: the worker leads a process group of its own, which a
timeout or :meth:`TimedRewardFunction.close` kills whole (a ``sleep`` the function started
too); on Linux the worker is killed when the training process dies, even by SIGKILL or the
OOM killer, while its function hangs; and at exit every worker still open is killed, so a
module that ignores SIGTERM cannot hang the interpreter's exit.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import weakref
from typing import Any

from rlalign.errors import UserError
from rlalign.plugins import raised_at
from rlalign.rewards.loading import load_reward_function


class RewardTimeout(Exception):
    pass


class RewardCrash(Exception):
    """The function raised (message carries the type and text) or the worker died."""


class RewardImportError(UserError):
    """Importing the function's module raised, called ``sys.exit`` or outlasted the limit."""


# a fresh interpreter importing rlalign, before the user's module: not the user's time
STARTUP_SECONDS = 60


_PR_SET_PDEATHSIG = 1  # prctl(2)


def _die_with(parent: int) -> None:
    """In the worker: a process group of its own (killed whole on a timeout), and on Linux a
    SIGKILL when the training process dies. The parent may already be gone: then exit."""
    os.setsid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _worker(spec: str, conn, parent: int) -> None:
    _die_with(parent)
    conn.send(("importing", None))  # the interpreter is up: the import's time limit starts
    try:
        fn = load_reward_function(spec)
    except UserError as exc:  # every failure of the import, sys.exit included
        conn.send(("error", str(exc)))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, ConnectionResetError):  # the training process is gone (even killed)
            return
        if message is None:
            return
        prompts, completions, fields = message
        try:
            reply = ("ok", fn(prompts, completions, **fields))
        except (Exception, SystemExit) as exc:
            where = raised_at(exc, fn)
            reply = ("error", f"{type(exc).__name__}: {exc}" + (f" ({where})" if where else ""))
        try:
            conn.send(reply)
        except (BrokenPipeError, ConnectionResetError):  # killed while this call ran
            return
        except Exception as exc:  # an answer that cannot be pickled
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class TimedRewardFunction:
    """Call ``spec``'s function in a separate process; give up after ``timeout`` seconds.

    Importing the function's module runs in the worker too, under the same ``timeout``:
    :meth:`start` raises :class:`RewardImportError` when it raises, exits or hangs.
    """

    def __init__(self, spec: str, timeout: float) -> None:
        self.spec = spec
        self.timeout = timeout
        self._ctx = mp.get_context("spawn")  # no inherited threads or torch state in the child
        self._proc = None
        self._conn = None

    def start(self) -> None:
        """Start the worker and import the function now (if it is not running yet)."""
        if self._proc is None or not self._proc.is_alive():
            self._start()

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker, args=(self.spec, child, os.getpid()), daemon=True)
        try:
            proc.start()
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        # only a started process is kept: close() joins it, and joining an unstarted one fails
        self._proc, self._conn = proc, parent
        _OPEN.add(self)
        try:
            if not parent.poll(STARTUP_SECONDS):
                self.close()
                raise RewardCrash(f"the reward worker did not start within {STARTUP_SECONDS} s")
            parent.recv()  # "importing"
            # the user's module gets the limit a call gets
            if not parent.poll(self.timeout):
                self.close()
                raise RewardImportError(
                    f"reward function '{self.spec}': importing "
                    f"'{self.spec.rpartition(':')[0]}' took longer than "
                    f"reward_timeout={self.timeout:g} s (does its top-level code wait for "
                    "something?)"
                )
            status, payload = parent.recv()
        except (EOFError, ConnectionResetError):
            self.close()
            raise RewardCrash(
                "the reward worker process died while starting. If you call rlalign from "
                "your own script, put the script's top-level code under "
                "`if __name__ == '__main__':` -- reward functions run in a fresh Python "
                "process, which imports the main script"
            ) from None
        if status != "ready":
            self.close()
            raise RewardImportError(payload)

    def __call__(self, prompts: list[str], completions: list[str], **fields: Any) -> Any:
        self.start()
        try:
            self._conn.send((prompts, completions, fields))
            if not self._conn.poll(self.timeout):
                self.close()
                raise RewardTimeout(f"no answer within reward_timeout={self.timeout:g} s")
            status, payload = self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            self.close()
            raise RewardCrash(
                "the worker process died (killed, or crashed the interpreter)"
            ) from None
        if status == "error":
            raise RewardCrash(payload)
        return payload

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            if self._proc.pid is not None:  # a worker that failed to start has nothing to join
                # the worker's whole process group: what its function started dies with it
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                if self._proc.is_alive():
                    self._proc.kill()
                self._proc.join(timeout=5)
            self._proc = None
        _OPEN.discard(self)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


# Workers not closed yet, killed at exit before multiprocessing's own exit handler (which
# sends SIGTERM and waits without a limit) reaches them.
_OPEN: weakref.WeakSet[TimedRewardFunction] = weakref.WeakSet()


@atexit.register
def _kill_open_workers() -> None:
    for worker in list(_OPEN):
        with contextlib.suppress(Exception):
            worker.close()
