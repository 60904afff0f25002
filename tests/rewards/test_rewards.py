"""Reward loading, composition, validation and the per-call time limit."""

from __future__ import annotations

import math
import re
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rlalign.data.verifiers import VERIFIERS
from rlalign.errors import UserError
from rlalign.rewards import RewardComposer, RewardError, RewardTerm, load_reward_function

USER_CODE = textwrap.dedent(
    """
    import sys
    import time

    def length(prompts, completions, **fields):
        return [float(len(c)) for c in completions]

    def bonus(prompts, completions, kind=None, **fields):
        return [1.0 if k == "fact" else 0.0 for k in kind]

    def raises_on_b(prompts, completions, **fields):
        if "b" in completions:
            raise ValueError("no b allowed")
        return [0.0] * len(completions)

    def nan(prompts, completions, **fields):
        return [0.0, float("nan")][: len(completions)]

    def short(prompts, completions, **fields):
        return [0.0]

    def hangs(prompts, completions, **fields):
        time.sleep(60)
        return [0.0] * len(completions)

    def not_a_list(prompts, completions, **fields):
        return None

    def bad_json(prompts, completions, **fields):
        import json
        return [json.loads(c) for c in completions]  # line 63 of the file

    def a_set(prompts, completions, **fields):
        return {2.0, 1.0}  # float() of it would reorder the scores

    def a_dict(prompts, completions, **fields):
        return {0.0: "a", 1.0: "b"}

    def two_chars(prompts, completions, **fields):
        return "10"  # float() would take "1" and "0"

    def strings(prompts, completions, **fields):
        return ["1", "0.5"]

    def bools_and_scalars(prompts, completions, **fields):
        import numpy, torch
        return [True, numpy.float32(0.5)] if len(completions) == 2 else [torch.tensor(0.25)]

    def exits(prompts, completions, **fields):
        sys.exit(3)

    VALUE = 3
    """
)


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(USER_CODE)
    return str(path)


def test_load_from_file_and_module(user_file):
    fn = load_reward_function(f"{user_file}:length")
    assert fn(["p"], ["abc"]) == [3.0]
    assert (
        load_reward_function("rlalign.data.verifiers:hallucination") is VERIFIERS["hallucination"]
    )


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("no_colon", "expected 'package.module:function'"),
        ("missing/file.py:f", "file 'missing/file.py' not found"),
        ("rlalign.nonexistent:f", "no module named 'rlalign.nonexistent'"),
        ("rlalign.data.verifiers:halucination", "did you mean 'hallucination'"),
    ],
)
def test_load_errors(spec, fragment):
    with pytest.raises(UserError, match=fragment):
        load_reward_function(spec)


def test_load_error_for_value_that_is_not_callable(user_file):
    with pytest.raises(UserError, match="'VALUE' is not callable"):
        load_reward_function(f"{user_file}:VALUE")


def test_weighted_sum_and_components_in_process(user_file):
    composer = RewardComposer.from_specs(
        [f"{user_file}:length", f"{user_file}:bonus"], weights=[0.5, 2.0], timeout=None
    )
    total, parts = composer(["p", "q"], ["abcd", "xy"], kind=["fact", "harmful"])
    assert parts == {"length": [4.0, 2.0], "bonus": [1.0, 0.0]}
    assert total == [0.5 * 4 + 2.0, 0.5 * 2]


def test_builtin_verifiers_by_name():
    composer = RewardComposer.from_specs(["hallucination"], builtins=VERIFIERS)
    total, _ = composer(["q"], ["I don't know."], kind=["unknown"])
    assert total == [1.0]


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        (
            "raises_on_b",
            "failed: ValueError: no b allowed.*on sample 1 \\(prompt 'q1', completion 'b'\\)",
        ),
        ("nan", "returned nan for sample 1 \\(prompt 'q1', completion 'b'\\)"),
        ("short", "returned 1 scores for 2 completions"),
        ("not_a_list", "must return a list of numbers"),
        ("a_set", "must return a list of numbers, one per completion in order, got set"),
        ("a_dict", "must return a list of numbers, one per completion in order, got dict"),
        ("two_chars", "must return a list of numbers, one per completion in order, got str"),
        ("strings", "must return a list of numbers, .* got a list holding str '1'"),
    ],
)
@pytest.mark.parametrize("timeout", [None, 20.0], ids=["in-process", "worker"])
def test_misbehaving_functions_are_named_with_the_sample(user_file, name, fragment, timeout):
    composer = RewardComposer.from_specs([f"{user_file}:{name}"], timeout=timeout)
    try:
        with pytest.raises(RewardError, match=f"reward function '{name}' {fragment}"):
            composer(["q0", "q1"], ["a", "b"])
    finally:
        composer.close()


