"""Weight averaging (``rlalign average``, :mod:`rlalign.train.average`): the mean against an
element-by-element loop, what it keeps exact, the saved model, and careless input."""

from __future__ import annotations

import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

import rlalign
from rlalign.cli import main
from rlalign.errors import UserError
from rlalign.lm.models import load_model
from rlalign.train.average import average_models, average_weights


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 4), rows=st.integers(1, 3), cols=st.integers(1, 4), seed=st.integers(0, 99))
def test_the_average_is_the_mean_of_each_element(k, rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    sds = [
        {
            "w": torch.randn(rows, cols, generator=g),
            "b": torch.randn(cols, generator=g) * 1e3,
            "steps": torch.tensor([7]),
        }
        for _ in range(k)
    ]
    avg = average_weights(sds)
    for name in ("w", "b"):
        flat = [sd[name].reshape(-1).tolist() for sd in sds]
        expect = [sum(col) / k for col in zip(*flat, strict=True)]  # a plain loop, in Python floats
        got = avg[name].reshape(-1).tolist()
        assert got == pytest.approx(expect, rel=1e-6, abs=1e-6)
        assert avg[name].dtype == torch.float32
    assert torch.equal(avg["steps"], torch.tensor([7]))


def test_float64_tied_weights_average_to_themselves_and_the_inputs_stay_as_they_were():
    shared = torch.full((2, 3), 3.0, dtype=torch.float64)
    a = {"embed": shared, "head": shared}  # tied: one tensor under two names
    b = {"embed": shared.clone(), "head": shared.clone()}
    avg = average_weights([a, b])
    assert torch.equal(avg["embed"], shared) and torch.equal(avg["head"], shared)
    assert torch.equal(shared, torch.full((2, 3), 3.0, dtype=torch.float64))


def test_copies_average_to_themselves_bit_for_bit_and_order_does_not_matter():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(5, 7, generator=g).to(torch.bfloat16), "v": torch.randn(3, generator=g)}
    b = {"w": torch.randn(5, 7, generator=g).to(torch.bfloat16), "v": torch.randn(3, generator=g)}
    for name, t in average_weights([a, a, a]).items():
        assert torch.equal(t, a[name]) and t.dtype == a[name].dtype
    ab, ba = average_weights([a, b]), average_weights([b, a])
    assert all(torch.equal(ab[n], ba[n]) for n in a)


@pytest.mark.parametrize(
    ("other", "message"),
    [
        ({"w": torch.zeros(2, 2)}, "other tensors"),
        ({"w": torch.zeros(2, 3), "n": torch.tensor([1])}, "model 2 holds"),
        ({"w": torch.zeros(2, 2), "n": torch.tensor([2])}, "non-floating tensor differs"),
    ],
)
def test_models_that_do_not_match_are_refused(other, message):
    first = {"w": torch.zeros(2, 2), "n": torch.tensor([1])}
    with pytest.raises(ValueError, match=message):
        average_weights([first, other])
    with pytest.raises(ValueError, match="no models"):
        average_weights([])


def test_the_averaged_model_is_the_midpoint_and_loads(base_model_dir, tmp_path, capsys):
    """Two models a delta apart average to the one half-way, saved as a loadable directory."""
    moved = tmp_path / "moved"
    shutil.copytree(base_model_dir, moved)
    model = load_model(base_model_dir)
    delta = {n: torch.randn_like(p) * 0.01 for n, p in model.named_parameters()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(delta[n])
    model.save_pretrained(moved, safe_serialization=True)

    out = tmp_path / "avg"
    assert rlalign.average_models is average_models  # the Python API's name for the command
    assert main(["average", str(base_model_dir), str(moved), "--out", str(out)]) == 0
    assert "average of 2 models" in capsys.readouterr().out
    base, avg = load_model(base_model_dir), load_model(out)
    avg_params = dict(avg.named_parameters())
    for n, p in base.named_parameters():
        torch.testing.assert_close(avg_params[n], p + delta[n] / 2, rtol=0, atol=1e-6)
    assert (out / "tokenizer.json").is_file() and str(moved) in (out / "README.md").read_text()
    ids = torch.tensor([[1, 2, 3]])
    assert avg.generate(ids, max_new_tokens=2, do_sample=False).shape == (1, 5)


def test_careless_input_is_one_line(base_model_dir, world_dir, tmp_path, capsys):
    out = tmp_path / "avg"
    assert main(["average", str(base_model_dir), "--out", str(out)]) == 2
    assert "at least two models" in capsys.readouterr().err
    assert main(["average", str(base_model_dir), str(world_dir), "--out", str(out)]) == 2
    assert "not a model" in capsys.readouterr().err
    assert main(["average", str(base_model_dir), str(base_model_dir), "--out",
                 str(base_model_dir)]) == 2  # fmt: skip
    assert "one of the models" in capsys.readouterr().err
    assert not out.exists()

    # an existing directory that is not an earlier average (a run, a folder of runs) is kept
    run = tmp_path / "run"
    (run / "checkpoints" / "step_2").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")
    pair = [str(base_model_dir), str(base_model_dir)]
    assert main(["average", *pair, "--out", str(run)]) == 2
    assert "is not a model directory" in capsys.readouterr().err
    assert (run / "checkpoints" / "step_2").is_dir() and (run / "metrics.jsonl").is_file()
    # an earlier average, or a model (a run's final/, as the demo's RL averages into), is replaced
    assert main(["average", *pair, "--out", str(out)]) == 0
    assert main(["average", *pair, "--out", str(out)]) == 0
    model_dir = tmp_path / "final"
    shutil.copytree(base_model_dir, model_dir)
    assert main(["average", *pair, "--out", str(model_dir)]) == 0
    assert (model_dir / "README.md").read_text().startswith("# The weight average")
    capsys.readouterr()

    wider = tmp_path / "wider"
    model = load_model(base_model_dir)
    config = model.config
    config.intermediate_size *= 2
    AutoModelForCausalLM.from_config(config).save_pretrained(wider, safe_serialization=True)
    for path in base_model_dir.iterdir():  # the same tokenizer, another shape
        if path.name not in ("config.json", "model.safetensors"):
            shutil.copy(path, wider / path.name)
    with pytest.raises(UserError, match="another architecture"):
        average_models([base_model_dir, wider], out)
