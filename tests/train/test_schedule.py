"""Warmup + cosine schedule against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rlalign.train.schedule import WarmupCosine, warmup_cosine_schedule


def test_factors_by_hand():
    f = WarmupCosine(warmup_steps=4, max_steps=12, min_lr_ratio=0.1)
    # Warmup: updates 1..4 run at 1/4, 2/4, 3/4, 4/4 of the peak.
    assert [f(k) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]
    # Decay over updates 5..12 (8 of them): p = 1/8 ... 8/8.
    assert f(4) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 8)))
    assert f(7) == pytest.approx(0.1 + 0.9 * 0.5)  # p = 1/2: halfway between peak and floor
    assert f(11) == pytest.approx(0.1)  # the last update runs at the floor
    assert f(50) == pytest.approx(0.1)  # past the end: stays at the floor


def test_no_warmup_and_zero_floor():
    f = WarmupCosine(warmup_steps=0, max_steps=4, min_lr_ratio=0.0)
    expected = [0.5 * (1 + math.cos(math.pi * s / 4)) for s in (1, 2, 3, 4)]
    assert [f(k) for k in range(4)] == pytest.approx(expected)


def test_scheduler_drives_the_optimizer_and_round_trips():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = warmup_cosine_schedule(opt, warmup_steps=2, max_steps=6, min_lr_ratio=0.0)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:2] == [1.0, 2.0]
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    # The state is plain numbers (loadable with weights_only=True) and restores the factor.
    state = sched.state_dict()
    assert state["lr_lambdas"][0] == {"warmup_steps": 2, "max_steps": 6, "min_lr_ratio": 0.0}
