"""Fixtures for every test.

- The longest modules are collected first, so that they start first on the workers.
- One intra-op thread: the models are tiny, and when other jobs share the machine, OpenMP
  threads that spin-wait for a busy core make each step 10-100x slower.
- A cache directory of the session's own (``bf16: auto`` remembers its timings there), so
  that no test writes to the home directory or reads what an earlier run remembered.
- Seeded global generators: each test starts from a random state fixed by its node id.
- ``kill9``: run a training stage in processes killed with SIGKILL, resume it, and check that
  it ended exactly like an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

# The longest modules first: pytest-xdist (--dist loadscope) hands modules to the workers in
# collection order, and a ten-minute module handed out last runs alone while the other
# worker idles.
LONGEST_FIRST = (
    "demo/test_quick_demo.py",
    "demo/test_demo_two_ranks.py",
    "stages/test_distributed.py",
)


def pytest_collection_modifyitems(config, items):
    def place(item) -> int:
        path = item.nodeid.split("::")[0]
        return next((i for i, name in enumerate(LONGEST_FIRST) if path.endswith(name)), 99)

    items.sort(key=place)  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for the subprocesses the tests start
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _own_cache_dir(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("RLALIGN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "rlalign_cache"))


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

# metrics that measure wall time, not training: they differ between any two runs
TIMING_SUFFIX = "_per_s"


# What the kill9 children import, loaded once by their fork server: a fresh interpreter per kill
# would spend most of the test importing torch and transformers. (Python 3.11's server does not
# get the tests' sys.path, so the child itself imports tests/_killed_child.py: light by then.)
_PRELOAD = [
    "rlalign.cli",
    "rlalign.train.pretrain",
    "rlalign.train.sft",
    "rlalign.train.reward_model",
    "rlalign.train.rl",
    "transformers.models.llama.modeling_llama",
    "torch.utils.tensorboard",
]


def _fork_server():
    """The context whose processes fork from one server that imported rlalign once."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


class Kill9:
    """Runs ``rlalign STAGE ARGS`` in child processes that are SIGKILLed at chosen points, each
    later one with ``--resume``, then finishes the run in this process with ``--resume``.

    Kill points: ``KIND:N``, the kinds in ``tests/_killed_child.py``.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        seed = os.environ.get("KILL9_SEED")
        # A fresh draw on every run (not the per-test seed of the global generators): each run
        # tries new kill points, and every failure prints the seed that replays it.
        self.seed = int(seed) if seed else random.SystemRandom().randrange(2**31)
        self.rng = random.Random(self.seed)

    def plan(
        self,
        max_steps: int,
        save_steps: int,
        kinds: tuple[str, ...],
        *,
        rollout_steps: int = 1,
        kills: int = 3,
    ) -> list[str]:
        """``kills`` random kill points in the order a run meets them (``KILL9_SEED=S`` replays
        a plan): each a random kind of ``kinds`` at a random step that the run resumed after
        the previous kill still reaches. ``rollout_steps``: optimizer steps per RL rollout (a
        rollout point's N is the rollout's number, collected before step (N-1)*rollout_steps+1).
        """
        saves = sorted({*range(save_steps, max_steps + 1, save_steps), max_steps})
        restart, points = 0, []  # restart: the step of the checkpoint a resumed run loads
        for _ in range(kills):
            after = range(restart + 1, max_steps + 1)
            steps = {
                "step": list(after),
                "metrics": list(after),
                "weights": [s for s in saves if s > restart],
                "checkpoint": [s for s in saves if s > restart],
                "final": [max_steps],
                "rollout": [s for s in after if (s - 1) % rollout_steps == 0],
                "reward": [s for s in after if (s - 1) % rollout_steps == 0],
            }
            kind = self.rng.choice([k for k in kinds if steps[k]])
            step = self.rng.choice(steps[kind])
            number = (step - 1) // rollout_steps + 1 if kind in ("rollout", "reward") else step
            points.append(f"{kind}:{number}")
            if kind == "final":  # the run has nothing left to do but write final/ again
                break
            restart = max((s for s in saves if s < step), default=0)
        return points

    def describe(self, kills: list[str]) -> str:
        return f"killed at {' then '.join(kills)} (replay with KILL9_SEED={self.seed})"

    def run(
        self, argv: list[str], kills: list[str], timeout: float = 300, finish: bool = True
    ) -> None:
        """Kill a run at each of ``kills`` in turn; then (``finish``) resume it to its end."""
        import _killed_child
        from rlalign.cli import main

        stage, rest = argv[0], argv[1:]
        context = _fork_server()
        for i, point in enumerate(kills):
            args = argv if i == 0 else [stage, "--resume", *rest]
            marker, log = self.tmp_path / f"kill{i}.marker", self.tmp_path / f"kill{i}.stderr"
            child = context.Process(
                target=_killed_child.run, args=(point, str(marker), str(log), args)
            )
            child.start()
            deadline = time.monotonic() + timeout
            while not marker.exists():
                if not child.is_alive():
                    pytest.fail(
                        f"child exited ({child.exitcode}) before {point}: {log.read_text()}; "
                        + self.describe(kills)
                    )
                if time.monotonic() > deadline:
                    child.kill()
                    pytest.fail(f"child did not reach {point} within {timeout} s")
                time.sleep(0.02)
            os.kill(child.pid, signal.SIGKILL)
            child.join()
            assert child.exitcode == -signal.SIGKILL, self.describe(kills)
            self._check_after_kill(argv, point, marker, log, kills)
        if finish:
            assert main([stage, "--resume", *rest]) == 0, self.describe(kills)

    def _check_after_kill(
        self, argv: list[str], point: str, marker: Path, log: Path, kills: list[str]
    ) -> None:
        """What a kill may leave: half-written checkpoints, final/ and rollout files are
        invisible, every visible one is whole; at most the last metrics line is torn; a reward
        worker ends with the run, quietly (its stderr is the run's)."""
        from rlalign.checkpoint import check_checkpoint, list_checkpoints

        note = self.describe(kills)
        out = Path(next(a for a in argv if a.startswith("output_dir=")).partition("=")[2])
        kind, _, number = point.partition(":")
        for found, path in list_checkpoints(out):
            assert not (kind in ("weights", "checkpoint") and found == int(number)), note
            assert check_checkpoint(path)["step"] == found, note
        if (out / "final").exists():
            _assert_whole_weights(out / "final", note)
        for path in sorted((out / "rollouts").glob("iter_*.jsonl")):
            _strict_jsonl(path, note)
        lines = (out / "metrics.jsonl").read_text(encoding="utf-8").split("\n")
        for number, line in enumerate(lines[:-1], 1):  # the last one may be torn
            try:
                json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"metrics.jsonl:{number}: torn line {line!r} before the end; {note}")
        if kind == "reward":
            _assert_exit_soon([int(p) for p in marker.read_text().split()], note)
            assert "Traceback" not in log.read_text(), f"{log.read_text()}; {note}"

    def assert_same_run(self, reference: Path, run: Path, max_steps: int, kills: list[str]):
        """``run`` ended exactly as ``reference``: bit-identical final weights, every step
        logged once (``logging_steps=1``) on a whole line with the same values, the same rollout
        files, and no temporary file left anywhere."""
        _assert_same_run(reference, run, max_steps, self.describe(kills))


