"""The dtype contracts of the RL core's shared argument helpers (rlalign.rl._checks)."""

from __future__ import annotations

import pytest
import torch

from rlalign.rl._checks import check_leading, check_mask


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_a_mask_takes_a_float_refs_dtype(dtype):
    ref = torch.zeros(2, 3, dtype=dtype)
    assert check_mask(None, "ref", ref).dtype == dtype
    got = check_mask(torch.tensor([[True, False, True], [False, False, True]]), "ref", ref)
    assert got.dtype == dtype and got.tolist() == [[1, 0, 1], [0, 0, 1]]


def test_an_integer_ref_gets_a_float32_mask():
    ref = torch.zeros(2, 3, dtype=torch.long)
    assert check_mask(None, "ref", ref).dtype == torch.float32
    assert check_mask(torch.ones(2, 3, dtype=torch.long), "ref", ref).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_per_row_value_takes_the_refs_dtype(dtype):
    ref = torch.zeros(2, 5, dtype=dtype)
    zeros = check_leading("v", None, "ref", ref)
    assert zeros.dtype == dtype and zeros.tolist() == [0.0, 0.0]
    third = check_leading("v", 1 / 3, "ref", ref)
    assert third.dtype == dtype and third.tolist() == [torch.tensor(1 / 3, dtype=dtype).item()] * 2
    given = check_leading("v", torch.tensor([1.0, 2.0], dtype=torch.float16), "ref", ref)
    assert given.dtype == dtype and given.tolist() == [1.0, 2.0]


def test_a_per_row_value_is_made_on_the_refs_device():
    # the meta device stands in for an accelerator: a value made on the default device differs
    ref = torch.zeros(2, 5, device="meta")
    assert check_leading("v", None, "ref", ref).device == ref.device
    assert check_leading("v", 0.5, "ref", ref).device == ref.device
