"""Kill points of the kill -9 tests: an ``rlalign`` command that hangs at a chosen moment.

:func:`install` arms one point ``KIND:N``. When the run reaches it, a marker file is created and
the process sleeps until the parent sends SIGKILL, so the kill lands exactly there. A torn
write puts half of its bytes on disk first (written and flushed), so the file really is torn.

- ``step:N``: inside optimizer step N: gradients computed, the update not applied;
- ``metrics:N``: half of step N's ``metrics.jsonl`` line appended;
- ``weights:N``: half of checkpoint ``step_N``'s safetensors weights written;
- ``checkpoint:N``: checkpoint ``step_N``'s weights written, its trainer state not yet;
- ``final:N``: half of ``final/``'s safetensors weights written (N: the last step);
- ``rollout:K``: half of ``rollouts/iter_K.jsonl`` written (RL);
- ``reward:K``: rollout K's completions sent to the reward worker, its answer not yet read
  (RL); the marker lists the worker's pid, which must not outlive the killed run.

The kill9 fixture (tests/conftest.py) runs :func:`run` in processes forked from a server that
imported rlalign once: a fresh ``python`` would spend ~5 s of CPU on imports per kill. By hand::

    KILL_AT=metrics:4 MARKER=/tmp/marker python tests/_killed_child.py pretrain ARGS...

The ``__main__`` guard matters: reward functions run in spawned worker processes, which import
the main script again.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

import safetensors.torch
import torch
import transformers.modeling_utils

from rlalign import checkpoint, cli, metrics
from rlalign.rewards.sandbox import TimedRewardFunction
from rlalign.train import loop, multiturn, rollout

KINDS = ("step", "metrics", "weights", "checkpoint", "final", "rollout", "reward")


def hang(marker: Path, text: str = "") -> None:
    """Tell the parent where this process is (atomically: the marker appears complete), then
    wait for its SIGKILL."""
    partial = f"{marker}.part"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)  # not the armed Path.open
    os.write(fd, text.encode())
    os.close(fd)
    os.replace(partial, marker)
    time.sleep(600)
    os._exit(3)  # the parent never killed this process


class TornFile:
    """A file opened for writing whose next write puts half its bytes on disk, then hangs."""

    def __init__(self, file, marker: Path) -> None:
        self._file, self._marker = file, marker

    def write(self, data):
        self._file.write(data[: len(data) // 2])
        self._file.flush()
        os.fsync(self._file.fileno())
        hang(self._marker)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()

    def __getattr__(self, name):
        return getattr(self._file, name)


def _writing(mode: str) -> bool:
    return any(c in mode for c in "wax+")


def tear_next_write(marker: Path) -> list[bool]:
    """While the returned flag is set, the next file opened for writing (``Path.open``,
    ``Path.write_text``, or the ``os.fdopen`` of rlalign's atomic writes) is torn."""
    armed = [False]
    real_path_open, real_fdopen = Path.open, os.fdopen

    def path_open(self, mode="r", *args, **kwargs):
        file = real_path_open(self, mode, *args, **kwargs)
        return TornFile(file, marker) if armed[0] and _writing(mode) else file

    def fdopen(fd, mode="r", *args, **kwargs):
        file = real_fdopen(fd, mode, *args, **kwargs)
        return TornFile(file, marker) if armed[0] and _writing(mode) else file

    Path.open = path_open
    os.fdopen = fdopen
    return armed


def in_directory(kind: str, target: int) -> re.Pattern:
    """The directory a checkpoint or final/ is written into: its temporary name or its own."""
    name = "final" if kind == "final" else f"step_{target}"
    return re.compile(rf"\.?{name}(\..*)?")


def install(point: str, marker: Path) -> None:
    kind, _, number = point.partition(":")
    if kind not in KINDS or not number.isdigit():
        sys.exit(f"KILL_AT={point}: expected KIND:N, KIND one of {', '.join(KINDS)}")
    target = int(number)
    if kind == "step":
        current = {"step": 0}
        real_train_step, real_update = loop.Trainer.train_step, torch.optim.AdamW.step

        def train_step(self):
            current["step"] = self.step + 1
            return real_train_step(self)

        def update(self, *args, **kwargs):
            if current["step"] == target:
                hang(marker)
            return real_update(self, *args, **kwargs)

        loop.Trainer.train_step = train_step
        torch.optim.AdamW.step = update
    elif kind == "metrics":
        armed, real_log = tear_next_write(marker), metrics.MetricsLogger.log

        def log(self, step, **values):
            armed[0] = step == target
            return real_log(self, step, **values)

        metrics.MetricsLogger.log = log
    elif kind in ("weights", "final"):
        directory = in_directory(kind, target if kind == "weights" else 0)

        def torn(real):
            def save(tensors, filename, *args, **kwargs):
                real(tensors, filename, *args, **kwargs)
                if directory.fullmatch(Path(filename).parent.name):
                    os.truncate(filename, os.path.getsize(filename) // 2)
                    hang(marker)

            return save

        # every name a model's weights are written through (HF's save_pretrained; rlalign's
        # own for a bare module; safetensors' save_model)
        transformers.modeling_utils.safe_save_file = torn(safetensors.torch.save_file)
        checkpoint.save_file = torn(checkpoint.save_file)
        safetensors.torch.save_file = torn(safetensors.torch.save_file)
    elif kind == "checkpoint":
        real_save, directory = torch.save, in_directory(kind, target)

        def hanging_save(obj, path, *args, **kwargs):
            where = Path(getattr(path, "name", path))  # a path, or the file it was opened as
            if directory.fullmatch(where.parent.name):
                hang(marker)
            return real_save(obj, path, *args, **kwargs)

        checkpoint.torch.save = hanging_save
    elif kind == "rollout":
        armed, real_save = tear_next_write(marker), rollout.RolloutSource._save_rollouts

        real_save_episodes = multiturn.EpisodeRolloutSource._save_episodes

        def save_rollouts(self, *args, **kwargs):
            armed[0] = self.iteration == target
            return real_save(self, *args, **kwargs)

        def save_episodes(self, *args, **kwargs):  # a multi-turn run's rollout file
            armed[0] = self.iteration == target
            return real_save_episodes(self, *args, **kwargs)

        rollout.RolloutSource._save_rollouts = save_rollouts
        multiturn.EpisodeRolloutSource._save_episodes = save_episodes
    elif kind == "reward":
        collecting = {"iteration": 0, "armed": False}
        real_collect, real_call = (
            rollout.RolloutSource.collect_rollout,
            TimedRewardFunction.__call__,
        )
        real_send = Connection.send

        def collect_rollout(self):
            collecting["iteration"] = self.iteration + 1
            return real_collect(self)

        def call(self, *args, **kwargs):
            collecting["armed"] = collecting["iteration"] == target
            return real_call(self, *args, **kwargs)

        def send(self, obj):
            real_send(self, obj)
            if collecting["armed"]:  # the request is with the worker: it is scoring now
                workers = [str(p.pid) for p in multiprocessing.active_children()]
                hang(marker, "\n".join(workers))

        rollout.RolloutSource.collect_rollout = collect_rollout
        TimedRewardFunction.__call__ = call
        Connection.send = send


def run(point: str, marker: str, log: str, argv: list[str]) -> None:
    """A child of the kill9 fixture: stdout to nowhere, stderr to ``log``, then ``rlalign
    ARGV`` with ``point`` armed."""
    err = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    out = os.open(os.devnull, os.O_WRONLY)
    os.dup2(err, 2)
    os.dup2(out, 1)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    torch.set_num_threads(1)
    install(point, Path(marker))
    code = cli.main(argv)
    sys.stderr.flush()
    sys.exit(code)


if __name__ == "__main__":
    install(os.environ["KILL_AT"], Path(os.environ["MARKER"]))
    sys.exit(cli.main(sys.argv[1:]))
