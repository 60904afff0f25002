"""The rollout sampler against independent references.

References: a fresh full forward pass of each sequence *without padding* (so padding, positions
and the KV cache are all under test), a brute-force top-k/top-p filter written with Python
sorting, HF ``generate`` for greedy decoding.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlalign.errors import UserError
from rlalign.lm.generate import generate_text
from rlalign.lm.logprobs import sequence_logprobs
from rlalign.lm.sampling import sample, sample_from_logits

from .conftest import hf_greedy_completions, left_padded_batch, make_model

LENGTHS = [9, 3, 6, 1, 9, 4]


def reference_logprobs(logits: torch.Tensor, temperature: float, top_k, top_p) -> torch.Tensor:
    """Log-probs of the sampling distribution for one row, by brute force (-inf = excluded)."""
    x = [v / temperature for v in logits.double().tolist()]
    order = sorted(range(len(x)), key=lambda i: -x[i])
    kept = order[:top_k] if top_k else order
    z = sum(math.exp(x[i]) for i in kept)
    if top_p is not None:
        nucleus, mass = [], 0.0
        for i in kept:
            if mass >= top_p:
                break
            nucleus.append(i)
            mass += math.exp(x[i]) / z
        kept = nucleus
        z = sum(math.exp(x[i]) for i in kept)
    out = torch.full((len(x),), float("-inf"), dtype=torch.float64)
    for i in kept:
        out[i] = x[i] - math.log(z)
    return out


def unpadded_forward_logits(model, out, row: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of one row's real tokens (prompt without padding + valid completion), no mask."""
    tokens = out.sequences[row][out.attention_mask[row].bool()].unsqueeze(0)
    with torch.no_grad():
        logits = model(input_ids=tokens).logits[0].double()
    return tokens[0], logits


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(1.0, None, None), (0.7, 20, 0.9), (1.3, None, 0.8)]
)
def test_logprobs_equal_fresh_forward(arch, temperature, top_k, top_p):
    model = make_model(arch)
    ids, mask = left_padded_batch(LENGTHS)
    g = torch.Generator().manual_seed(1)
    out = sample(
        model,
        ids,
        mask,
        max_new_tokens=10,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        generator=g,
        eos_token_id=[],  # all rows run 10 steps: every position is compared
        return_raw_logprobs=True,
    )
    assert out.completion_ids.shape == (len(LENGTHS), 10)
    assert out.completion_mask.all()
    for row, n_prompt in enumerate(LENGTHS):
        tokens, logits = unpadded_forward_logits(model, out, row)
        for t in range(10):
            pos = n_prompt + t - 1  # the position whose logits predict completion token t
            token = int(tokens[n_prompt + t])
            raw = torch.log_softmax(logits[pos], dim=-1)[token]
            assert out.raw_logprobs[row, t].item() == pytest.approx(raw.item(), abs=2e-5)
            ref = reference_logprobs(logits[pos].float(), temperature, top_k, top_p)
            assert ref[token] > float("-inf"), "sampled a token outside the allowed support"
            assert out.logprobs[row, t].item() == pytest.approx(ref[token].item(), abs=2e-5)