@pytest.mark.parametrize("timeout", [None, 20.0], ids=["in-process", "worker"])
def test_bools_and_numpy_or_torch_scalars_are_numbers(user_file, timeout):
    composer = RewardComposer.from_specs([f"{user_file}:bools_and_scalars"], timeout=timeout)
    try:
        assert composer(["q0", "q1"], ["a", "b"])[0] == [1.0, 0.5]
        assert composer(["q0"], ["a"])[0] == [0.25]
    finally:
        composer.close()


@pytest.mark.parametrize("timeout", [None, 20.0], ids=["in-process", "worker"])
def test_a_failure_names_the_line_of_the_users_file(user_file, timeout):
    """Not the library frame the exception ended in (json/decoder.py), the user's line."""
    lines = Path(user_file).read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "json.loads(c)" in text)
    composer = RewardComposer.from_specs([f"{user_file}:bad_json"], timeout=timeout)
    try:
        with pytest.raises(RewardError, match=rf"JSONDecodeError: .*\({user_file}:{line}\)"):
            composer(["q0"], ["not json"])
    finally:
        composer.close()


def test_a_hanging_function_is_stopped_by_the_time_limit(user_file):
    composer = RewardComposer.from_specs([f"{user_file}:hangs"], timeout=1.0)
    start = time.monotonic()
    with pytest.raises(RewardError, match="'hangs' timed out"):
        composer(["q"], ["a"])
    assert time.monotonic() - start < 30
    composer.close()


def test_worker_is_reused_and_survives_errors(user_file):
    fn_spec = f"{user_file}:raises_on_b"
    composer = RewardComposer.from_specs([fn_spec], timeout=20.0)
    assert composer(["q"], ["a"])[0] == [0.0]
    with pytest.raises(RewardError):
        composer(["q"], ["b"])
    assert composer(["q"], ["a"])[0] == [0.0]
    composer.close()


def test_weights_must_match_and_names_must_differ(user_file):
    with pytest.raises(UserError, match="reward_weights has 1 values for 2"):
        RewardComposer.from_specs([f"{user_file}:length", f"{user_file}:bonus"], weights=[1.0])
    with pytest.raises(UserError, match="distinct names"):
        RewardComposer([RewardTerm("a", len), RewardTerm("a", len)])
    with pytest.raises(UserError, match="no reward function"):
        RewardComposer([])


def test_inf_is_rejected_in_process():
    composer = RewardComposer([RewardTerm("inf", lambda p, c, **f: [math.inf] * len(c))])
    with pytest.raises(RewardError, match="returned inf for sample 0"):
        composer(["q"], ["a"])


def test_a_worker_that_cannot_start_is_reported_and_closes_cleanly(user_file, monkeypatch):
    """The OS refusing a new process (EAGAIN) is a named reward error, and close() after it
    does not fail on the never-started process (it used to raise AssertionError)."""
    from rlalign.rewards.sandbox import TimedRewardFunction

    fn = TimedRewardFunction(f"{user_file}:length", 20.0)

    def refuse(self):
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(type(fn._ctx.Process(target=print)), "start", refuse)
    composer = RewardComposer([RewardTerm("length", fn)])
    with pytest.raises(RewardError, match=r"'length' failed: BlockingIOError.*temporarily"):
        composer(["q"], ["a"])
    composer.close()
    assert fn._proc is None


@pytest.mark.parametrize("timeout", [None, 20.0], ids=["in-process", "worker"])
def test_a_module_that_calls_sys_exit_at_import_is_a_user_error(tmp_path, timeout):
    """``sys.exit`` is SystemExit, not an Exception: it used to end rlalign with its status."""
    path = tmp_path / "exits.py"
    path.write_text("import sys\nsys.exit(5)\ndef f(prompts, completions, **k):\n    return []\n")
    with pytest.raises(
        UserError, match=r"importing '.*exits\.py' failed: it called sys\.exit\(5\)"
    ):
        RewardComposer.from_specs([f"{path}:f"], timeout=timeout)


@pytest.mark.parametrize("timeout", [None, 20.0], ids=["in-process", "worker"])
def test_sys_exit_in_a_call_is_reported_as_the_functions_failure(user_file, timeout):
    composer = RewardComposer.from_specs([f"{user_file}:exits"], timeout=timeout)
    try:
        with pytest.raises(RewardError, match=r"reward function 'exits' failed: SystemExit: 3"):
            composer(["q"], ["a"])
    finally:
        composer.close()


