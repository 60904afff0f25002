"""``bf16: auto`` (rlalign.precision): the faster precision, measured once per machine."""

from __future__ import annotations

import json

import pytest
import torch

from rlalign import demo, precision
from rlalign.precision import MARGIN, PrecisionChoice, choose_bf16


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RLALIGN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / precision.CACHE_FILE


def timed(monkeypatch, fp32: float, bf16: float) -> list[tuple]:
    calls: list[tuple] = []

    def fake(hidden, inner, tokens, budget_s=0.3):
        calls.append((hidden, inner, tokens))
        return fp32, bf16

    monkeypatch.setattr(precision, "_linear_tflops", fake)
    return calls


@pytest.mark.parametrize(
    ("fp32", "bf16", "chosen"),
    [
        (0.19, 0.42, True),  # AVX-512 BF16: bf16 twice as fast
        (0.035, 0.004, False),  # AVX2 only: bf16 emulated, ten times slower
        (0.2, 0.2 * MARGIN, False),  # within the margin: fp32, which is exact
        (0.2, 0.2 * MARGIN * 1.01, True),
    ],
)
def test_the_faster_precision_is_chosen(cache, monkeypatch, fp32, bf16, chosen):
    timed(monkeypatch, fp32, bf16)
    choice = choose_bf16(128, 384)
    assert choice.bf16 is chosen
    assert (choice.fp32_tflops, choice.source) == (round(fp32, 5), "measured")
    assert ("bf16 autocast" if chosen else "fp32") in choice.describe()


def test_a_choice_is_remembered_per_machine_threads_and_shape(cache, monkeypatch):
    calls = timed(monkeypatch, 0.1, 0.3)
    first = choose_bf16(128, 384, tokens=256)
    again = choose_bf16(128, 384, tokens=256)
    assert len(calls) == 1 and again.source == "remembered"
    assert (again.bf16, again.fp32_tflops, again.bf16_tflops) == (
        first.bf16,
        first.fp32_tflops,
        first.bf16_tflops,
    )
    (key,) = json.loads(cache.read_text())
    assert "threads=" in key and "256x128x384" in key
    choose_bf16(256, 768, tokens=256)  # another shape: timed again
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        choose_bf16(128, 384, tokens=256)  # other threads: timed again
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 3 and len(json.loads(cache.read_text())) == 3


def test_an_unreadable_cache_is_measured_again(cache, monkeypatch):
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    calls = timed(monkeypatch, 0.3, 0.1)
    assert choose_bf16(128, 384).source == "measured" and len(calls) == 1
    assert len(json.loads(cache.read_text())) == 1


def test_the_real_timing_gives_rates(cache):
    choice = choose_bf16(32, 64, tokens=64)
    assert choice.fp32_tflops > 0 and choice.bf16_tflops > 0


def test_the_demo_decides_once_with_the_model_shape(cache, monkeypatch, capsys):
    calls = timed(monkeypatch, 0.035, 0.004)
    cfg = demo.DemoConfig(pretrain_batch_size=4, block_size=32)
    choice = demo._precision(cfg)
    assert calls == [(128, 384, 128)]  # the tiny preset, a pre-training batch of tokens
    assert choice.bf16 is False and "bf16: auto -> fp32" in capsys.readouterr().out
    given = demo._precision(demo.DemoConfig(bf16=True))
    assert given == PrecisionChoice(True, 0.0, 0.0, "given") and len(calls) == 1


@pytest.mark.parametrize("supported", [True, False])
def test_the_demo_decides_for_the_gpu_its_stages_train_on(cache, monkeypatch, supported):
    """On a machine with a GPU the stages train there (``device: auto``): the demo's ``auto``
    is the GPU's bf16 support, whatever a timing of the host's CPU would say."""
    calls = timed(monkeypatch, 0.2, 0.01)  # the host's CPU: fp32 far ahead
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    choice = demo._precision(demo.DemoConfig())
    assert choice == PrecisionChoice(supported, 0.0, 0.0, "cuda") and calls == []