def test_sequence_logprobs_equal_unpadded_forward(arch):
    model = make_model(arch)
    ids, mask = left_padded_batch(LENGTHS)
    out = sample(model, ids, mask, max_new_tokens=6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lp = sequence_logprobs(model, out.sequences, out.attention_mask, start=out.prompt_length)
        lp_chunked = sequence_logprobs(
            model, out.sequences, out.attention_mask, start=out.prompt_length, chunk_rows=1
        )
    torch.testing.assert_close(lp, lp_chunked, rtol=0, atol=1e-6)
    assert lp.dtype == torch.float32 and lp.shape == out.completion_ids.shape
    for row, n_prompt in enumerate(LENGTHS):
        tokens, logits = unpadded_forward_logits(model, out, row)
        n_valid = int(out.completion_mask[row].sum())
        ref = torch.log_softmax(logits, dim=-1)
        for t in range(n_valid):
            expected = ref[n_prompt + t - 1, tokens[n_prompt + t]].item()
            assert lp[row, t].item() == pytest.approx(expected, abs=2e-5)
    # The sampler's own raw log-probs agree wherever tokens are valid
    again = sample(
        model,
        ids,
        mask,
        max_new_tokens=6,
        generator=torch.Generator().manual_seed(0),
        return_raw_logprobs=True,
    )
    valid = again.completion_mask.bool()
    torch.testing.assert_close(again.raw_logprobs[valid], lp[valid], rtol=0, atol=2e-5)


def test_sampler_outputs_feed_autograd():
    # RL computes policy log-probs with gradients on the sampler's outputs.
    model = make_model("gpt2")
    ids, mask = left_padded_batch([3, 5])
    out = sample(model, ids, mask, max_new_tokens=3)
    lp = sequence_logprobs(model, out.sequences, out.attention_mask, start=out.prompt_length)
    (lp * out.completion_mask).sum().backward()
    assert model.get_input_embeddings().weight.grad is not None


def test_sequence_logprobs_gradients_and_temperature():
    model = make_model("llama")
    ids, mask = left_padded_batch([5, 3])
    lp = sequence_logprobs(model, ids, mask, start=1)
    assert lp.shape == (2, 4)
    lp[mask[:, 1:].bool()].sum().backward()
    assert model.get_input_embeddings().weight.grad is not None
    with torch.no_grad():
        hot = sequence_logprobs(model, ids, mask, start=2, temperature=2.0)
        logits = model(input_ids=ids[:1]).logits[0] / 2.0
    expected = torch.log_softmax(logits, -1)[1:4].gather(-1, ids[0, 2:].unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(hot[0], expected, rtol=0, atol=1e-5)
    with pytest.raises(UserError, match="start"):
        sequence_logprobs(model, ids, mask, start=5)


def test_greedy_equals_hf_generate(arch):
    model = make_model(arch)
    ids, mask = left_padded_batch(LENGTHS, seed=3)
    ours = sample(model, ids, mask, max_new_tokens=16, temperature=0.0)
    assert torch.equal(ours.completion_ids, hf_greedy_completions(model, ids, mask, 16))
    assert (ours.logprobs == 0).all()  # greedy: the sampling distribution is a point mass


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    vocab=st.integers(2, 300),
    scale=st.sampled_from([0.3, 3.0, 30.0]),  # flat (nucleus > 64 tokens: sort path) to peaked
    top_k=st.one_of(st.none(), st.integers(1, 70)),
    top_p=st.one_of(st.none(), st.floats(0.05, 1.0)),
    temperature=st.floats(0.2, 3.0),
)
def test_top_k_top_p_restrict_support(seed, vocab, scale, top_k, top_p, temperature):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(8, vocab, generator=g) * scale
    tokens, logp, raw = sample_from_logits(
        logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=g, want_raw=True
    )
    for row in range(8):
        ref = reference_logprobs(logits[row], temperature, top_k, top_p)
        token = int(tokens[row])
        assert ref[token] > float("-inf")
        assert logp[row].item() == pytest.approx(ref[token].item(), abs=1e-4)
        assert raw[row].item() == pytest.approx(
            torch.log_softmax(logits[row], -1)[token].item(), abs=1e-5
        )
        if top_k is not None:
            assert (ref > float("-inf")).sum() <= top_k


def test_sampling_frequencies_follow_the_distribution():
    # 20k draws from one row: empirical frequencies match the filtered distribution.
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]]).repeat(20_000, 1)
    g = torch.Generator().manual_seed(0)
    tokens, _, _ = sample_from_logits(logits, top_k=4, temperature=1.0, generator=g)
    freq = torch.bincount(tokens, minlength=6).double() / tokens.numel()
    ref = reference_logprobs(logits[0], 1.0, 4, None).exp()
    torch.testing.assert_close(freq, ref, rtol=0, atol=0.015)
    assert freq[4] == 0 and freq[5] == 0


def test_determinism_per_generator_seed():
    model = make_model("qwen2")
    ids, mask = left_padded_batch(LENGTHS)

    def run(seed: int):
        return sample(
            model,
            ids,
            mask,
            max_new_tokens=8,
            top_p=0.95,
            generator=torch.Generator().manual_seed(seed),
        )

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.sequences, c.sequences)