def test_rewards_beyond_the_bound_are_refused_naming_the_function_and_sample():
    from rlalign.rewards.compose import MAX_ABS_REWARD

    assert MAX_ABS_REWARD == 1e15

    def scores(*values):
        return RewardComposer([RewardTerm("big", lambda p, c, **f: list(values))])

    assert scores(1e15, -1e15)(["q", "r"], ["a", "b"])[0] == [1e15, -1e15]  # the bound itself
    for value in (1.0000001e15, -2e15, 1e308, -math.inf):
        with pytest.raises(RewardError, match=f"'big' returned {re.escape(str(value))} .*sample 1"):
            scores(0.0, value)(["q", "r"], ["a", "b"])


def test_a_weighted_sum_beyond_the_bound_names_the_weights():
    terms = [RewardTerm("a", lambda p, c, **f: [1e10] * len(c), weight=1e6),
             RewardTerm("b", lambda p, c, **f: [1.0] * len(c))]  # fmt: skip
    with pytest.raises(RewardError, match=r"weighted reward of sample 0 is 1e\+16 .*a=1e\+06, b=1"):
        RewardComposer(terms)(["q"], ["x"])


def test_a_name_that_is_no_verifier_lists_the_verifiers():
    with pytest.raises(UserError, match="did you mean 'hallucination'"):
        RewardComposer.from_specs(["halucination"], builtins=VERIFIERS)
    with pytest.raises(UserError) as info:
        RewardComposer.from_specs(["zzz"], builtins=VERIFIERS)
    assert "did you mean" not in str(info.value)
    assert f"the verifiers are {', '.join(VERIFIERS)})" in str(info.value)


def _gone(pid: int, within: float = 10.0) -> bool:
    """Whether process ``pid`` has ended (or is a zombie nobody waits for) within ``within`` s."""
    import os

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[-1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        except OSError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(sys.platform != "linux", reason="process groups and prctl: Linux")
def test_nothing_a_reward_function_started_outlives_its_timeout(tmp_path):
    """The worker's whole process group is killed: a `sleep` the function started too."""
    pids = tmp_path / "pids"
    module = tmp_path / "spawns.py"
    module.write_text(
        "import os, subprocess, time\n\n\n"
        "def score(prompts, completions, **fields):\n"
        "    child = subprocess.Popen(['sleep', '300'])\n"
        f"    with open({str(pids)!r}, 'w') as f:\n"
        "        f.write(f'{os.getpid()} {child.pid}')\n"
        "    time.sleep(300)\n"
    )
    composer = RewardComposer.from_specs([f"{module}:score"], timeout=2.0)
    try:
        with pytest.raises(RewardError, match="timed out"):
            composer(["q"], ["a"])
    finally:
        composer.close()
    worker, sleeper = (int(p) for p in pids.read_text().split())
    assert _gone(worker) and _gone(sleeper)


@pytest.mark.skipif(sys.platform != "linux", reason="prctl(PR_SET_PDEATHSIG): Linux")
def test_a_worker_dies_with_a_killed_trainer_and_exit_never_waits_on_one(tmp_path):
    """SIGKILL (or the OOM killer) gives the training process no chance to close its workers:
    the worker goes with it. And a worker left open, whose module ignores SIGTERM, does not
    hang the interpreter's exit."""
    import subprocess

    module = tmp_path / "stubborn.py"
    module.write_text(
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n\n\n"
        "def score(prompts, completions, **fields):\n"
        "    time.sleep(300)\n"
    )
    script = tmp_path / "trainer.py"
    script.write_text(
        "import sys, threading, time\n"
        "from rlalign.rewards.sandbox import TimedRewardFunction\n"
        "if __name__ == '__main__':\n"
        f"    fn = TimedRewardFunction({str(module)!r} + ':score', 600)\n"
        "    fn.start()\n"
        "    print(fn._proc.pid, flush=True)\n"
        "    if sys.argv[1] == 'hang':\n"
        "        threading.Thread(target=fn, args=(['q'], ['a']), daemon=True).start()\n"
        "        time.sleep(300)\n"
        "    # 'exit': leave without closing it\n"
    )
    hung = subprocess.Popen([sys.executable, str(script), "hang"], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    worker = int(hung.stdout.readline())
    time.sleep(0.5)  # the call reaches the worker
    hung.kill()
    hung.wait(timeout=30)
    assert _gone(worker)
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script), "exit"], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30 and _gone(int(done.stdout.split()[0]))
