"""Every stage under torchrun: 2 gloo ranks (DDP and FSDP2) give the weights of 1 process with
the same global batch; a simulated two-node launch agrees too; a run checkpointed at 2 ranks
resumes at 1; bad launches fail on every rank without hanging."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlalign.cli import main
from rlalign.metrics import read_metrics

pytestmark = pytest.mark.slow

# Two ranks sum gradients in another order than one process does; Adam turns rounding noise on
# near-zero gradients into updates of up to lr, hence atol rather than bit equality.
TOLERANCE = {"rtol": 1e-5, "atol": 5e-5}


def launch(args: list[str], *, nproc: int = 2, launcher: list[str] | None = None, timeout=300):
    """``torchrun --nproc_per_node N -m rlalign ARGS`` (one thread per rank)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RLALIGN_DIST_TIMEOUT": "120"}
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    cmd += launcher if launcher is not None else ["--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.Popen(
        [*cmd, "-m", "rlalign", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"torchrun hung:\n{out}\n{err}") from None
    return proc.returncode, out + err


# A rare abort of one gloo rank under heavy CPU load ("terminate called without an active
# exception", SIGABRT), seen twice in ~60 FSDP launches on the shared 2-core machine and not
# reproducible on an idle one; noted on the scale-out issue. One retry keeps it from failing
# unrelated work; any other failure, or the same abort twice, fails the test.
GLOO_ABORT = "terminate called without an active exception"


def run_torchrun(args: list[str], **kwargs) -> str:
    code, output = finish(launch(args, **kwargs))
    if code != 0 and GLOO_ABORT in output:
        code, output = finish(launch([*args, "overwrite_output_dir=true"], **kwargs))
    assert code == 0, output
    return output


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], **TOLERANCE, msg=key)


def stage_args(stage: str, tmp: Path, world_dir: Path, base: Path, word: Path, task) -> list[str]:
    """A few steps of ``stage`` with a global batch of 8 (4 micro-batches of 2 on 1 process)."""
    common = [
        "per_device_train_batch_size=2",
        "global_batch_size=8",
        "max_steps=4",
        "save_steps=2",
        "logging_steps=1",
        "disable_tqdm=true",
        "seed=1",
    ]
    if stage == "pretrain":
        corpus = tmp / "corpus.txt"
        corpus.write_text("\n".join(f"the cat {i % 7} sat on mat {i % 5}" for i in range(120)))
        return [
            "pretrain",
            f"data={corpus}",
            "vocab_size=300",
            "block_size=16",
            "model=tiny",
            *common,
        ]
    if stage == "sft":
        return ["sft", f"model={base}", f"data={world_dir / 'sft.jsonl'}", "eval_steps=2", *common]
    if stage == "reward":
        return ["reward", f"model={base}", f"data={world_dir / 'preferences.jsonl'}", *common]
    assert stage == "grpo"
    return [
        "rl",
        f"model={word}",
        f"data={task['prompts']}",
        f"reward_funcs={task['reward']}",
        "prompts_per_iteration=4",
        "num_generations=4",
        "max_completion_length=4",
        "learning_rate=0.02",
        "beta=0.1",
        "reward_timeout=60",
        *common,
    ]


@pytest.fixture
def make_args(tmp_path, world_dir, base_model_dir, word_model_dir, word_task):
    def make(stage: str, out: Path, *extra: str) -> list[str]:
        args = stage_args(stage, tmp_path, world_dir, base_model_dir, word_model_dir, word_task)
        return [*args, f"output_dir={out}", *extra]

    return make


