"""Table-driven bad input: every file in tests/bad_inputs/ and every case of its cases.yaml.

Each case runs its command on top of a finished run of that stage (``--resume``, one step
more), so a run that did not stop would train and write. Each must exit with status 2 and one
line on stderr (no traceback, from this process or a reward worker: the file descriptors are
captured), containing the case's message; and it must lose nothing already written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from rlalign.cli import main
from rlalign.rundir import LOCK_FILE

BAD = Path(__file__).parent.parent / "bad_inputs"
CASES = yaml.safe_load((BAD / "cases.yaml").read_text(encoding="utf-8"))


def base_args(stage: str, fx: dict) -> list[str]:
    """A valid configuration of each stage (two steps, a checkpoint each step)."""
    world, common = fx["world_dir"], ["disable_tqdm=true", "save_steps=1", "device=cpu"]
    if stage == "pretrain":
        return [f"data={world / 'corpus.jsonl'}", "model=tiny", "vocab_size=300",
                "block_size=32", "per_device_train_batch_size=4", *common]  # fmt: skip
    if stage == "sft":
        return [f"model={fx['base_model_dir']}", f"data={world / 'sft.jsonl'}", "max_length=48",
                "per_device_train_batch_size=4", *common]  # fmt: skip
    if stage == "reward":
        return [f"model={fx['base_model_dir']}", f"data={world / 'preferences.jsonl'}",
                "max_length=48", "per_device_train_batch_size=4", *common]  # fmt: skip
    if stage == "rl":
        task = fx["word_task"]
        return [f"model={fx['word_model_dir']}", f"data={task['prompts']}",
                f"reward_funcs={task['reward']}", "prompts_per_iteration=4", "num_generations=2",
                "per_device_train_batch_size=8", "max_completion_length=4", "reward_timeout=60",
                *common]  # fmt: skip
    raise AssertionError(stage)


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory, world_dir, base_model_dir, word_model_dir, word_task):
    """A finished one-step run per stage (made when first needed)."""
    fx = {"world_dir": world_dir, "base_model_dir": base_model_dir,
          "word_model_dir": word_model_dir, "word_task": word_task}  # fmt: skip
    made: dict[str, Path] = {}

    def get(stage: str) -> tuple[Path, dict]:
        if stage == "show":
            return BAD / "show_malformed_run", fx
        if stage not in made:
            out = tmp_path_factory.mktemp(f"finished_{stage}")
            assert main([stage, *base_args(stage, fx), "max_steps=1", f"output_dir={out}"]) == 0
            made[stage] = out
        return made[stage], fx

    return get


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file's bytes, but the lock file's (which names the process that last held it)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


def metric_rows(files: dict[str, bytes]) -> list[dict]:
    text = files.get("metrics.jsonl", b"").decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def no_hf_progress_bars():
    """What ``HF_HUB_DISABLE_PROGRESS_BARS=1`` (set by the CLI before transformers is
    imported) does in a real process; here transformers was imported before main() ran."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    yield
    if was:
        hf_logging.enable_progress_bar()


def test_every_file_in_the_folder_has_a_case():
    used = {
        arg.split("{bad}/")[1].split(":")[0] for c in CASES for arg in c["args"] if "{bad}/" in arg
    }
    # files and folders (a model directory); show_malformed_run is the show cases' run
    files = {p.name for p in BAD.iterdir()} - {"cases.yaml", "show_malformed_run"}
    assert files == used, files ^ used
    assert len({c["id"] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input_gives_its_message_exit_2_and_loses_nothing(
    case, finished_runs, tmp_path, capfd, no_hf_progress_bars
):
    stage = case["stage"]
    template, fx = finished_runs(stage)
    run = tmp_path / "run"
    shutil.copytree(template, run)
    before = snapshot(run)

    def fill(text: str) -> str:
        return text.replace("{bad}", str(BAD)).replace("{missing}", str(tmp_path / "missing"))

    args = [fill(a) for a in case["args"]]
    if stage == "show":
        argv = ["show", str(run), *args]
    else:
        argv = [stage, "--resume", *base_args(stage, fx), "max_steps=2", *args, f"output_dir={run}"]
    capfd.readouterr()
    code = main(argv)
    out, err = capfd.readouterr()

    assert code == 2, (err, out)
    assert "Traceback" not in err + out, err
    assert err.startswith(f"rlalign {stage}: error: ") and err.count("\n") == 1, err
    assert fill(case["expect"]) in err, err

    after = snapshot(run)
    if case["when"] == "input":
        assert after == before, "the run directory was modified"
        assert not (tmp_path / "missing").exists()
        return
    # found during training: what the run had written is intact, nothing new was trained
    kept = [k for k in before if k.startswith(("checkpoints/", "final/"))]
    assert kept and {k: after.get(k) for k in kept} == {k: before[k] for k in kept}
    assert sorted(k for k in after if k.startswith(("checkpoints/", "final/"))) == sorted(kept)
    assert metric_rows(after) == metric_rows(before)
