"""Fixtures for every test.

- One intra-op thread: the models are tiny, and when other jobs share the machine, OpenMP
  threads that spin-wait for a busy core make each step 10-100x slower.
- Seeded global generators: each test starts from a random state fixed by its node id.
- ``kill9``: run a training stage in processes killed with SIGKILL, resume it, and check that
  it ended exactly like an uninterrupted run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for the subprocesses the tests start
    yield
    torch.set_num_threads(before)


# --- every test starts from its own fixed random state ----------------------------------------


@pytest.fixture(autouse=True)
def _seeded_rngs(request):
    """Seed Python's, NumPy's and torch's global generators from the test's node id (crc32, the
    same on every run and machine), so that a test drawing from them is reproducible and does
    not depend on which tests ran before it. A safety net: tests still seed what they draw."""
    seed = zlib.crc32(request.node.nodeid.encode())
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- kill -9 and resume: one helper for every training stage -----------------------------------

KILLED_CHILD = Path(__file__).with_name("_killed_child.py")
# metrics that measure wall time, not training: they differ between any two runs
TIMING_SUFFIX = "_per_s"


class Kill9:
    """Runs ``rlalign STAGE ARGS`` in child processes that are SIGKILLed at chosen points, each
    later one with ``--resume``, then finishes the run in this process with ``--resume``.

    Kill points (see ``_killed_child.py``): ``checkpoint:N`` (while ``step_N`` is being written)
    and ``step:N`` (inside optimizer step N, before its update).
    """

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        seed = os.environ.get("KILL9_SEED")
        self.seed = int(seed) if seed else random.randrange(2**31)
        self.rng = random.Random(self.seed)

    def plan(self, max_steps: int, save_steps: int) -> list[str]:
        """A random checkpoint write to kill, then a random step after the checkpoint the
        resumed run restarts from (``KILL9_SEED=S`` replays a plan)."""
        checkpoint = self.rng.choice(range(save_steps, max_steps, save_steps))
        restart = checkpoint - save_steps  # the newest complete checkpoint (0: none)
        return [f"checkpoint:{checkpoint}", f"step:{self.rng.randint(restart + 1, max_steps)}"]

    def describe(self, kills: list[str]) -> str:
        return f"killed at {' then '.join(kills)} (replay with KILL9_SEED={self.seed})"

    def run(self, argv: list[str], kills: list[str], timeout: float = 300) -> None:
        from rlalign.cli import main

        stage, rest = argv[0], argv[1:]
        for i, point in enumerate(kills):
            args = argv if i == 0 else [stage, "--resume", *rest]
            marker, log = self.tmp_path / f"kill{i}.marker", self.tmp_path / f"kill{i}.stderr"
            env = {**os.environ, "KILL_AT": point, "MARKER": str(marker)}
            with log.open("wb") as err:
                child = subprocess.Popen(
                    [sys.executable, str(KILLED_CHILD), *args],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            deadline = time.monotonic() + timeout
            while not marker.exists():
                if child.poll() is not None:
                    pytest.fail(
                        f"child exited ({child.returncode}) before {point}: {log.read_text()}"
                    )
                if time.monotonic() > deadline:
                    child.kill()
                    pytest.fail(f"child did not reach {point} within {timeout} s")
                time.sleep(0.05)
            child.send_signal(signal.SIGKILL)
            child.wait()
            assert child.returncode == -signal.SIGKILL, self.describe(kills)
            self._check_checkpoints(argv, point, kills)
        assert main([stage, "--resume", *rest]) == 0, self.describe(kills)

    def _check_checkpoints(self, argv: list[str], point: str, kills: list[str]) -> None:
        """After a kill: a half-written checkpoint is invisible, every visible one loads."""
        from rlalign.checkpoint import list_checkpoints, load_trainer_state

        out = Path(next(a for a in argv if a.startswith("output_dir=")).partition("=")[2])
        where, _, step = point.partition(":")
        for found, path in list_checkpoints(out):
            assert not (where == "checkpoint" and found == int(step)), self.describe(kills)
            assert load_trainer_state(path)["step"] == found, self.describe(kills)

    def assert_same_run(self, reference: Path, run: Path, max_steps: int, kills: list[str]):
        """``run`` ended exactly as ``reference``: bit-identical final weights, every step
        logged once (``logging_steps=1``) with the same values, the same rollout files."""
        _assert_same_run(reference, run, max_steps, self.describe(kills))


@pytest.fixture
def kill9(tmp_path) -> Kill9:
    return Kill9(tmp_path)


def _assert_same_run(reference: Path, run: Path, max_steps: int, note: str) -> None:
    from safetensors.torch import load_file

    from rlalign.metrics import read_metrics

    files = sorted(p.name for p in (reference / "final").glob("*.safetensors"))
    assert files and files == sorted(p.name for p in (run / "final").glob("*.safetensors"))
    for name in files:
        want, got = load_file(str(reference / "final" / name)), load_file(str(run / "final" / name))
        assert want.keys() == got.keys(), note
        for key, value in want.items():
            assert torch.equal(got[key], value), f"{name}:{key} differs; {note}"
    rows, ref_rows = read_metrics(run), read_metrics(reference)
    assert [r["step"] for r in rows] == list(range(1, max_steps + 1)), note
    for want, got in zip(ref_rows, rows, strict=True):
        keys = {k for k in want if not k.endswith(TIMING_SUFFIX)}
        assert keys == {k for k in got if not k.endswith(TIMING_SUFFIX)}, note
        assert {k: got[k] for k in keys} == {k: want[k] for k in keys}, note
    rollouts = sorted(p.name for p in (reference / "rollouts").glob("*.jsonl"))
    assert rollouts == sorted(p.name for p in (run / "rollouts").glob("*.jsonl")), note
    for name in rollouts:
        same = (reference / "rollouts" / name).read_bytes() == (
            run / "rollouts" / name
        ).read_bytes()
        assert same, f"rollouts/{name} differs; {note}"