@pytest.mark.parametrize(
    ("stage", "strategy"),
    [
        ("pretrain", "ddp"),
        ("pretrain", "fsdp"),
        ("sft", "ddp"),
        ("sft", "fsdp"),
        ("grpo", "ddp"),
        ("grpo", "fsdp"),
        ("grpo-ptx", "ddp"),
        ("grpo-ptx", "fsdp"),
        ("sft-lora", "fsdp"),
    ],
)
def test_two_ranks_give_the_single_process_weights(make_args, tmp_path, stage, strategy):
    single, double = tmp_path / "single", tmp_path / "double"
    extra = ["lora.r=4"] if stage.endswith("-lora") else []
    if stage.endswith("-ptx"):  # PPO-ptx text rows ride in the RL forward: still one forward
        corpus = tmp_path / "ptx.txt"
        corpus.write_text("".join("red green blue cat dog sun moon\n" for _ in range(30)))
        extra = [f"ptx_data={corpus}", "ptx_coef=0.5", "ptx_batch_size=2"]
    stage = stage.removesuffix("-lora").removesuffix("-ptx")
    assert main(make_args(stage, single, *extra)) == 0
    output = run_torchrun(make_args(stage, double, f"distributed={strategy}", *extra))
    assert_same_weights(single, double)
    # only rank 0 wrote the run and printed the summary
    assert output.count(str(double / "final")) == 1
    one, two = read_metrics(single), read_metrics(double)
    assert [r["step"] for r in two] == [1, 2, 3, 4]
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    "extra", [[], ["prior_coef=1"], ["lm_loss_coef=0.5"]], ids=["plain", "prior", "grm"]
)
def test_reward_model_under_ddp(make_args, tmp_path, extra):
    single, double = tmp_path / "single", tmp_path / "double"
    assert main(make_args("reward", single, *extra)) == 0
    run_torchrun(make_args("reward", double, *extra))
    assert_same_weights(single, double)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_simulated_two_node_launch_agrees(make_args, tmp_path):
    """Two torchrun launches, one process each, meeting at a c10d rendezvous on 127.0.0.1."""
    single, nodes = tmp_path / "single", tmp_path / "nodes"
    endpoint = f"127.0.0.1:{free_port()}"
    procs = [
        launch(
            make_args("sft", nodes),
            launcher=[
                "--nnodes=2",
                f"--node_rank={rank}",
                "--nproc_per_node=1",
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint={endpoint}",
                "--rdzv_id=rlalign-test",
            ],
        )
        for rank in (0, 1)
    ]
    results = [finish(p) for p in procs]
    assert all(code == 0 for code, _ in results), results
    assert main(make_args("sft", single)) == 0
    assert_same_weights(single, nodes)


def test_a_checkpoint_written_at_two_ranks_resumes_at_one(make_args, tmp_path):
    straight, two = tmp_path / "straight", tmp_path / "two"
    assert main(make_args("sft", straight)) == 0
    run_torchrun(make_args("sft", two, "distributed=fsdp"))
    # keep only the step-2 checkpoint written by the two ranks, then finish in one process
    shutil.rmtree(two / "checkpoints" / "step_4")
    shutil.rmtree(two / "final")
    assert main(["sft", "--resume", *make_args("sft", two)[1:]]) == 0
    assert_same_weights(straight, two)
    assert [r["step"] for r in read_metrics(two)] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("global_batch", "global_batch_size=6 is not a multiple"),
        ("not_causal", "which is not a causal (decoder-only) language model"),
        ("lora_targets", "lora.target_modules: c_attn not found"),
    ],
)
def test_bad_input_fails_on_every_rank_without_a_traceback(make_args, tmp_path, case, message):
    out = tmp_path / "bad"
    args = make_args("sft", out)
    if case == "global_batch":
        args = [a for a in args if not a.startswith("global_batch_size=")]
        args.append("global_batch_size=6")
    elif case == "not_causal":
        from transformers import T5Config, T5Model

        encoder_decoder = tmp_path / "t5"
        T5Model(T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8,
                         vocab_size=50)).save_pretrained(encoder_decoder)  # fmt: skip
        base = next(a for a in args if a.startswith("model=")).split("=", 1)[1]
        args = [a for a in args if not a.startswith("model=")]
        args += [f"model={encoder_decoder}", f"tokenizer={base}"]
    else:
        args.append("lora.target_modules=q_proj,c_attn")
    code, output = finish(launch(args), timeout=120)
    assert code != 0
    for rank in (0, 1):
        assert f"[rank {rank}/2]: error: " in output and message in output, output[-2000:]
    assert "rlalign/cli.py" not in output  # no traceback from rlalign (torchrun prints its own)


def test_a_rank_that_fails_alone_does_not_leave_the_other_waiting(make_args, tmp_path):
    """Rank 1's reward function raises while rank 0 waits in a collective: torchrun stops both,
    quickly, and the error names the function."""
    bad = tmp_path / "rank_reward.py"
    bad.write_text(
        "import os\n"
        "def picky(prompts, completions, **fields):\n"
        "    if os.environ.get('RANK') == '1':\n"
        "        raise ValueError('rank 1 cannot score')\n"
        "    return [0.0] * len(completions)\n"
    )
    args = make_args("grpo", tmp_path / "out", f"reward_funcs={bad}:picky")
    code, output = finish(launch(args), timeout=200)
    assert code != 0
    assert "[rank 1/2]: error:" in output and "picky" in output
