"""token_logprobs keeps the caller's precision: fp64 stays fp64, bf16/fp16 are computed in fp32."""

from __future__ import annotations

import pytest
import torch

from rlalign.lm.logprobs import token_logprobs


def _case(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(5, 4, 13, generator=g, dtype=torch.float64) * 4).to(dtype)
    targets = torch.randint(0, 13, (5, 4), generator=g)
    return logits, targets


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_float64_logits_give_float64_logprobs_and_entropy(temperature):
    logits, targets = _case()
    logp, ent = token_logprobs(logits, targets, temperature, chunk_rows=2, with_entropy=True)
    assert logp.dtype == ent.dtype == torch.float64
    dist = torch.distributions.Categorical(logits=logits / temperature)
    torch.testing.assert_close(logp, dist.log_prob(targets), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ent, dist.entropy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_lower_precisions_are_computed_in_float32(dtype):
    logits, targets = _case(dtype, seed=1)
    logp, ent = token_logprobs(logits, targets, chunk_rows=3, with_entropy=True)
    assert logp.dtype == ent.dtype == torch.float32
    dist = torch.distributions.Categorical(logits=logits.double())  # the same rounded logits
    torch.testing.assert_close(logp.double(), dist.log_prob(targets), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent.double(), dist.entropy(), rtol=1e-5, atol=1e-5)
