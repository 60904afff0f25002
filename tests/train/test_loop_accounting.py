"""What the loop logs and how it normalises, against values recorded or computed here.

A linear model with a squared loss keeps every number checkable: a step's loss and metrics are
the sums over its micro-batches, a logged row their mean over the steps since the last row,
``items_per_s`` the items of those steps over the time they took (a fake clock), and
``grad_norm`` the norm of the whole step's gradient before clipping.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rlalign.errors import NonFiniteLossError
from rlalign.metrics import read_metrics
from rlalign.train import loop
from rlalign.train.loop import Trainer

from .helpers import loop_config


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.w).sum(-1)


class Batches:
    """Micro-batches of 1, 3, 2, 4, ... items (rows x, targets y), drawn from a seeded generator."""

    SIZES = (1, 3, 2, 4)

    def __init__(self) -> None:
        self.g = torch.Generator().manual_seed(5)
        self.n = 0

    def __iter__(self):
        return self

    def __next__(self):
        size = self.SIZES[self.n % len(self.SIZES)]
        self.n += 1
        x = torch.randn(size, 2, generator=self.g, dtype=torch.float64)
        return {"x": x, "y": torch.randn(size, generator=self.g, dtype=torch.float64)}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def squared_loss(model, batch, num_items):
    sq = (model(batch["x"]) - batch["y"]) ** 2
    return sq.sum() / num_items, {"items": torch.tensor(float(len(sq))), "sq": sq.sum().detach()}


def count(batch):
    return len(batch["y"])


def trainer(tmp_path, loss_fn=squared_loss, **cfg):
    cfg = loop_config(tmp_path, **cfg)
    return Trainer(Linear(), loss_fn, Batches(), cfg, count_fn=count, item_name="rows")


def test_logged_rows_are_window_means_of_step_sums(tmp_path, monkeypatch):
    calls = []

    def recording(model, batch, num_items):
        loss, metrics = squared_loss(model, batch, num_items)
        calls.append((loss.item(), metrics["items"].item(), metrics["sq"].item(), num_items))
        return loss, metrics

    clock = iter(0.5 * k for k in range(1, 100))
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    t = trainer(tmp_path, loss_fn=recording, max_steps=5, gradient_accumulation_steps=2,
                logging_steps=2)  # fmt: skip
    t.fit()
    # micro-batches of 1, 3 | 2, 4 | 1, 3 | 2, 4 | 1, 3 items: steps of 4, 6, 4, 6, 4 items
    assert [c[1] for c in calls] == [1, 3, 2, 4, 1, 3, 2, 4, 1, 3]
    assert [float(c[3]) for c in calls] == [4, 4, 6, 6, 4, 4, 6, 6, 4, 4]  # the step's count
    # in float32: a float32 model's loss stays float32 (a float64 count would promote it)
    assert {c[3].dtype for c in calls} == {torch.float32}
    steps = [calls[i : i + 2] for i in range(0, 10, 2)]
    loss = [sum(c[0] for c in s) for s in steps]
    sq = [sum(c[2] for c in s) for s in steps]
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [2, 4, 5]  # the last row's window is one step
    for row, window in zip(rows, ([0, 1], [2, 3], [4]), strict=True):
        n = len(window)
        assert row["loss"] == pytest.approx(sum(loss[i] for i in window) / n, rel=1e-6)
        items = sum(4.0 if i % 2 == 0 else 6.0 for i in window)
        assert row["items"] == pytest.approx(items / n)
        assert row["sq"] == pytest.approx(sum(sq[i] for i in window) / n, rel=1e-6)
        # the fake clock advanced 0.5 s between the window's start and its row
        assert row["rows_per_s"] == pytest.approx(items / 0.5)


def test_grad_norm_is_the_whole_steps_norm_before_clipping(tmp_path):
    t = trainer(tmp_path, max_steps=1, gradient_accumulation_steps=2, max_grad_norm=0.01)
    reference = copy.deepcopy(t.module)
    batches = Batches()
    micro = [next(batches), next(batches)]
    total = sum(squared_loss(reference, b, torch.tensor(4.0))[0] for b in micro)
    (grad,) = torch.autograd.grad(total, [reference.w])
    t.fit()
    (row,) = read_metrics(tmp_path)
    assert row["grad_norm"] == pytest.approx(float(grad.norm()), rel=1e-6)
    assert float(grad.norm()) > 0.01  # so the step was clipped, and the norm logged is before


def test_max_grad_norm_zero_means_no_clipping(tmp_path):
    """0 disables clipping; taken as a norm, it would zero the gradient and the update."""
    t = trainer(tmp_path, max_steps=1, max_grad_norm=0.0, warmup_steps=0, min_lr_ratio=1.0)
    reference = copy.deepcopy(t.module)
    batch = next(Batches())
    loss, _ = squared_loss(reference, batch, torch.tensor(1.0))
    loss.backward()
    cfg = t.cfg
    torch.optim.AdamW(
        reference.parameters(), lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay,
    ).step()  # fmt: skip
    t.fit()
    torch.testing.assert_close(t.module.w.detach(), reference.w.detach(), rtol=1e-7, atol=1e-9)


def test_a_non_finite_gradient_with_a_finite_loss_stops_the_step(tmp_path):
    def nan_gradient(model, batch, num_items):
        loss, metrics = squared_loss(model, batch, num_items)
        # sqrt at 0: the value is 0, its gradient is inf (and inf x 0 = NaN through the sum)
        return loss + torch.sqrt((model.w - model.w.detach()).abs()).sum(), metrics

    t = trainer(tmp_path, loss_fn=nan_gradient, max_steps=2)
    before = t.module.w.detach().clone()
    with pytest.raises(NonFiniteLossError) as info:
        t.fit()
    message = str(info.value)
    assert "is not finite at step 1;" in message and "last good checkpoint: none" in message
    assert torch.equal(t.module.w.detach(), before)


def test_a_step_of_one_item_divides_by_one(tmp_path):
    seen = []

    def recording(model, batch, num_items):
        seen.append(float(num_items))
        return squared_loss(model, batch, num_items)

    trainer(tmp_path, loss_fn=recording, max_steps=1).fit()  # the first micro-batch: 1 item
    assert seen == [1.0]
