"""The hand-written Llama-family decode step against the Hugging Face forward.

References: a full HF forward of each row *without padding* and without a cache (so the
decoder's cache, positions, padding mask and grouped heads are all under test), HF
``generate`` for greedy decoding, and the sampler with ``fast_decode=False`` for fallbacks.
"""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

from rlalign.errors import UserError
from rlalign.lm.fast_decode import LlamaDecoder, unsupported_reason
from rlalign.lm.sampling import sample

from .conftest import hf_greedy_completions, left_padded_batch, make_model

LENGTHS = [7, 2, 5, 1]
SMALL = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "vocab_size": 61}
IDS = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}
HEADS = {"num_attention_heads": 4, "num_key_value_heads": 2}
CONFIGS = {
    # GQA, untied, no biases
    "llama-gqa": (LlamaConfig, {"num_attention_heads": 4, "num_key_value_heads": 2}),
    # MHA with every bias, tied embeddings, another rope theta and an explicit head_dim
    "llama-mha-bias-tied": (
        LlamaConfig,
        {
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "head_dim": 16,
            "attention_bias": True,
            "mlp_bias": True,
            "tie_word_embeddings": True,
            "rope_theta": 500.0,
        },
    ),
    # Qwen2: q/k/v bias, no o bias; GQA with 4 query heads per key head, untied
    "qwen2-gqa": (Qwen2Config, {"num_attention_heads": 8, "num_key_value_heads": 2}),
    "qwen2-mha-tied": (
        Qwen2Config,
        {"num_attention_heads": 4, "num_key_value_heads": 4, "tie_word_embeddings": True},
    ),
    "mistral-gqa": (MistralConfig, {"num_attention_heads": 4, "num_key_value_heads": 1}),
}


def build(name: str, seed: int = 0) -> torch.nn.Module:
    """A tiny random model whose biases and norm weights are random too (HF initialises them
    to 0 and 1, which would hide a bias or norm weight the decoder forgot)."""
    config_cls, extra = CONFIGS[name]
    config = config_cls(max_position_embeddings=128, **SMALL, **IDS, **extra)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        with torch.no_grad():
            for pname, param in model.named_parameters():
                if pname.endswith("bias") or "norm" in pname:
                    param.add_(torch.randn_like(param) * 0.3)
    return model.eval()


@pytest.fixture
def steps_run(monkeypatch) -> list[int]:
    """Counts the decoder's steps (to know the fast path really ran)."""
    calls: list[int] = []
    original = LlamaDecoder.step

    def counted(self, tokens, t):
        calls.append(t)
        return original(self, tokens, t)

    monkeypatch.setattr(LlamaDecoder, "step", counted)
    return calls


def prefill_decoder(model, ids, mask, *, num_samples: int, steps: int, autocast=None):
    """A decoder and its logits after the prompt (as the sampler builds them)."""
    decoder = LlamaDecoder(
        model,
        rows=ids.shape[0] * num_samples,
        prompt_len=ids.shape[1],
        steps=steps,
        dtype=autocast,
        cache_dtype=autocast or next(model.parameters()).dtype,
    )
    return decoder, decoder.prefill(ids, mask, num_samples)


