"""The shared training loop against independent references: a hand-written AdamW loop,
one big batch vs accumulated micro-batches, interrupted vs uninterrupted runs."""

from __future__ import annotations

import math
import os
import shutil
import signal

import pytest
import torch
import torch.nn.functional as F

from rlalign import checkpoint as ckpt
from rlalign.errors import DiskFullError, NonFiniteLossError, UserError
from rlalign.metrics import read_metrics
from rlalign.train.loop import Trainer
from rlalign.train.losses import causal_lm_loss, count_label_tokens

from .helpers import RandomTokens, loop_config, tiny_llama


def make_trainer(tmp_path, source=None, model=None, **cfg):
    cfg = loop_config(tmp_path, **cfg)
    return Trainer(
        model or tiny_llama(),
        causal_lm_loss,
        source or RandomTokens(cfg.per_device_train_batch_size),
        cfg,
        count_fn=count_label_tokens,
        item_name="tokens",
    )


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_matches_a_hand_written_adamw_loop(tmp_path):
    """Same data, same init: the Trainer equals plain torch AdamW + the documented schedule."""
    steps, lr, warmup, floor, wd, clip = 5, 1e-2, 2, 0.1, 0.1, 0.5
    trainer = make_trainer(
        tmp_path, max_steps=steps, warmup_steps=warmup, max_grad_norm=clip, min_lr_ratio=floor
    )
    trainer.fit()

    model = tiny_llama()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}],
        lr=lr,
        foreach=False,
    )
    data = RandomTokens(4)
    for s in range(1, steps + 1):
        factor = (
            s / warmup
            if s <= warmup
            else floor
            + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup)))
        )
        for group in opt.param_groups:
            group["lr"] = lr * factor
        batch = next(data)
        logits = model(input_ids=batch["input_ids"]).logits[:, :-1]
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1)
        )  # a mean over the non-ignored tokens
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(trainer.model.state_dict()[name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_gradient_accumulation_equals_one_big_batch(tmp_path, dtype, tol):
    """4 micro-batches of 2 give the update of 1 batch of 8, though their token counts differ.

    float64 shows the update is the same math; float32 that rounding stays at rounding level
    (Adam divides by sqrt(v), which magnifies rounding in near-zero gradients, hence 1e-5).
    """
    big_source = RandomTokens(8, seed=3)
    big = make_trainer(
        tmp_path / "big",
        source=big_source,
        model=tiny_llama().to(dtype),
        per_device_train_batch_size=8,
    )
    big.fit()

    class Halves:  # the same rows, served as 4 micro-batches of 2
        def __init__(self):
            self.inner, self.parts = RandomTokens(8, seed=3), []

        def __iter__(self):
            return self

        def __next__(self):
            if not self.parts:
                batch = next(self.inner)
                self.parts = [{k: v[i : i + 2] for k, v in batch.items()} for i in (0, 2, 4, 6)]
            return self.parts.pop(0)

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    small = make_trainer(
        tmp_path / "small",
        source=Halves(),
        model=tiny_llama().to(dtype),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=4,
    )
    small.fit()
    for name, value in big.model.state_dict().items():
        torch.testing.assert_close(small.model.state_dict()[name], value, rtol=tol, atol=tol)
    big_rows, small_rows = read_metrics(tmp_path / "big"), read_metrics(tmp_path / "small")
    for a, b in zip(big_rows, small_rows, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def _stop_after(k, sig):
    """A loss function that sends this process ``sig`` during its k-th call (as Slurm or
    Ctrl-C would)."""
    calls = {"n": 0}

    def loss_fn(model, batch, num_items):
        calls["n"] += 1
        if calls["n"] == k:
            os.kill(os.getpid(), sig)
        return causal_lm_loss(model, batch, num_items)

    return loss_fn


@pytest.mark.parametrize(("accumulation", "sig"), [(1, signal.SIGTERM), (2, signal.SIGINT)])
def test_signal_then_resume_is_bit_identical(tmp_path, accumulation, sig):
    cfg = dict(max_steps=9, save_steps=4, gradient_accumulation_steps=accumulation, logging_steps=2)
    reference = make_trainer(tmp_path / "ref", **cfg)
    reference.fit()

    run = tmp_path / "run"
    first = make_trainer(run, **cfg)
    first.loss_fn = _stop_after(6 * accumulation, sig)  # the signal arrives during step 6
    result = first.fit()
    assert result.interrupted_by == sig and result.step == 6
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [4, 6]
    torch.manual_seed(1234)  # the resumed process starts with other global RNG state

    second = make_trainer(run, **cfg)  # fresh model, optimizer and data source
    result = second.fit(resume=True)
    assert result.step == 9 and result.interrupted_by is None
    for name, value in reference.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[name], value), name
    ref_rows, rows = read_metrics(tmp_path / "ref"), read_metrics(run)
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 9]
    for a, b in zip(ref_rows, rows, strict=True):  # the window 5-6 spans the interruption
        assert a["loss"] == b["loss"]


class _RolloutPerStep(RandomTokens):
    """An on-policy source that collects a rollout before every step, its metric the count."""

    def __init__(self, batch: int) -> None:
        super().__init__(batch)
        self.collected = 0

    def needs_rollout(self) -> bool:
        return True

    def collect_rollout(self) -> dict[str, float]:
        self.collected += 1
        return {"reward": float(self.collected)}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "collected": self.collected}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.collected = state["collected"]


