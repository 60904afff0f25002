"""Scoring completions with the prompt encoded once per distinct prompt (completion_logits).

Reference: the same function with sharing off (one full forward pass of every row, which
sequence_logprobs' own tests check against unpadded forwards). Logits, log-probs, gradients
and a value head's values must agree within fp32 rounding.
"""

from __future__ import annotations

import torch

from rlalign.lm.logprobs import completion_forward, completion_logits, sequence_logprobs
from rlalign.lm.sampling import sample
from rlalign.lm.value_head import PolicyWithValueHead

from .conftest import left_padded_batch, make_model


def rollout(model, lengths=(9, 3, 6, 1), n=3, new=7):
    ids, mask = left_padded_batch(list(lengths))
    out = sample(
        model, ids, mask, max_new_tokens=new, num_samples=n, eos_token_id=[],
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    return out.sequences, out.attention_mask, out.prompt_length


def test_shared_prompt_logits_and_gradients_equal_a_full_forward(arch):
    model = make_model(arch)
    seqs, mask, start = rollout(model)
    # one completion whose prompt appears once: distinct and shared rows in one batch
    seqs, mask = seqs[:-2], mask[:-2]
    results = {}
    for share in (False, True):
        model.zero_grad()
        out = completion_logits(model, seqs, mask, start, share_prompts=share)
        loss = (out.logits.float().log_softmax(-1).amax(-1) * mask[:, start:]).sum()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[share] = (out.logits.detach(), grads)
    (full, full_grads), (shared, shared_grads) = results[False], results[True]
    assert (
        shared.shape
        == full.shape
        == (seqs.shape[0], seqs.shape[1] - start, model.config.vocab_size)
    )
    valid = mask[:, start:].bool()
    torch.testing.assert_close(shared[valid], full[valid], rtol=0, atol=1e-5)
    assert shared_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_sequence_logprobs_and_values_with_shared_prompts():
    model = make_model("llama")
    seqs, mask, start = rollout(model)
    valid = mask[:, start:].bool()
    policy = PolicyWithValueHead(model)
    # not the zero start: values must differ
    torch.nn.init.normal_(policy.value_head.weight, generator=torch.Generator().manual_seed(0))
    rows = []
    with torch.no_grad():
        shared_lp = sequence_logprobs(model, seqs, mask, start=start)
        shared = completion_forward(policy, seqs, mask, start, with_values=True)
        for s, m in zip(seqs, mask, strict=True):  # one row at a time: nothing to share
            rows.append(completion_forward(policy, s[None], m[None], start, with_values=True))
    alone = {k: torch.cat([r[k] for r in rows]) for k in ("logp", "values")}
    torch.testing.assert_close(shared_lp[valid], alone["logp"][valid], rtol=0, atol=1e-5)
    torch.testing.assert_close(shared["logp"][valid], alone["logp"][valid], rtol=0, atol=1e-5)
    torch.testing.assert_close(shared["values"][valid], alone["values"][valid], rtol=0, atol=1e-5)


def test_the_prompt_runs_once_per_distinct_prompt():
    model = make_model("qwen2")
    seqs, mask, start = rollout(model, n=4)
    widths = []
    handle = model.register_forward_pre_hook(
        lambda mod, args, kwargs: widths.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True,
    )
    with torch.no_grad():
        completion_logits(model, seqs, mask, start)
    handle.remove()
    # 4 distinct prompts encoded once (all but their last token), then every row's rest
    assert widths == [(4, start - 1), (16, seqs.shape[1] - start + 1)]
