"""The Python API: SFT -> reward model -> GRPO with rows in memory and a callable reward gives
the weights the CLI gives from JSONL files and a reward file, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from safetensors.torch import load_file

import rlalign
from rlalign.cli import main
from rlalign.errors import ConfigError, UserError

SFT_ROWS = [{"prompt": "say a word", "completion": w} for w in ("blue", "red", "blue moon", "sun")]
PREF_ROWS = [
    {"prompt": "say a word", "chosen": "blue", "rejected": "red"},
    {"prompt": "say a word", "chosen": "blue moon", "rejected": "cat"},
    {"prompt": "say a word", "chosen": "blue sun", "rejected": "dog"},
    {"prompt": "say a word", "chosen": "blue", "rejected": "green"},
]
PROMPTS = [{"prompt": "say a word", "id": i} for i in range(8)]
COMMON = {"seed": 3, "disable_tqdm": True, "save_steps": 100}
SFT_KEYS = {**COMMON, "max_steps": 3, "per_device_train_batch_size": 2, "eval_fraction": 0.0,
            "max_length": 16}  # fmt: skip
REWARD_KEYS = {**COMMON, "max_steps": 2, "per_device_train_batch_size": 2, "eval_fraction": 0.0,
               "max_length": 16}  # fmt: skip
RL_KEYS = {**COMMON, "max_steps": 2, "prompts_per_iteration": 4, "num_generations": 2,
           "per_device_train_batch_size": 8, "max_completion_length": 3, "eval_prompts": 0}  # fmt: skip


def says_blue(prompts, completions, **fields):
    return [1.0 if "blue" in c.split() else 0.0 for c in completions]


def weights(final_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(next(Path(final_dir).glob("*.safetensors")))


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def cli(stage: str, keys: dict, **more: str) -> None:
    args = [
        f"{k}={json.dumps(v) if isinstance(v, bool) else v}" for k, v in {**keys, **more}.items()
    ]
    assert main([stage, *args]) == 0


def test_api_flow_equals_the_cli_flow(word_model_dir, tmp_path):
    datasets.disable_progress_bars()
    # --- through the CLI: JSONL files and a reward file
    files = tmp_path / "files"
    files.mkdir()
    for name, rows in (("sft", SFT_ROWS), ("prefs", PREF_ROWS), ("prompts", PROMPTS)):
        (files / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (files / "rewards.py").write_text(
        "def says_blue(prompts, completions, **fields):\n"
        "    return [1.0 if 'blue' in c.split() else 0.0 for c in completions]\n"
    )
    c = tmp_path / "cli"
    cli("sft", SFT_KEYS, model=word_model_dir, data=files / "sft.jsonl", output_dir=c / "sft")
    cli("reward", REWARD_KEYS, model=c / "sft" / "final", data=files / "prefs.jsonl",
        output_dir=c / "rm")  # fmt: skip
    cli("rl", RL_KEYS, model=c / "sft" / "final", data=files / "prompts.jsonl",
        reward_funcs=f"{files / 'rewards.py'}:says_blue", output_dir=c / "rl")  # fmt: skip

    # --- through the API: a model object, Datasets in memory, a callable
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = tmp_path / "api"
    model = AutoModelForCausalLM.from_pretrained(word_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(word_model_dir)
    sft = rlalign.sft(rlalign.SFTConfig(output_dir=str(a / "sft"), data="unused", **SFT_KEYS),
                      model=model, tokenizer=tokenizer,
                      train_dataset=datasets.Dataset.from_list(SFT_ROWS))  # fmt: skip
    rm = rlalign.reward({"output_dir": str(a / "rm"), **REWARD_KEYS}, model=sft.final_dir,
                        train_dataset=datasets.Dataset.from_list(PREF_ROWS))  # fmt: skip
    rl = rlalign.align(model=sft.final_dir, train_dataset=PROMPTS, reward_funcs=[says_blue],
                    output_dir=str(a / "rl"), **RL_KEYS)  # fmt: skip

    assert same(weights(sft.final_dir), weights(c / "sft" / "final"))
    assert same(weights(rm.final_dir), weights(c / "rm" / "final"))
    assert same(weights(rl.final_dir), weights(c / "rl" / "final"))
    # the result says where things are and what the run logged
    assert rl.output_dir == a / "rl" and rl.final_dir == a / "rl" / "final" and rl.step == 2
    logged = [json.loads(x) for x in (a / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert rl.metrics["reward_mean"] == [r for r in logged if "reward_mean" in r][-1]["reward_mean"]
    assert "reward/says_blue" in rl.metrics
    assert (a / "rl" / "report.html").is_file() and (a / "sft" / "report.html").is_file()
    # the run directory holds what it was made from
    saved = yaml.safe_load((a / "sft" / "config.yaml").read_text())
    assert saved["model"] == str(a / "sft" / "inputs" / "model")
    assert saved["data"] == str(a / "sft" / "inputs" / "data.jsonl")
    assert yaml.safe_load((a / "rl" / "config.yaml").read_text())["reward_funcs"] == [
        "python:says_blue"
    ]


def test_api_mistakes_are_user_errors(word_model_dir, tmp_path):
    with pytest.raises(
        ConfigError, match="unknown key 'learning_rat', did you mean 'learning_rate'"
    ):
        rlalign.sft(model=word_model_dir, train_dataset=SFT_ROWS, learning_rat=1e-3,
                    output_dir=str(tmp_path / "a"))  # fmt: skip
    with pytest.raises(UserError, match=r"the SFT data rows, row 1: missing field 'completion'"):
        rlalign.sft(model=word_model_dir, train_dataset=[SFT_ROWS[0], {"prompt": "x"}],
                    output_dir=str(tmp_path / "b"))  # fmt: skip
    assert not (tmp_path / "b").exists()  # nothing written for a bad row
    with pytest.raises(UserError, match="give Python callables or name strings, not both"):
        rlalign.align(model=word_model_dir, train_dataset=PROMPTS, output_dir=str(tmp_path / "c"),
                   reward_funcs=[says_blue, "x.py:f"])  # fmt: skip
    # a callable's run resumed from the CLI: one line that says what to do
    rlalign.align(model=word_model_dir, train_dataset=PROMPTS, reward_funcs=[says_blue],
               output_dir=str(tmp_path / "d"), **{**RL_KEYS, "save_steps": 1})  # fmt: skip
    with pytest.raises(UserError, match="'python:says_blue' was a Python callable given to "
                       r"rlalign\.align\(\); .* pass it again"):  # fmt: skip
        from rlalign.config import load_config
        from rlalign.train.rl import run_rl
        from rlalign.train.rl_config import RLConfig

        cfg = load_config(RLConfig, tmp_path / "d" / "config.yaml", ["max_steps=3"])
        run_rl(cfg, resume=True)
    # ... and from Python with the callable again, it continues
    again = rlalign.align(yaml.safe_load((tmp_path / "d" / "config.yaml").read_text()),
                       reward_funcs=[says_blue], resume=True, max_steps=3)  # fmt: skip
    assert again.step == 3


def test_control_train_from_python_is_the_command_line_run(tmp_path):
    """The car's (and any env's) training: env defaults, then the config, then keys."""
    keys = {"total_steps": 2048, "n_envs": 4, "n_steps": 64, "eval_every": 10**9,
            "final_eval_episodes": 3}  # fmt: skip
    result = rlalign.control_train("CartPole-v1", rlalign.PPOConfig(seed=2),
                                   output_dir=tmp_path / "api", progress=False, **keys)  # fmt: skip
    args = [f"{k}={v}" for k, v in keys.items()]
    assert main(["control", "train", "--env", "CartPole-v1", "--seed", "2", "--no-progress",
                 "--out", str(tmp_path / "cli"), *args]) == 0  # fmt: skip
    assert same(weights(tmp_path / "api"), weights(tmp_path / "cli"))
    saved = yaml.safe_load((tmp_path / "api" / "config.yaml").read_text())
    assert saved["num_iterations"] == 4 != rlalign.PPOConfig().num_iterations  # CartPole's
    assert result.final_dir == tmp_path / "api" and result.step == 2048
    cli_result = json.loads((tmp_path / "cli" / "result.json").read_text())
    assert result.metrics["final_eval_return"] == cli_result["final_eval_return"]


def test_keys_by_their_old_names_and_paths_are_taken_as_the_command_line_takes_them(
    word_model_dir, tmp_path
):
    """An old key name overrides the env's default given by the new one (as on the command
    line), and a path key may be a Path."""
    keys = {"total_steps": 256, "n_envs": 2, "n_steps": 64, "eval_every": 10**9,
            "final_eval_episodes": 1}  # fmt: skip
    with pytest.warns(FutureWarning, match="'n_epochs' is now 'num_iterations'"):
        rlalign.control_train("CartPole-v1", output_dir=tmp_path / "old", progress=False,
                              baselines=False, n_epochs=2, **keys)  # fmt: skip
    saved = yaml.safe_load((tmp_path / "old" / "config.yaml").read_text())
    assert saved["num_iterations"] == 2
    out = tmp_path / "sft"
    result = rlalign.sft(model=word_model_dir, train_dataset=SFT_ROWS, output_dir=out, **SFT_KEYS)
    assert result.output_dir == out and (out / "final").is_dir()


def test_a_function_rlalign_loaded_from_a_file_is_named_by_its_file(tmp_path):
    """Its module name is this process's own: a worker process (or a resumed run) imports it
    by the file."""
    from rlalign.api import importable_name
    from rlalign.plugins import load_callable
    from rlalign.rewards.sandbox import TimedRewardFunction

    file = tmp_path / "scores.py"
    file.write_text("def score(prompts, completions, **fields):\n    return [0.5] * len(prompts)\n")
    name = importable_name(load_callable(f"{file}:score", "reward function"))
    assert name == f"{file}:score"
    worker = TimedRewardFunction(name, 20)
    try:
        worker.start()
        assert worker(["p"], ["c"]) == [0.5]
    finally:
        worker.close()


def test_a_callable_goes_to_the_sandbox_when_a_timeout_is_asked(word_model_dir, tmp_path,
                                                                  monkeypatch):  # fmt: skip
    module = tmp_path / "my_rewards_mod.py"
    module.write_text(
        "import os\n\n\ndef says_blue(prompts, completions, **fields):\n"
        "    with open(os.environ['PIDS'], 'a') as f:\n"
        "        f.write(f'{os.getpid()}\\n')\n"
        "    return [1.0 if 'blue' in c.split() else 0.0 for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PIDS", str(tmp_path / "pids.txt"))
    import os

    import my_rewards_mod

    from rlalign.api import importable_name

    assert importable_name(my_rewards_mod.says_blue) == "my_rewards_mod:says_blue"
    assert importable_name(lambda p, c: c) is None and importable_name(says_blue) is not None
    keys = {**RL_KEYS, "max_steps": 1}
    sandboxed = rlalign.align(
        model=word_model_dir,
        train_dataset=PROMPTS,
        output_dir=str(tmp_path / "a"),
        reward_funcs=[my_rewards_mod.says_blue],
        reward_timeout=20,
        **keys,
    )
    pids = {int(p) for p in (tmp_path / "pids.txt").read_text().split()}
    assert os.getpid() not in pids  # scored in the worker
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert saved["reward_funcs"] == ["my_rewards_mod:says_blue"]  # resumable from the CLI
    (tmp_path / "pids.txt").unlink()
    in_process = rlalign.align(model=word_model_dir, train_dataset=PROMPTS,
                               output_dir=str(tmp_path / "b"),
                               reward_funcs=[my_rewards_mod.says_blue], **keys)  # fmt: skip
    assert {int(p) for p in (tmp_path / "pids.txt").read_text().split()} == {os.getpid()}
    assert same(weights(sandboxed.final_dir), weights(in_process.final_dir))
