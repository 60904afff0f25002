"""``num_threads: auto`` (rlalign.precision.choose_threads): the fastest thread count for a
model's width, measured once per machine, and the demos' setting that applies it."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rlalign import precision
from rlalign.config import ConfigError
from rlalign.demo import DemoConfig, demo_threads
from rlalign.lm.models import preset_shape
from rlalign.precision import MARGIN, apply_num_threads, choose_threads, thread_counts


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RLALIGN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / precision.THREADS_CACHE_FILE


def timed(monkeypatch, rates: dict[int, float]) -> list[int]:
    """Replace the timing by ``rates[threads]``, read from the threads set when it runs."""
    calls: list[int] = []

    def fake(hidden, inner, tokens, budget_s=0.3):
        calls.append(torch.get_num_threads())
        return rates[torch.get_num_threads()]

    monkeypatch.setattr(precision, "_train_linear_tflops", fake)
    return calls


def test_thread_counts_by_hand():
    assert thread_counts(1) == [1]
    assert thread_counts(2) == [1, 2]
    assert thread_counts(6) == [1, 2, 4, 6]
    assert thread_counts(16) == [1, 2, 4, 8, 16]


@given(st.integers(1, 300))
def test_thread_counts_are_powers_of_two_and_the_cores(cores):
    counts = thread_counts(cores)
    assert counts[0] == 1 and counts[-1] == cores and counts == sorted(set(counts))
    assert all(n & (n - 1) == 0 for n in counts[:-1]) and all(n <= cores for n in counts)


@pytest.mark.parametrize(
    ("rates", "chosen"),
    [
        ({1: 0.035, 2: 0.052}, 2),  # AVX2 EPYC, the tiny preset: 2 threads 1.5x faster
        ({1: 0.035, 2: 0.035 * MARGIN}, 1),  # within the margin: fewer threads
        ({1: 0.035, 2: 0.026}, 1),  # the other core busy: 1 thread
        ({1: 0.03, 2: 0.05, 4: 0.08, 8: 0.085}, 4),  # 8 only 6% above 4
        ({1: 0.03, 2: 0.05, 4: 0.04, 8: 0.09}, 8),  # judged against the best so far
    ],
)
def test_the_fastest_count_is_chosen(cache, monkeypatch, rates, chosen):
    calls = timed(monkeypatch, rates)
    before = torch.get_num_threads()
    choice = choose_threads(128, 384, cores=max(rates))
    assert choice.threads == chosen and choice.source == "measured"
    assert calls == sorted(rates) and torch.get_num_threads() == before  # restored
    assert choice.tflops == {str(n): round(r, 5) for n, r in rates.items()}
    assert f"num_threads: auto -> {chosen} " in choice.describe()


def test_a_choice_is_remembered_per_machine_cores_and_shape(cache, monkeypatch):
    calls = timed(monkeypatch, {1: 0.03, 2: 0.05})
    first = choose_threads(128, 384, tokens=256, cores=2)
    again = choose_threads(128, 384, tokens=256, cores=2)
    assert len(calls) == 2 and again.source == "remembered"
    assert (again.threads, again.tflops) == (first.threads, first.tflops)
    (key,) = json.loads(cache.read_text())
    assert "cores=2" in key and "256x128x384" in key
    choose_threads(256, 768, tokens=256, cores=2)  # another shape: timed again
    assert len(calls) == 4 and len(json.loads(cache.read_text())) == 2


def test_one_core_is_not_timed(cache, monkeypatch):
    calls = timed(monkeypatch, {})
    choice = choose_threads(128, 384, cores=1)
    assert (choice.threads, choice.source, calls) == (1, "one core", [])
    assert not cache.exists()


def test_apply_num_threads(cache, monkeypatch):
    timed(monkeypatch, {1: 0.03, 2: 0.05})
    monkeypatch.setattr(precision, "available_cores", lambda: 2)
    before = torch.get_num_threads()
    try:
        assert apply_num_threads(3, 128, 384) is None and torch.get_num_threads() == 3
        assert apply_num_threads(None, 128, 384) is None and torch.get_num_threads() == 3
        choice = apply_num_threads("auto", 128, 384)
        assert choice is not None and choice.threads == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_real_timing_gives_rates(cache):
    choice = choose_threads(32, 64, tokens=64, cores=2)
    assert choice.threads in (1, 2) and all(r > 0 for r in choice.tflops.values())


def test_the_demo_setting_takes_a_count_auto_or_none():
    # the fastest count for the model's width on this machine: the card is fixed by the seed,
    # the CPU kind and that count
    assert DemoConfig().num_threads == "auto"
    assert DemoConfig(num_threads=2).num_threads == 2
    assert DemoConfig(num_threads=None).num_threads is None
    for bad in (0, "two"):
        with pytest.raises((ConfigError, ValueError)):
            DemoConfig(num_threads=bad)


def test_demo_threads_is_the_count_the_demo_sets(cache, monkeypatch):
    """What ``rlalign.goals`` plans its runs with is what the demo's start-up applies."""
    timed(monkeypatch, {1: 0.03, 2: 0.05})
    monkeypatch.setattr(precision, "available_cores", lambda: 2)
    before = torch.get_num_threads()
    try:
        assert demo_threads(DemoConfig(num_threads=3)) == 3
        assert demo_threads(DemoConfig(num_threads=None)) is None
        cfg = DemoConfig()
        planned = demo_threads(cfg)
        tokens = cfg.pretrain_batch_size * cfg.block_size
        apply_num_threads(cfg.num_threads, *preset_shape(cfg.model), tokens=tokens)
        assert torch.get_num_threads() == planned == 2
        assert len(json.loads(cache.read_text())) == 1  # one timing, shared
    finally:
        torch.set_num_threads(before)