def unpadded_logits(model, ids, mask, fed, row: int, num_samples: int) -> torch.Tensor:
    """Logits of row ``row``'s real prompt tokens followed by its fed tokens, no mask."""
    prompt = ids[row // num_samples][mask[row // num_samples].bool()]
    tokens = torch.cat([prompt, fed[row]]).unsqueeze(0)
    return model(input_ids=tokens).logits[0, len(prompt) - 1 :]  # after the prompt, each fed


@pytest.mark.parametrize("name", list(CONFIGS))
@torch.no_grad()
def test_step_logits_equal_hf_forward(name):
    model = build(name)
    assert unsupported_reason(model, 64) is None
    ids, mask = left_padded_batch(LENGTHS, vocab=SMALL["vocab_size"])
    n, steps = 2, 36  # more than the first allocation (32 new tokens): the cache grows once
    decoder, first = prefill_decoder(model, ids, mask, num_samples=n, steps=steps)
    g = torch.Generator().manual_seed(1)
    fed = torch.randint(3, SMALL["vocab_size"], (len(LENGTHS) * n, steps), generator=g)
    logits = torch.stack([first] + [decoder.step(fed[:, t], t) for t in range(steps)], dim=1)
    for row in range(fed.shape[0]):
        ref = unpadded_logits(model, ids, mask, fed, row, n)  # after the prompt, after each fed
        torch.testing.assert_close(logits[row], ref, rtol=0, atol=2e-5)


@pytest.mark.parametrize("weights", ["bf16-weights", "bf16-autocast"])
@torch.no_grad()
def test_step_logits_close_to_hf_in_bf16(weights):
    # Same precision as HF's forward in the same setting: bf16 tolerance, not fp32's.
    model = build("qwen2-gqa")
    if weights == "bf16-weights":
        model = model.to(torch.bfloat16)
        context, autocast = torch.autocast("cpu", enabled=False), None
    else:
        context, autocast = torch.autocast("cpu", dtype=torch.bfloat16), torch.bfloat16
    ids, mask = left_padded_batch(LENGTHS, vocab=SMALL["vocab_size"])
    fed = torch.randint(3, SMALL["vocab_size"], (len(LENGTHS), 6), generator=torch.Generator())
    with context:
        decoder, first = prefill_decoder(
            model, ids, mask, num_samples=1, steps=6, autocast=autocast
        )
        steps = [decoder.step(fed[:, t], t) for t in range(6)]
        logits = torch.stack([first, *steps], dim=1).float()
        for row in range(len(LENGTHS)):
            ref = unpadded_logits(model, ids, mask, fed, row, 1).float()
            torch.testing.assert_close(logits[row], ref, rtol=0, atol=0.05)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_greedy_equals_generate(name, steps_run):
    model = build(name, seed=3)
    ids, mask = left_padded_batch(LENGTHS, vocab=SMALL["vocab_size"], seed=3)
    ours = sample(model, ids, mask, max_new_tokens=12, temperature=0.0, eos_token_id=[])
    assert len(steps_run) == 11  # every step after the prefill ran on the fast path
    hf = hf_greedy_completions(model, ids, mask, 12, eos_token_id=None)
    assert torch.equal(ours.completion_ids, hf)


@pytest.mark.parametrize("name", ["llama-mha-bias-tied", "qwen2-gqa"])
def test_logprobs_equal_full_forward(name, steps_run):
    model = build(name)
    ids, mask = left_padded_batch(LENGTHS, vocab=SMALL["vocab_size"])
    out = sample(
        model,
        ids,
        mask,
        max_new_tokens=8,
        num_samples=2,
        top_k=20,
        generator=torch.Generator().manual_seed(0),
        eos_token_id=[],
        return_raw_logprobs=True,
    )
    assert steps_run
    for row in range(out.sequences.shape[0]):
        tokens = out.sequences[row][out.attention_mask[row].bool()]
        n_prompt = LENGTHS[row // 2]
        with torch.no_grad():
            logp = model(input_ids=tokens.unsqueeze(0)).logits[0].log_softmax(dim=-1)
        expected = logp[n_prompt - 1 : -1].gather(-1, tokens[n_prompt:].unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(out.raw_logprobs[row], expected, rtol=0, atol=2e-5)


def test_eos_rows_and_stop_match_the_hf_path(steps_run):
    # Rows that end early keep being fed (pad tokens) without disturbing the others.
    model = build("llama-gqa")
    ids, mask = left_padded_batch(LENGTHS, vocab=SMALL["vocab_size"])
    kwargs = {"max_new_tokens": 10, "top_p": 0.9, "eos_token_id": [5, 9], "num_samples": 3}
    fast = sample(model, ids, mask, generator=torch.Generator().manual_seed(4), **kwargs)
    assert steps_run
    slow = sample(
        model, ids, mask, generator=torch.Generator().manual_seed(4), fast_decode=False, **kwargs
    )
    assert torch.equal(fast.sequences, slow.sequences)
    assert torch.equal(fast.completion_mask, slow.completion_mask)
    assert fast.finish_reasons == slow.finish_reasons
    torch.testing.assert_close(fast.logprobs, slow.logprobs, rtol=0, atol=2e-5)


@pytest.mark.parametrize("case", ["gpt2", "llama-rope-scaling", "qwen2-sliding", "hooked"])
def test_unsupported_models_fall_back(case, steps_run, caplog):
    torch.manual_seed(0)  # the weights of the models built from a config here
    if case == "gpt2":
        model = make_model("gpt2")
    elif case == "llama-rope-scaling":
        config = LlamaConfig(
            rope_scaling={"rope_type": "linear", "factor": 2.0}, **HEADS, **SMALL, **IDS
        )
        model = AutoModelForCausalLM.from_config(config).eval()
    elif case == "qwen2-sliding":
        config = Qwen2Config(
            use_sliding_window=True,
            sliding_window=4,
            max_window_layers=0,
            **HEADS,
            **SMALL,
            **IDS,
        )
        model = AutoModelForCausalLM.from_config(config).eval()
        # A window longer than the whole sequence never masks anything: supported.
        assert unsupported_reason(model, capacity=4) is None
    else:
        model = build("llama-gqa")
        model.model.layers[0].mlp.register_forward_hook(lambda *args: None)
    vocab = model.config.vocab_size
    ids, mask = left_padded_batch(LENGTHS, vocab=vocab)
    assert unsupported_reason(model, capacity=ids.shape[1] + 6) is not None
    kwargs = {"max_new_tokens": 6, "eos_token_id": [], "return_raw_logprobs": True}
    with caplog.at_level(logging.DEBUG, logger="rlalign.lm.sampling"):
        out = sample(model, ids, mask, generator=torch.Generator().manual_seed(0), **kwargs)
    assert not steps_run
    assert any("fast decode off" in r.message for r in caplog.records)
    ref = sample(
        model, ids, mask, generator=torch.Generator().manual_seed(0), fast_decode=False, **kwargs
    )
    assert torch.equal(out.sequences, ref.sequences)
    torch.testing.assert_close(out.raw_logprobs, ref.raw_logprobs, rtol=0, atol=0)


def test_a_hidden_states_forward_keeps_the_fast_path(steps_run):
    """transformers leaves output-capturing hooks on every layer after a forward that asks for
    hidden states (PPO's value head does at its first step). They never change an output, so
    sampling after such a forward still decodes on the fast path, to the same bits as before
    it; a hook of anyone else's still sends sampling to the HF forward."""
    model = build("llama-gqa")
    ids, mask = left_padded_batch(LENGTHS, vocab=model.config.vocab_size)
    kwargs = {"max_new_tokens": 6, "eos_token_id": []}
    before = sample(model, ids, mask, generator=torch.Generator().manual_seed(0), **kwargs)
    with torch.no_grad():
        model(ids, attention_mask=mask, output_hidden_states=True)
    assert unsupported_reason(model, capacity=ids.shape[1] + 6) is None
    steps_run.clear()
    after = sample(model, ids, mask, generator=torch.Generator().manual_seed(0), **kwargs)
    assert steps_run  # the decoder ran
    assert torch.equal(after.sequences, before.sequences)
    assert torch.equal(after.logprobs, before.logprobs)
    model.model.layers[1].register_forward_hook(lambda *args: None)
    assert "forward hooks" in unsupported_reason(model, capacity=ids.shape[1] + 6)


def test_a_prompt_tuning_adapter_is_refused_not_sampled_without_its_virtual_tokens():
    """The decoder reads the base model's weights: a prompt-learning adapter's soft tokens,
    added in the PEFT model's own forward, would be left out without a word."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    model = get_peft_model(
        build("llama-gqa"), PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4)
    )
    ids, mask = left_padded_batch(LENGTHS, vocab=model.config.vocab_size)
    with pytest.raises(UserError, match="prompt- or prefix-tuning adapters"):
        sample(model, ids, mask, max_new_tokens=2)
