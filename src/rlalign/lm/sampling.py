"""The rollout engine: batched sampling with a KV cache.

:func:`sample` draws completions for a batch of left-padded prompts from any Hugging Face
causal LM with a KV cache: the prompt is encoded once (prefill), then each step feeds one token
per sequence. Llama-family models on CPU run through a hand-written forward that reads the
model's weights (:mod:`rlalign.lm.fast_decode`); any other model runs its own forward and
cache. In the same pass it records, for each sampled token,

- ``logprobs``: its log-probability under the *sampling distribution* (after temperature, top-k
  and top-p); without top-k/top-p, the behaviour policy's log pi_old(a|s) that RL's ratios use
  (with them, RL takes the policy's own:
  :meth:`rlalign.train.rl_config.RLConfig.truncates_sampling`);
- ``raw_logprobs`` (optional): its log-probability under the model itself (temperature 1, no
  filtering), i.e. what :func:`rlalign.lm.logprobs.sequence_logprobs` would compute with a fresh forward pass.

Log-probs of given tokens (the policy and reference passes of RL) are in
:mod:`rlalign.lm.logprobs`, the KV cache's preallocated layers in :mod:`rlalign.lm.kv_cache`,
text in and text out in :mod:`rlalign.lm.generate`.

Why not ``model.generate``: it runs a general pipeline per step (logits processors, stopping
criteria objects, input preparation, output bookkeeping) whose overhead dominates small models
on CPU, and it does not return log-probs of the sampled tokens under the sampling distribution.
Here the per-step work is one forward call plus a handful of tensor ops on preallocated buffers;
the loop ends as soon as every sequence has finished. On CPU the model's linear layers run on
weights packed once per call for oneDNN (:mod:`rlalign.lm.fast_linear`): the rollout engine's
own copy of the current weights, in the compute dtype (bf16 under ``autocast_dtype``, with the
same results as autocast's per-step cast). For Llama-family models the forward itself is
:class:`~rlalign.lm.fast_decode.LlamaDecoder`, a few tensor ops per layer instead of HF's module
calls, mask building and cache bookkeeping.

Conventions (shapes for ``B`` prompts, ``n`` samples each, prompt width ``P``, ``T`` steps run):

- rows are grouped by prompt: rows ``i*n .. i*n+n-1`` are the samples of prompt ``i``;
- ``sequences`` = left-padded prompt ``[B*n, P]`` followed by the completion ``[B*n, T]``;
  ``completion_ids = sequences[:, P:]``; tokens after a sequence's end are ``pad_token_id``;
- ``completion_mask`` is 1 on valid completion tokens, up to and including the eos token or the
  token that completed a stop string; ``attention_mask`` = prompt mask + completion mask;
- ``logprobs`` / ``raw_logprobs`` are fp32 ``[B*n, T]``, zero where the completion mask is 0.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from rlalign.errors import UserError
from rlalign.lm.fast_decode import LlamaDecoder, unsupported_reason
from rlalign.lm.fast_linear import inference_linears
from rlalign.lm.forward import (
    attention_implementation,
    cache_kwarg,
    context_length,
    decode_attention,
    innermost,
    keep_logits,
    returned_cache,
)
from rlalign.lm.kv_cache import cache_dtype, decode_cache_dtype, dense_cache_pays, preallocate

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


NEG_INF = float("-inf")


logger = logging.getLogger(__name__)


@dataclass
class SampleOutput:
    """Result of :func:`sample`; see the module docstring for the layout."""

    sequences: torch.Tensor  # [N, P+T] long: left-padded prompt, then completion
    attention_mask: torch.Tensor  # [N, P+T] long: prompt mask, then completion mask
    completion_mask: torch.Tensor  # [N, T] long: 1 on valid tokens incl. the final eos/stop
    logprobs: torch.Tensor  # [N, T] fp32: log-prob under the sampling distribution
    raw_logprobs: torch.Tensor | None  # [N, T] fp32: log-prob under the model (T=1, no filter)
    prompt_length: int  # P: width of the (left-padded) prompt block
    finish_reasons: list[str] = field(default_factory=list)  # "eos" | "stop" | "length"

    @property
    def completion_ids(self) -> torch.Tensor:
        """``[N, T]`` completion tokens (``pad_token_id`` after each sequence's end)."""
        return self.sequences[:, self.prompt_length :]

    @property
    def completion_lengths(self) -> torch.Tensor:
        """``[N]`` number of valid completion tokens per row."""
        return self.completion_mask.sum(dim=1)


def check_sampling_args(
    temperature: float, top_k: int | None, top_p: float | None, max_new_tokens: int
) -> None:
    """Raise :class:`UserError` with one clear line for an invalid sampling setting."""
    if not (temperature >= 0.0) or temperature == float("inf"):  # also rejects NaN
        raise UserError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and (not isinstance(top_k, int) or top_k <= 0):
        raise UserError(f"top_k must be a positive integer (or unset), got {top_k}")
    if top_p is not None and not (0.0 < top_p <= 1.0):
        raise UserError(f"top_p must be in (0, 1], got {top_p}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be a positive integer, got {max_new_tokens}")


def _check_left_padded(attention_mask: torch.Tensor) -> None:
    lengths = attention_mask.sum(dim=1)
    if bool((lengths == 0).any()):
        raise UserError("every prompt needs at least one token (got an empty prompt)")
    # Left padding means each row is 0...0 1...1: the mask never drops from 1 back to 0.
    if bool((attention_mask[:, 1:] < attention_mask[:, :-1]).any()):
        raise UserError("prompts must be left-padded (tokenizer.padding_side = 'left')")


def sample_from_logits(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    want_raw: bool = False,
    uniforms: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Draw one token per row from ``logits`` ``[N, V]``.

    The sampling distribution is: divide by ``temperature``; keep the ``top_k`` largest; keep
    the smallest set of most likely tokens whose probability reaches ``top_p`` (the first token
    is always kept); renormalise. ``temperature == 0`` is greedy (argmax; its sampling
    distribution is a point mass, so ``logprobs`` is 0). ``uniforms`` ``[N]`` in [0, 1): the
    random numbers of the draws (default: drawn from ``generator``).

    Returns:
        ``(tokens [N] long, logprobs [N] fp32 under the sampling distribution,
        raw [N] fp32 under softmax(logits) or None)``.
    """
    logits = logits.float()
    raw = None
    if temperature == 0.0:
        tokens = logits.argmax(dim=-1)
        logp = torch.zeros(tokens.shape, dtype=torch.float32, device=logits.device)
    else:
        scaled = logits / temperature if temperature != 1.0 else logits
        vocab = scaled.shape[-1]
        index: torch.Tensor | None = None
        if top_k is not None and top_k < vocab:
            # Work on the k survivors only: cheaper than masking (and sorting) the full vocab.
            scaled, index = scaled.topk(top_k, dim=-1)  # sorted, descending
        if top_p is not None and top_p < 1.0:
            if index is None:
                scaled, index = _nucleus(scaled, top_p)
            else:
                # After top-k, top-p applies to the renormalised k survivors (as in HF).
                probs = scaled.softmax(dim=-1)
                # Drop a token when the tokens ranked above it already hold >= top_p of the mass.
                before = probs.cumsum(dim=-1) - probs
                scaled = scaled.masked_fill(before >= top_p, NEG_INF)
        logp_all = scaled.log_softmax(dim=-1)
        choice = _draw(logp_all, generator, uniforms)
        logp = logp_all.gather(-1, choice).squeeze(-1)
        tokens = (index.gather(-1, choice) if index is not None else choice).squeeze(-1)
    if want_raw:
        raw = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(dim=-1)
    return tokens, logp, raw


def _draw(
    logp: torch.Tensor, generator: torch.Generator | None, uniforms: torch.Tensor | None = None
) -> torch.Tensor:
    """One exact draw per row from ``exp(logp)`` ``[N, V]`` by inverting the CDF; ``[N, 1]``.

    One uniform number per row and a binary search: ~30x cheaper on CPU than
    ``torch.multinomial`` or Gumbel noise over the vocabulary, and deterministic under
    ``generator``. A token of probability 0 is never returned: the search finds the first
    index whose cumulative probability exceeds u, and a zero-probability token does not raise
    the cumulative sum.
    """
    cdf = logp.exp().cumsum(dim=-1)
    if uniforms is None:
        uniforms = torch.rand((logp.shape[0],), generator=generator, device=logp.device)
    total = cdf[:, -1:]
    u = uniforms.to(logp.device, cdf.dtype).reshape(-1, 1) * total
    # Rounding can make u equal to the total: keep it just below, so that the search lands on
    # the last token of positive probability (where the CDF first reaches its total), never
    # past it. (Cheaper than counting that position over the whole row.)
    u = torch.minimum(u, total.nextafter(torch.zeros_like(total)))
    return torch.searchsorted(cdf, u, right=True)


def _nucleus(scaled: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Restrict each row of ``scaled`` ``[N, V]`` to its nucleus: the fewest most likely tokens
    whose probability reaches ``top_p``.

    Returns ``(values, index)``: the candidates sorted in descending order, excluded ones at
    -inf, and their vocabulary ids.

    A full sort of the vocabulary costs ~10 ms per step on CPU. A trained model's nucleus is
    usually a few dozen tokens, so one cheap ``topk(64)`` settles most batches; only when some
    row's nucleus is larger is the whole vocabulary sorted.
    """
    vocab = scaled.shape[-1]
    lse = scaled.logsumexp(dim=-1, keepdim=True)
    k = min(64, vocab)
    values, index = scaled.topk(k, dim=-1)  # sorted, descending
    probs = (values - lse).exp()  # normalised over the full vocabulary
    before = probs.cumsum(dim=-1) - probs
    if k == vocab or bool((before[:, -1] + probs[:, -1] >= top_p).all()):
        return values.masked_fill(before >= top_p, NEG_INF), index
    # A flat distribution: its nucleus is most of the vocabulary, so sort it all (as HF does).
    values, index = scaled.sort(dim=-1, descending=True)
    probs = (values - lse).exp()
    before = probs.cumsum(dim=-1) - probs
    return values.masked_fill(before >= top_p, NEG_INF), index


def _linear_dtype(autocast_dtype: torch.dtype | None) -> torch.dtype | None:
    """The compute dtype of the packed linear layers: autocast's bf16, else the weights'."""
    return torch.bfloat16 if autocast_dtype == torch.bfloat16 else None


def _autocast(
    model: PreTrainedModel, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager:
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    device_type = next(model.parameters()).device.type
    return torch.autocast(device_type=device_type, dtype=dtype)


def _model_steps(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    full_mask: torch.Tensor,
    *,
    num_samples: int,
    cache_dtype: torch.dtype | None,
    dense: bool,
) -> tuple[torch.Tensor, Callable[[torch.Tensor, int], torch.Tensor]]:
    """Decoding through the model's own forward and KV cache (any HF causal LM).

    Runs the prefill and returns its last logits ``[rows, V]`` and ``step(tokens, t)``, which
    feeds the ``t``-th new token of every row and returns the next logits. ``full_mask``:
    ``[rows, P + max_new_tokens]`` attention mask over prompt and new tokens.
    """
    prompt_len = input_ids.shape[1]
    # Positions count real tokens only, so a left-padded prompt is positioned exactly like the
    # same prompt without padding (pad positions are masked; their value is irrelevant).
    prompt_pos = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    next_pos = attention_mask.sum(dim=1).repeat_interleave(num_samples)  # [rows]
    # Prefill: the whole prompt once, logits only for its last position.
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=prompt_pos,
        use_cache=True,
        **keep_logits(model, 1),
    )
    cache = returned_cache(out)
    logits = out.logits[:, -1, :]
    if num_samples > 1:
        # n samples per prompt share the prompt's keys/values: copy them, do not recompute.
        cache.batch_repeat_interleave(num_samples)
        logits = logits.repeat_interleave(num_samples, dim=0)
    preallocate(cache, full_mask.shape[1], dense=dense, dtype=cache_dtype)
    cache_kw = cache_kwarg(model)

    def step(tokens: torch.Tensor, t: int) -> torch.Tensor:
        nonlocal cache
        out = model(
            input_ids=tokens.unsqueeze(1),
            attention_mask=full_mask[:, : prompt_len + t + 1],
            position_ids=(next_pos + t).unsqueeze(1),
            use_cache=True,
            **{cache_kw: cache},
        )
        cache = returned_cache(out)
        return out.logits[:, -1, :]

    return logits, step


def _as_id_set(value: int | Sequence[int] | None) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def _changes_the_input(model: object) -> bool:
    """Whether a PEFT wrapper (prompt or prefix tuning) adds virtual tokens in its own forward,
    which the decoder, reading the base model's weights, would leave out."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def default_eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None) -> list[int]:
    """The end-of-sequence ids: the tokenizer's eos and every id of the model's generation
    config (else of its config).

    Why both: a chat model's turn can end on a token that is not the tokenizer's eos (Llama 3
    Instruct's tokenizer says ``<|end_of_text|>``, its turns end with ``<|eot_id|>``, which
    the generation config lists, as ``generate`` stops on it); a model without a generation
    config has only the tokenizer's."""
    ids: list[int] = []
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    gen = getattr(model, "generation_config", None)
    for source in (gen, model.config):
        found = _as_id_set(getattr(source, "eos_token_id", None))
        if found:
            ids += [i for i in found if i not in ids]
            break
    return ids


# no_grad, not inference_mode: the returned ids and masks feed autograd later (policy log-probs
# in RL), and inference tensors cannot be saved for backward.
@torch.no_grad()
def sample(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    num_samples: int = 1,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    stop_strings: Sequence[str] | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    generator: torch.Generator | None = None,
    return_raw_logprobs: bool = False,
    autocast_dtype: torch.dtype | None = None,
    attn_implementation: str | None = "auto",
    uniforms: torch.Tensor | None = None,
    all_done: Callable[[bool], bool] | None = None,
    fast_decode: bool = True,
) -> SampleOutput:
    """Sample completions for a batch of left-padded prompts with the model's KV cache.

    Args:
        model: any Hugging Face causal LM (its own forward and cache are used).
        input_ids: ``[B, P]`` prompt tokens, left-padded.
        attention_mask: ``[B, P]``, 1 on real tokens (default: all ones).
        max_new_tokens: most tokens to generate per sequence (clipped, with a warning, to the
            model's context).
        temperature: 0 = greedy; otherwise logits are divided by it.
        top_k: restrict sampling to the k most likely tokens.
        top_p: restrict sampling to the nucleus: the most likely tokens of total mass p.
        num_samples: completions per prompt (the prompt is encoded once and its cache copied).
        eos_token_id: id(s) that end a sequence (default: tokenizer's / model's eos). Pass
            ``[]`` to never stop on eos.
        pad_token_id: filler after a sequence ends (default: tokenizer's pad, else eos, else 0).
        stop_strings: a sequence also ends once its decoded completion contains one of these
            (needs ``tokenizer``); the token completing it is the last valid token.
        tokenizer: used for eos/pad defaults and stop strings.
        generator: a ``torch.Generator`` for reproducible draws (same seed, same samples).
        return_raw_logprobs: also return the model's own log-probs of the sampled tokens.
        autocast_dtype: e.g. ``torch.bfloat16`` to run the forward under autocast (on CPUs
            with AMX/AVX512-BF16 several times faster than fp32); sampling math stays fp32.
        attn_implementation: attention used while sampling (restored afterwards). ``"auto"``
            picks ``eager`` on CPU (faster there than SDPA for one-token steps) and otherwise
            keeps the model's; ``None`` keeps the model's; or any name HF accepts. For the
            model's own forward only: the fast decoder (``fast_decode``) computes attention as
            HF's eager implementation does.
        uniforms: ``[B * num_samples, max_new_tokens]`` random numbers in [0, 1), one per
            draw (row ``i`` uses ``uniforms[i, t]`` for its token ``t``) instead of the
            ``generator``: a row's sample then depends only on its own numbers, not on which
            other rows share the batch (how RL gives the same rollouts at any world size).
        all_done: given whether this batch has finished, whether to stop; under FSDP every
            rank must run the same number of forward passes, so RL passes "all ranks done".
        fast_decode: run prompt and steps through :class:`rlalign.lm.fast_decode.LlamaDecoder`
            when the model is one it supports (Llama, Qwen2, Mistral on CPU, default rope, no
            sliding window shorter than the sequence, no hooks or adapters); other models, and
            ``False``, run through the model's own forward and cache. Same results either way
            (to rounding); the reason for a fallback is logged at debug level.

    Returns:
        A :class:`SampleOutput`.

    Raises:
        UserError: invalid settings, right-padded or empty prompts, a prompt that fills the
            context, or stop strings without a tokenizer.
    """
    check_sampling_args(temperature, top_k, top_p, max_new_tokens)
    if num_samples < 1:
        raise UserError(f"num_samples must be >= 1, got {num_samples}")
    if input_ids.dim() != 2:
        raise UserError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = attention_mask.to(device=device, dtype=torch.long)
    _check_left_padded(attention_mask)
    if stop_strings and tokenizer is None:
        raise UserError("stop strings need a tokenizer to decode completions")

    batch, prompt_len = input_ids.shape
    rows = batch * num_samples
    if uniforms is not None and (
        uniforms.dim() != 2 or uniforms.shape[0] != rows or uniforms.shape[1] < max_new_tokens
    ):
        # a [1, T] tensor would broadcast: every row would draw the same numbers
        raise UserError(
            f"uniforms has shape {tuple(uniforms.shape)}; it needs one number per row and new "
            f"token: [{rows}, {max_new_tokens}] (batch x num_samples, max_new_tokens)"
        )
    limit = context_length(model)
    if limit is not None:
        if prompt_len >= limit:
            raise UserError(
                f"prompt of {prompt_len} tokens does not fit the model's context of {limit} "
                "tokens (it must leave room for at least one new token)"
            )
        if prompt_len + max_new_tokens > limit:
            warnings.warn(
                f"max_new_tokens={max_new_tokens} clipped to {limit - prompt_len}: the model's "
                f"context is {limit} tokens",
                stacklevel=2,
            )
            max_new_tokens = limit - prompt_len

    eos_ids = (
        default_eos_ids(model, tokenizer) if eos_token_id is None else _as_id_set(eos_token_id)
    )
    if pad_token_id is None:
        if tokenizer is not None and tokenizer.pad_token_id is not None:
            pad_token_id = int(tokenizer.pad_token_id)
        else:
            pad_token_id = eos_ids[0] if eos_ids else 0
    eos_tensor = torch.tensor(eos_ids, dtype=torch.long, device=device)
    stop_strings = [s for s in (stop_strings or []) if s]
    stop_window = max((len(s.encode("utf-8")) for s in stop_strings), default=0) + 1

    # Preallocated outputs; the loop writes column t of each (no per-step concatenation).
    completion = torch.full((rows, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    logprobs = torch.zeros(rows, max_new_tokens, dtype=torch.float32, device=device)
    raw_logprobs = torch.zeros_like(logprobs) if return_raw_logprobs else None
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    finish = ["length"] * rows
    completion_len = torch.full((rows,), max_new_tokens, dtype=torch.long, device=device)
    # Attention over [prompt | generated]: generated slots are 1 (tokens after a sequence's end
    # are fed but never read: their rows are discarded), so the mask is a growing view.
    full_mask = torch.ones(rows, prompt_len + max_new_tokens, dtype=torch.long, device=device)
    full_mask[:, :prompt_len] = attention_mask.repeat_interleave(num_samples, dim=0)
    capacity = prompt_len + max_new_tokens
    if _changes_the_input(model):  # the decoder would sample from the base model, silently
        raise UserError(
            "the sampler does not support prompt- or prefix-tuning adapters (their virtual "
            "tokens); use LoRA, or the model without the adapter"
        )
    core = innermost(model)
    why_not = unsupported_reason(core, capacity) if fast_decode else "fast_decode=False"
    if why_not is not None:
        logger.debug("fast decode off, using the model's forward: %s", why_not)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_autocast(model, autocast_dtype))
        if why_not is None:
            decoder = LlamaDecoder(
                core,
                rows=rows,
                prompt_len=prompt_len,
                steps=max_new_tokens,
                dtype=_linear_dtype(autocast_dtype),
                cache_dtype=decode_cache_dtype(core, autocast_dtype),
            )
            logits = decoder.prefill(input_ids, attention_mask, num_samples)
            next_logits = decoder.step
        else:
            attention = (
                decode_attention(model) if attn_implementation == "auto" else attn_implementation
            )
            stack.enter_context(attention_implementation(model, attention))
            stack.enter_context(
                inference_linears(model, dtype=_linear_dtype(autocast_dtype), rows=rows)
            )
            logits, next_logits = _model_steps(
                model,
                input_ids,
                attention_mask,
                full_mask,
                num_samples=num_samples,
                cache_dtype=cache_dtype(model, autocast_dtype, attention),
                dense=dense_cache_pays(model, autocast_dtype),
            )

        steps = 0
        for t in range(max_new_tokens):
            tokens, logp, raw = sample_from_logits(
                logits,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                generator=generator,
                want_raw=return_raw_logprobs,
                uniforms=uniforms[:, t] if uniforms is not None else None,
            )
            tokens = tokens.masked_fill(done, pad_token_id)
            completion[:, t] = tokens
            logprobs[:, t] = logp.masked_fill(done, 0.0)
            if raw_logprobs is not None and raw is not None:
                raw_logprobs[:, t] = raw.masked_fill(done, 0.0)
            steps = t + 1

            newly = ~done & torch.isin(tokens, eos_tensor) if eos_ids else None
            if newly is not None and bool(newly.any()):
                for i in newly.nonzero().flatten().tolist():
                    finish[i] = "eos"
                completion_len = torch.where(newly, t + 1, completion_len)
                done = done | newly
            if stop_strings:
                assert tokenizer is not None
                active = (~done).nonzero().flatten().tolist()
                if active:
                    # Only occurrences ending at the new token are new, and one spans at most
                    # stop_window tokens (every token is at least one byte): decode just those.
                    lo = max(0, t + 1 - stop_window)
                    texts = tokenizer.batch_decode(completion[active, lo : t + 1])
                    for i, text in zip(active, texts, strict=True):
                        if any(s in text for s in stop_strings):
                            finish[i] = "stop"
                            completion_len[i] = t + 1
                            done[i] = True
            finished = bool(done.all())
            if all_done is not None:
                finished = all_done(finished)
            if finished or t + 1 == max_new_tokens:
                break

            logits = next_logits(tokens, t)

    completion = completion[:, :steps]
    logprobs = logprobs[:, :steps]
    if raw_logprobs is not None:
        raw_logprobs = raw_logprobs[:, :steps]
    completion_len = completion_len.clamp(max=steps)
    completion_mask = (
        torch.arange(steps, device=device).unsqueeze(0) < completion_len.unsqueeze(1)
    ).long()
    prompt_ids = input_ids.repeat_interleave(num_samples, dim=0)
    prompt_mask = full_mask[:, :prompt_len]
    return SampleOutput(
        sequences=torch.cat([prompt_ids, completion], dim=1),
        attention_mask=torch.cat([prompt_mask, completion_mask], dim=1),
        completion_mask=completion_mask,
        logprobs=logprobs,
        raw_logprobs=raw_logprobs,
        prompt_length=prompt_len,
        finish_reasons=finish,
    )