@pytest.fixture
def kill9(tmp_path) -> Kill9:
    return Kill9(tmp_path)


def _strict_jsonl(path: Path, note: str) -> list[dict]:
    """Every line of ``path`` a whole JSON object ending in a newline (no torn line)."""
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), f"{path.name}: torn last line; {note}"
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"{path.name}:{number}: torn line {line!r}; {note}")
    return rows


def _assert_whole_weights(directory: Path, note: str) -> None:
    from rlalign.errors import CorruptFileError
    from rlalign.io import check_safetensors

    files = list(directory.glob("*.safetensors"))
    assert files, f"{directory}: no weights; {note}"
    for file in files:
        try:
            check_safetensors(file, "")
        except CorruptFileError as exc:
            pytest.fail(f"{exc}; {note}")


def _assert_exit_soon(pids: list[int], note: str, within: float = 10.0) -> None:
    """The processes ``pids`` end (exit or become zombies) within ``within`` seconds."""
    assert pids, f"no reward worker was running; {note}"
    deadline = time.monotonic() + within
    for pid in pids:
        while _running(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"reward worker {pid} outlived the killed run; {note}")
            time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _assert_same_run(reference: Path, run: Path, max_steps: int, note: str) -> None:
    from safetensors.torch import load_file

    files = sorted(p.name for p in (reference / "final").glob("*.safetensors"))
    assert files and files == sorted(p.name for p in (run / "final").glob("*.safetensors"))
    for name in files:
        want, got = load_file(str(reference / "final" / name)), load_file(str(run / "final" / name))
        assert want.keys() == got.keys(), note
        for key, value in want.items():
            assert torch.equal(got[key], value), f"{name}:{key} differs; {note}"
    rows, ref_rows = (
        _strict_jsonl(run / "metrics.jsonl", note),
        _strict_jsonl(reference / "metrics.jsonl", note),
    )
    assert [r["step"] for r in rows] == list(range(1, max_steps + 1)), note
    for want, got in zip(ref_rows, rows, strict=True):
        keys = {k for k in want if not k.endswith(TIMING_SUFFIX)}
        assert keys == {k for k in got if not k.endswith(TIMING_SUFFIX)}, note
        assert {k: got[k] for k in keys} == {k: want[k] for k in keys}, note
    rollouts = sorted(p.name for p in (reference / "rollouts").glob("*"))
    assert rollouts == sorted(p.name for p in (run / "rollouts").glob("*")), note
    for name in rollouts:
        same = (reference / "rollouts" / name).read_bytes() == (
            run / "rollouts" / name
        ).read_bytes()
        assert same, f"rollouts/{name} differs; {note}"
    left = [str(p.relative_to(run)) for p in run.rglob(".*") if p.name.endswith((".tmp", ".old"))]
    assert not left, f"temporary files left behind: {left}; {note}"