def test_eos_ends_sequences_and_masks():
    model = make_model("llama")
    ids, mask = left_padded_batch(LENGTHS)
    greedy = sample(model, ids, mask, max_new_tokens=8, temperature=0.0, eos_token_id=[])
    eos = int(greedy.completion_ids[0, 2])  # make row 0's third token "the eos"
    out = sample(
        model, ids, mask, max_new_tokens=8, temperature=0.0, eos_token_id=eos, pad_token_id=2
    )
    for row in range(len(LENGTHS)):
        hits = (greedy.completion_ids[row] == eos).nonzero().flatten().tolist()
        expected = hits[0] + 1 if hits else out.completion_ids.shape[1]
        assert int(out.completion_mask[row].sum()) == expected
        assert out.finish_reasons[row] == ("eos" if hits else "length")
        assert (out.completion_ids[row, expected:] == 2).all()
        assert (out.logprobs[row, expected:] == 0).all()
    assert out.finish_reasons[0] == "eos" and int(out.completion_mask[0].sum()) <= 3
    # attention_mask = prompt mask + completion mask
    assert torch.equal(out.attention_mask[:, : ids.shape[1]], mask)
    assert torch.equal(out.attention_mask[:, ids.shape[1] :], out.completion_mask)


def test_a_turn_ends_on_the_generation_configs_eos_ids_as_well_as_the_tokenizers():
    """Llama 3 Instruct's tokenizer names <|end_of_text|> its eos, its turns end with <|eot_id|>,
    which the generation config lists: sampling stops on either, as generate does."""
    from types import SimpleNamespace

    model = make_model("llama")
    ids, mask = left_padded_batch([4])
    greedy = sample(model, ids, mask, max_new_tokens=6, temperature=0.0, eos_token_id=[])
    third = int(greedy.completion_ids[0, 2])
    unused = next(i for i in range(model.config.vocab_size) if i not in greedy.completion_ids[0])
    tokenizer = SimpleNamespace(eos_token_id=unused, pad_token_id=0)
    model.generation_config.eos_token_id = [unused, third]
    out = sample(model, ids, mask, max_new_tokens=6, temperature=0.0, tokenizer=tokenizer)
    first_hit = greedy.completion_ids[0].tolist().index(third)
    assert out.finish_reasons == ["eos"] and int(out.completion_mask[0].sum()) == first_hit + 1


def test_loop_stops_when_all_finished():
    model = make_model("llama")
    ids, mask = left_padded_batch([4])
    first = int(sample(model, ids, mask, max_new_tokens=1, temperature=0.0).completion_ids[0, 0])
    out = sample(model, ids, mask, max_new_tokens=50, temperature=0.0, eos_token_id=first)
    assert out.completion_ids.shape == (1, 1) and out.finish_reasons == ["eos"]


def test_stop_strings(tokenizer):
    from rlalign.lm.models import create_model

    model = create_model("tiny", len(tokenizer), seed=0, num_hidden_layers=1)
    prompts = ["The president of", "The capital of Ostrava is"]
    free = generate_text(
        model, tokenizer, prompts, max_new_tokens=12, temperature=0.0, eos_token_id=[]
    )
    stop = free[0].completion[3:5]  # text the greedy continuation is known to produce
    assert stop
    out = generate_text(
        model,
        tokenizer,
        prompts,
        max_new_tokens=12,
        temperature=0.0,
        eos_token_id=[],
        stop_strings=[stop],
    )
    assert out[0].finish_reason == "stop"
    assert stop in out[0].completion
    assert out[0].num_tokens < free[0].num_tokens
    # the completion ends at the first token that completes the stop string
    ids = tokenizer(out[0].completion, add_special_tokens=False)["input_ids"]
    assert stop not in tokenizer.decode(ids[:-1])
    for sample_ in out:
        assert sample_.finish_reason in {"stop", "length"}
    with pytest.raises(UserError, match="tokenizer"):
        sample(model, torch.tensor([[3, 4]]), stop_strings=["x"])


