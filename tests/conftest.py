"""One intra-op thread for every test: the models are tiny, and when other jobs share the
machine, OpenMP threads that spin-wait for a busy core make each step 10-100x slower."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for the subprocesses the tests start
    yield
    torch.set_num_threads(before)
