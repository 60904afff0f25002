"""``bf16=auto`` in a training stage: the precision a timing on this machine chose, with the
model's own shape, and the same weights as the fixed setting it chose."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from rlalign import precision
from rlalign.cli import main
from rlalign.lm.models import load_model
from rlalign.runtime import uses_bf16


@pytest.fixture
def timing(monkeypatch, tmp_path):
    """Fixes what the timing finds: ``timing(bf16_faster)``; returns the shapes timed."""
    monkeypatch.setenv("RLALIGN_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[tuple] = []

    def set_up(bf16_faster: bool) -> list[tuple]:
        def fake(hidden, inner, tokens, budget_s=0.3):
            calls.append((hidden, inner, tokens))
            return (0.1, 0.3) if bf16_faster else (0.1, 0.01)

        monkeypatch.setattr(precision, "_linear_tflops", fake)
        return calls

    return set_up


def sft(world_dir, base_model_dir, out, bf16: str) -> dict:
    args = ["sft", f"model={base_model_dir}", f"data={world_dir / 'sft.jsonl'}",
            f"output_dir={out}", "max_length=64", "per_device_train_batch_size=4",
            "max_steps=3", "eval_steps=100", "save_steps=100", "disable_tqdm=true",
            "device=cpu", "seed=3", f"bf16={bf16}"]  # fmt: skip
    assert main(args) == 0
    return load_file(out / "final" / "model.safetensors")


@pytest.mark.parametrize("bf16_faster", [False, True])
def test_auto_trains_as_the_setting_it_chose(
    bf16_faster, timing, world_dir, base_model_dir, tmp_path, capsys
):
    calls = timing(bf16_faster)
    auto = sft(world_dir, base_model_dir, tmp_path / "auto", "auto")
    chosen = "bf16 autocast" if bf16_faster else "fp32"
    assert f"bf16: auto -> {chosen}" in capsys.readouterr().out
    assert calls == [(64, 128, 2048)]  # the model's width, timed once, then remembered
    fixed = sft(world_dir, base_model_dir, tmp_path / "fixed", str(bf16_faster).lower())
    assert auto.keys() == fixed.keys()
    assert all((auto[k] == fixed[k]).all() for k in auto)


def test_the_shape_is_read_inside_wrappers(timing, base_model_dir):
    import torch

    calls = timing(True)
    model = load_model(base_model_dir)
    wrapper = torch.nn.ModuleDict({"policy": model, "value": torch.nn.Linear(64, 1)})
    assert uses_bf16("auto", torch.device("cpu"), wrapper) is True
    assert uses_bf16("auto", torch.device("cpu"), model) is True
    assert calls == [(64, 128, 2048)]
    assert uses_bf16(False, torch.device("cpu"), model) is False
    assert uses_bf16(None, torch.device("cpu"), model) is False