def test_rollout_metrics_of_a_window_cut_by_a_stop_reach_the_next_row(tmp_path):
    """A stop between logging rows checkpoints the rollout metrics collected since the last
    row: the resumed run's rows are the uninterrupted run's."""
    cfg = dict(max_steps=4, logging_steps=2, save_steps=100)
    reference = make_trainer(tmp_path / "ref", source=_RolloutPerStep(4), **cfg)
    reference.fit()
    run = tmp_path / "run"
    first = make_trainer(run, source=_RolloutPerStep(4), **cfg)
    first.loss_fn = _stop_after(3, signal.SIGTERM)  # during step 3: rollout 3 is pending
    assert first.fit().step == 3
    second = make_trainer(run, source=_RolloutPerStep(4), **cfg)
    second.fit(resume=True)
    ref_rows, rows = read_metrics(tmp_path / "ref"), read_metrics(run)
    assert [(r["step"], r["reward"]) for r in ref_rows] == [(2, 1.5), (4, 3.5)]
    assert [(r["step"], r["reward"]) for r in rows] == [(2, 1.5), (4, 3.5)]


def test_a_fresh_fit_refuses_a_directory_holding_an_earlier_runs_checkpoints(tmp_path):
    make_trainer(tmp_path, max_steps=4, save_steps=2).fit()
    before = [s for s, _ in ckpt.list_checkpoints(tmp_path)]
    with pytest.raises(UserError, match="holds checkpoints of an earlier run"):
        make_trainer(tmp_path, max_steps=3, save_steps=1, save_total_limit=2).fit()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == before == [2, 4]


def test_crash_inside_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, max_steps=4, save_steps=2)
    real_save = torch.save

    def failing_save(obj, path, *args, **kwargs):
        if ckpt.list_checkpoints(tmp_path):  # the second checkpoint: the disk fills up
            raise OSError(28, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    with pytest.raises(DiskFullError, match=r"checkpoint .*step_4: it was not kept.*step_2"):
        trainer.fit()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    state = ckpt.load_trainer_state(tmp_path / "checkpoints" / "step_2")
    assert state["step"] == 2
    model = tiny_llama(seed=9)
    ckpt.load_model_weights(model, tmp_path / "checkpoints" / "step_2")


def test_non_finite_loss_stops_before_the_update(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=6, save_steps=2)
    calls = {"n": 0}
    snapshot = {}

    def loss_fn(model, batch, num_items):
        calls["n"] += 1
        loss, metrics = causal_lm_loss(model, batch, num_items)
        if calls["n"] == 3:
            snapshot.update(weights(model))
            return loss * float("nan"), metrics
        return loss, metrics

    trainer.loss_fn = loss_fn
    with pytest.raises(NonFiniteLossError, match=r"step 3;.*step_2") as info:
        trainer.fit()
    assert info.value.exit_code == 1
    for name, value in snapshot.items():  # the bad step changed nothing
        assert torch.equal(trainer.model.state_dict()[name], value)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2]


def test_keeps_only_the_newest_checkpoints(tmp_path):
    make_trainer(tmp_path, max_steps=7, save_steps=2, save_total_limit=2).fit()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [6, 7]


def test_pickle_payload_in_a_checkpoint_is_refused_unexecuted(tmp_path):
    make_trainer(tmp_path, max_steps=2, save_steps=2).fit()
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"step": Payload()}, tmp_path / "checkpoints" / "step_2" / ckpt.STATE_FILE)
    with pytest.raises(UserError, match="not a valid rlalign checkpoint"):
        make_trainer(tmp_path, max_steps=4).fit(resume=True)
    assert not marker.exists()


def test_resume_ignores_half_written_checkpoints(tmp_path):
    make_trainer(tmp_path, max_steps=2, save_steps=2).fit()
    stale = tmp_path / "checkpoints" / ".step_3.abc.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"torn")
    trainer = make_trainer(tmp_path, max_steps=3)
    assert trainer.fit(resume=True).step == 3
    assert not stale.exists()