def test_num_samples_groups_rows():
    model = make_model("gpt2")
    ids, mask = left_padded_batch([5, 2])
    one = sample(model, ids, mask, max_new_tokens=5, temperature=0.0)
    three = sample(model, ids, mask, max_new_tokens=5, temperature=0.0, num_samples=3)
    assert torch.equal(three.sequences, one.sequences.repeat_interleave(3, dim=0))
    drawn = sample(
        model,
        ids,
        mask,
        max_new_tokens=5,
        num_samples=4,
        return_raw_logprobs=True,
        generator=torch.Generator().manual_seed(0),
        eos_token_id=[],
    )
    assert drawn.sequences.shape[0] == 8
    with torch.no_grad():
        lp = sequence_logprobs(
            model, drawn.sequences, drawn.attention_mask, start=drawn.prompt_length
        )
    torch.testing.assert_close(drawn.raw_logprobs, lp, rtol=0, atol=2e-5)


def test_bf16_path_runs_and_restores_attention():
    model = make_model("llama").to(torch.bfloat16)
    assert model.config._attn_implementation == "sdpa"
    ids, mask = left_padded_batch(LENGTHS)
    out = sample(
        model,
        ids,
        mask,
        max_new_tokens=6,
        return_raw_logprobs=True,
        eos_token_id=[],
        generator=torch.Generator().manual_seed(0),
    )
    assert model.config._attn_implementation == "sdpa"  # switched to eager only while sampling
    with torch.no_grad():
        lp = sequence_logprobs(model, out.sequences, out.attention_mask, start=out.prompt_length)
    torch.testing.assert_close(out.raw_logprobs, lp, rtol=0, atol=0.1)  # bf16 precision
    fp32 = make_model("llama")
    auto = sample(fp32, ids, mask, max_new_tokens=4, autocast_dtype=torch.bfloat16)
    assert torch.isfinite(auto.logprobs).all()


def test_bad_input():
    model = make_model("llama", context=16)
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(UserError, match="top_k must be a positive integer"):
        sample(model, ids, top_k=0)
    with pytest.raises(UserError, match="temperature"):
        sample(model, ids, temperature=-1.0)
    with pytest.raises(UserError, match="top_p"):
        sample(model, ids, top_p=1.5)
    with pytest.raises(UserError, match="max_new_tokens"):
        sample(model, ids, max_new_tokens=0)
    with pytest.raises(UserError, match="context of 16"):
        sample(model, torch.ones(1, 16, dtype=torch.long))
    with pytest.raises(UserError, match="left-padded"):
        sample(model, torch.tensor([[5, 6, 2]]), torch.tensor([[1, 1, 0]]))
    with pytest.raises(UserError, match="empty prompt"):
        sample(model, torch.tensor([[2, 2]]), torch.tensor([[0, 0]]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = sample(model, torch.ones(1, 12, dtype=torch.long), max_new_tokens=10, eos_token_id=[])
    assert out.completion_ids.shape[1] == 4
    assert any("clipped to 4" in str(w.message) for w in caught)


def test_draw_never_returns_an_excluded_token(monkeypatch):
    from rlalign.lm import sampling

    logp = torch.log(torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]))
    # The extreme uniform draw (u equal to the total mass, which float rounding can produce)
    monkeypatch.setattr(sampling.torch, "rand", lambda shape, **kw: torch.ones(shape))
    assert sampling._draw(logp, None).flatten().tolist() == [1, 0]
    monkeypatch.setattr(sampling.torch, "rand", lambda shape, **kw: torch.zeros(shape))
    assert sampling._draw(logp, None).flatten().tolist() == [0, 0]


def test_uniforms_of_the_wrong_shape_are_refused():
    """A [1, T] tensor would broadcast, every row drawing the same numbers; too few columns
    would fail mid-generation."""
    model = make_model("llama")
    ids, mask = left_padded_batch(LENGTHS)
    rows = len(LENGTHS) * 2
    for shape in ((1, 5), (rows, 4), (rows,)):
        with pytest.raises(UserError, match=r"uniforms has shape .* \[\d+, 5\]"):
            sample(model, ids, mask, max_new_tokens=5, num_samples=2, uniforms=torch.rand(shape))
    out = sample(model, ids, mask, max_new_tokens=5, num_samples=2, uniforms=torch.rand(rows, 5))
    assert out.completion_ids.shape[0] == rows
