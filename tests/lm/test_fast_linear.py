"""The rollout engine's packed inference weights (rlalign.lm.fast_linear).

References: the model's own forward (fp32: equal within fp32 rounding; bf16: bit-identical to
autocast over the fp32 master weights, which casts the same weights on every call), and a fresh
cast after an optimizer step (the inference copy follows the training weights).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rlalign.lm.fast_linear import inference_linears, onednn_available, onednn_bf16_available
from rlalign.lm.logprobs import sequence_logprobs
from rlalign.lm.sampling import sample

from .conftest import left_padded_batch, make_model

pytestmark = pytest.mark.skipif(not onednn_available(), reason="torch built without oneDNN")


def linear_layers(model: nn.Module) -> int:
    return sum(type(m) is nn.Linear or type(m).__name__ == "Conv1D" for m in model.modules())


def logits_of(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.float()


def test_fp32_matches_the_model_and_restores_it(arch):
    model = make_model(arch)
    ids, mask = left_padded_batch([7, 3, 5])
    expected = logits_of(model, ids, mask)
    with torch.no_grad(), inference_linears(model, fp32=True) as switched:
        assert switched == linear_layers(model) > 0
        got = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # restored: the layers run their own forward again and train as before
    assert not any("forward" in m.__dict__ for m in model.modules())
    model(input_ids=ids).logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_bf16_is_autocast_bit_for_bit_and_follows_an_optimizer_step():
    model = make_model("qwen2")
    ids, mask = left_padded_batch([7, 3, 5])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):  # before and after an update of the fp32 master weights
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            reference = model(input_ids=ids, attention_mask=mask).logits
            with inference_linears(model, dtype=torch.bfloat16) as switched:
                # an AVX2-only CPU cannot pack bf16 weights: the layers keep autocast's F.linear
                assert switched == (linear_layers(model) if onednn_bf16_available() else 0)
                packed = model(input_ids=ids, attention_mask=mask).logits
        assert torch.equal(packed, reference)
        loss = model(input_ids=ids, attention_mask=mask).logits.float().logsumexp(-1).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    # the fp32 master weights stay fp32: the bf16 copy lived only inside the block
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_nothing_switched_with_gradients_enabled():
    model = make_model("llama")
    with inference_linears(model, fp32=True) as switched:
        assert switched == 0
        assert not any("forward" in m.__dict__ for m in model.modules())


def test_autocast_sampler_logprobs_are_those_of_a_fresh_autocast_forward():
    """The behaviour log-probs RL stores come from the distribution actually sampled from: the
    autocast forward (which the packed bf16 weights reproduce exactly)."""
    model = make_model("llama")
    ids, mask = left_padded_batch([9, 3, 6, 1])
    out = sample(
        model,
        ids,
        mask,
        max_new_tokens=6,
        autocast_dtype=torch.bfloat16,
        return_raw_logprobs=True,
        eos_token_id=[],
        generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fresh = sequence_logprobs(model, out.sequences, out.attention_mask, start=out.prompt_length)
    # decode (one token at a time, cached keys) and a full forward round differently in bf16
    torch.testing.assert_close(out.raw_logprobs, fresh, rtol=0, atol=0.05)
    # at temperature 1 without filtering, the sampling distribution is the model's own
    torch.testing.assert_close(out.logprobs, out.raw_logprobs, rtol=0, atol=1e-6)


def test_bf16_cache_under_autocast_changes_no_bit(monkeypatch, arch):
    """The KV cache is stored in bf16 under CPU autocast with eager attention: autocast's
    matmul would cast it to bf16 at every step anyway, so nothing sampled may change."""
    import rlalign.lm.sampling as sampling
    from rlalign.lm.kv_cache import cache_dtype

    model = make_model(arch)
    ids, mask = left_padded_batch([9, 3, 6, 1])
    uniforms = torch.rand(4 * 2, 8, generator=torch.Generator().manual_seed(1))

    def run():
        return sample(
            model, ids, mask, max_new_tokens=8, num_samples=2, top_k=20, eos_token_id=[],
            autocast_dtype=torch.bfloat16, uniforms=uniforms, return_raw_logprobs=True,
        )  # fmt: skip

    assert cache_dtype(model, torch.bfloat16, "eager") == torch.bfloat16
    stored_bf16 = run()
    monkeypatch.setattr(sampling, "cache_dtype", lambda *args: None)
    as_computed = run()
    assert torch.equal(stored_bf16.sequences, as_computed.sequences)
    assert torch.equal(stored_bf16.logprobs, as_computed.logprobs)
    assert torch.equal(stored_bf16.raw_logprobs, as_computed.raw_logprobs)


def test_training_linears_give_the_same_loss_and_gradients(arch):
    from rlalign.lm.fast_linear import training_linears

    model = make_model(arch)  # eval mode: no dropout, so both passes compute the same thing
    ids, mask = left_padded_batch([9, 3, 6, 1])

    def loss_and_grads():
        model.zero_grad()
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss, grads = loss_and_grads()
    with training_linears(model) as switched:
        assert switched == linear_layers(model) > 0
        fast_loss, fast_grads = loss_and_grads()
    assert not any("forward" in m.__dict__ for m in model.modules())
    torch.testing.assert_close(fast_loss, loss, rtol=0, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_the_traceable_training_linears_are_the_same_kernels_bit_for_bit(arch):
    """``traceable=True`` (a compiled forward's path, the registered operator) gives the eager
    path's loss and gradients to the bit, and the operator passes torch.library's own checks
    (its shape function, autograd registration and schema)."""
    from rlalign.lm.fast_linear import onednn_linear, training_linears

    model = make_model(arch)
    ids, mask = left_padded_batch([9, 3, 6, 1])

    def loss_and_grads(traceable: bool):
        model.zero_grad()
        with training_linears(model, traceable=traceable):
            logits = model(input_ids=ids, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss, grads = loss_and_grads(traceable=False)
    traced_loss, traced_grads = loss_and_grads(traceable=True)
    assert torch.equal(traced_loss, loss)
    for name, grad in grads.items():
        assert torch.equal(traced_grads[name], grad), name
    x = torch.randn(2, 5, 8, requires_grad=True)
    weight = torch.randn(6, 8, requires_grad=True)
    bias = torch.randn(6, requires_grad=True)
    torch.library.opcheck(onednn_linear, (x, weight, bias))
    torch.library.opcheck(onednn_linear, (x, weight, None))