def test_a_fresh_run_removes_what_a_killed_run_left_half_written_and_nothing_else(tmp_path):
    """The temporary copies of a run's files that a kill leaves (a first checkpoint, final/,
    a metrics rewrite, a rollout file) go at the start of the next run, with or without
    --resume; files of the same folders that rlalign did not name are left alone."""
    ours = [
        "checkpoints/.step_2.k3j_9xq0.tmp/model.safetensors",
        "checkpoints/.step_4.old/model.safetensors",
        ".final.0a1b2c3d.tmp/model.safetensors",
        ".metrics.jsonl.zz81kq2m.tmp",
        "rollouts/.iter_3.jsonl.p0o9i8u7.tmp",
    ]
    theirs = [
        "checkpoints/.notes.tmp",
        "checkpoints/.step_x.abcdefgh.tmp",
        ".final.backup/model.safetensors",
        ".mine.jsonl.abcdefgh.tmp",
        "rollouts/.iter_3.jsonl.keep",
        "notes/.step_2.abcdefgh.tmp",
    ]
    for name in ours + theirs:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"half")
    make_trainer(tmp_path, max_steps=2, save_steps=2).fit()
    for name in ours:  # the hidden file or directory itself is gone
        parts = name.split("/")
        hidden = next(i for i, part in enumerate(parts) if part.startswith("."))
        assert not tmp_path.joinpath(*parts[: hidden + 1]).exists(), name
    left = [name for name in theirs if (tmp_path / name).read_bytes() == b"half"]
    assert left == theirs


class OneBatch(RandomTokens):
    """The same batch again and again: a model must memorise it, in any precision."""

    def __next__(self):
        self.generator.manual_seed(0)
        return super().__next__()


def test_bf16_autocast_on_cpu_trains_fp32_master_weights(tmp_path):
    trainer = make_trainer(tmp_path, source=OneBatch(4), max_steps=8, bf16=True)
    seen = []

    def loss_fn(model, batch, num_items):
        seen.append((torch.is_autocast_enabled("cpu"), model.config._attn_implementation))
        return causal_lm_loss(model, batch, num_items)

    trainer.loss_fn = loss_fn
    trainer.fit()
    # autocast on, and eager attention while training (faster on CPU in bf16), restored after
    assert seen == [(True, "eager")] * 8
    assert trainer.model.config._attn_implementation == "sdpa"
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    rows = read_metrics(tmp_path)
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_eval_runs_in_eval_mode_without_grad_and_is_logged(tmp_path):
    seen = []

    def eval_fn(model):
        seen.append((model.training, torch.is_grad_enabled()))
        return {"eval_loss": 1.5}

    trainer = make_trainer(tmp_path, max_steps=5, eval_steps=2, logging_steps=5)
    trainer.eval_fn = eval_fn
    result = trainer.fit()
    assert seen == [(False, False)] * 3  # steps 2, 4 and the last
    assert result.eval_metrics == {"eval_loss": 1.5}
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [2, 4, 5]
    assert all("loss" in r and r["eval_loss"] == 1.5 for r in rows)
    assert trainer.model.training


def test_resume_with_more_steps_follows_the_new_schedule(tmp_path):
    make_trainer(tmp_path, max_steps=4, min_lr_ratio=0.1).fit()
    longer = make_trainer(tmp_path, max_steps=8, min_lr_ratio=0.1)
    assert longer.fit(resume=True).step == 8
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 9))
    # Update 5 of 8 (warmup 2): p = 3/6 -> halfway between peak and floor.
    assert rows[4]["learning_rate"] == pytest.approx(1e-2 * (0.1 + 0.9 * 0.5))
    assert longer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # the floor


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="torch.compile on a CPU builds its kernels with a C++ compiler",
)
def test_torch_compile_trains_like_eager_and_resumes_either_way(tmp_path):
    """``torch_compile=True`` takes the steps the eager loop takes (within fp32 rounding: the
    compiled kernels sum in another order), and its checkpoints are the eager run's format, so
    a compiled run resumes an eager one."""
    eager = make_trainer(tmp_path / "eager", max_steps=4, save_steps=2)
    eager.fit()
    compiled = make_trainer(tmp_path / "compiled", max_steps=4, save_steps=2, torch_compile=True)
    compiled.fit()
    assert compiled.training_forward is not compiled.model  # the loss ran through the compiled one
    for name, value in eager.model.state_dict().items():
        torch.testing.assert_close(compiled.model.state_dict()[name], value, rtol=1e-4, atol=1e-5)
    eager_rows = [r["loss"] for r in read_metrics(tmp_path / "eager")]
    compiled_rows = [r["loss"] for r in read_metrics(tmp_path / "compiled")]
    assert compiled_rows == pytest.approx(eager_rows, rel=1e-4)

    # Half an eager run, then the rest compiled: the same end within rounding.
    half = make_trainer(tmp_path / "switch", max_steps=2, save_steps=2)
    half.fit()
    rest = make_trainer(tmp_path / "switch", max_steps=4, save_steps=2, torch_compile=True)
    rest.fit(resume=True)
    assert rest.step == 4
    for name, value in eager.model.state_dict().items():
        torch.testing.assert_close(rest.model.state_dict()[name], value, rtol=1e-4, atol=1e-5)
