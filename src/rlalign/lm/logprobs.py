"""Per-token log-probs of given tokens: the policy, reference and reward-prior passes.

One forward pass of the causal LM gives, for each completion token ``a_t`` after the state
``s_t`` (the prompt plus the tokens before it): ``log pi(a_t | s_t)`` (at the sampling
temperature), the entropy of ``pi(. | s_t)``, and, with a value head on the last hidden state,
``V(s_t)`` (:func:`completion_forward`, what the RL loss reads).

:func:`sequence_logprobs` scores given tokens with one full forward pass (the reference
log-probs of RL); :func:`completion_logits` is that forward, with the prompts that several
completions share encoded once; :func:`token_logprobs` turns logits into log-probs (and
entropies) a few rows at a time, in fp32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from rlalign.dist import unwrap_model
from rlalign.errors import UserError
from rlalign.lm.forward import cache_kwarg, context_length, keep_logits, returned_cache
from rlalign.lm.value_head import PolicyWithValueHead

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def sequence_logprobs(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    start: int = 1,
    temperature: float = 1.0,
    chunk_rows: int = 8,
) -> torch.Tensor:
    """Per-token log-probs of ``input_ids`` under ``model``, with one full forward pass.

    Element ``[b, j]`` of the result is ``log p(input_ids[b, start + j] | input_ids[b, :start
    + j])``: set ``start`` to the prompt width ``P`` of a :class:`SampleOutput` to score exactly
    its completion tokens (aligned with ``completion_mask``). Positions for left-padded rows are
    derived from ``attention_mask``, as in :func:`sample`. Gradients flow when enabled (policy
    log-probs); wrap in ``torch.no_grad()`` for reference log-probs.

    Memory: only the logits of positions ``start-1 .. L-2`` are computed (``logits_to_keep``),
    and the normaliser is a logsumexp taken ``chunk_rows`` rows at a time in fp32; no full-vocab
    fp32 log-softmax tensor is built for the whole batch.

    Returns:
        fp32 ``[B, L - start]``; entries where ``attention_mask`` is 0 are meaningless (mask them).
    """
    if input_ids.dim() != 2:
        raise UserError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    length = input_ids.shape[1]
    if not 1 <= start < length:
        raise UserError(f"start must be in [1, {length - 1}] for sequences of length {length}")
    if temperature <= 0:
        raise UserError(f"temperature must be > 0 for log-probs, got {temperature}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = attention_mask.long()
    limit = context_length(model)
    if limit is not None and length > limit:
        raise UserError(f"sequence of {length} tokens exceeds the model's context of {limit}")
    out = completion_logits(model, input_ids, attention_mask, start)
    return token_logprobs(out.logits, input_ids[:, start:], temperature, chunk_rows)[0]


def completion_logits(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    start: int,
    *,
    output_hidden_states: bool = False,
    share_prompts: bool = True,
) -> Any:
    """A forward pass whose ``logits`` are those predicting tokens ``start .. L-1``.

    Positions come from the attention mask (left padding behaves like no padding); the LM head
    runs only on the positions needed (``logits_to_keep``) where the model supports it. The
    returned output's ``logits`` are replaced by ``[B, L - start, V]``: element ``j`` predicts
    token ``start + j``. Per-position outputs (hidden states, a value head's ``state_values``)
    end at position ``L-1``: take their last ``L - start + 1`` positions.

    With ``share_prompts``, rows whose prompts are identical (RL's ``num_generations``
    completions of one prompt) share one encoding of the prompt, as they do when sampling:
    tokens ``0 .. start-2`` of each distinct prompt run once, their keys/values are copied to
    its rows (a differentiable gather, so gradients flow through them), and the rest of every
    row runs on that cache. For 8 prompts x 4 completions of 24 + 32 tokens this is a third
    fewer tokens through the model (forward and backward). Skipped when no prompt repeats, for
    a model under DDP/FSDP (their gradient hooks expect one forward per backward), and for a
    cache without batch selection. The per-position outputs are then those of positions
    ``start-1 .. L-1`` only.
    """
    attention_mask = attention_mask.long()
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    keep = input_ids.shape[1] - start + 1  # positions start-1 .. L-1; the last one is unused
    shared = (
        _shared_prompt_cache(model, input_ids, attention_mask, position_ids, start)
        if share_prompts
        else None
    )
    if shared is None:
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            output_hidden_states=output_hidden_states,
            **keep_logits(model, keep),
        )
    else:
        out = model(
            input_ids=input_ids[:, start - 1 :],
            attention_mask=attention_mask,
            position_ids=position_ids[:, start - 1 :],
            use_cache=True,
            output_hidden_states=output_hidden_states,
            **{cache_kwarg(model): shared},
            **keep_logits(model, keep),
        )
    out.logits = out.logits[:, -keep:-1, :]
    return out


def _shared_prompt_cache(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    start: int,
) -> Any:
    """The KV cache of tokens ``0 .. start-2`` of every row, computed once per distinct prompt
    (see :func:`completion_logits`); None when sharing does not apply."""
    if start < 2 or _is_data_parallel(model):
        return None
    prefix = torch.cat([input_ids[:, : start - 1], attention_mask[:, : start - 1]], dim=1)
    distinct, inverse = torch.unique(prefix, dim=0, return_inverse=True)
    if distinct.shape[0] == input_ids.shape[0]:
        return None
    first = torch.full((distinct.shape[0],), input_ids.shape[0], dtype=torch.long)
    first = first.to(inverse.device).scatter_reduce(
        0, inverse, torch.arange(input_ids.shape[0], device=inverse.device), "amin"
    )  # one row of each distinct prompt
    out = model(
        input_ids=input_ids[first, : start - 1],
        attention_mask=attention_mask[first, : start - 1],
        position_ids=position_ids[first, : start - 1],
        use_cache=True,
        **keep_logits(model, 1),
    )
    cache = returned_cache(out)
    if cache is None or not hasattr(cache, "batch_select_indices"):
        return None
    cache.batch_select_indices(inverse)
    return cache


def _is_data_parallel(model: Any) -> bool:
    """DDP or FSDP2 around (or inside) ``model``."""
    from torch.nn.parallel import DistributedDataParallel

    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch built without distributed
        FSDPModule = ()
    if isinstance(model, DistributedDataParallel):
        return True
    modules = model.modules() if isinstance(model, torch.nn.Module) else []
    return any(isinstance(m, FSDPModule) for m in modules)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """fp32 for bf16/fp16 (the log-probs of RL need its digits); fp64 stays fp64."""
    return x if x.dtype == torch.float64 else x.float()


def token_logprobs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    chunk_rows: int = 8,
    *,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``log softmax(logits / T)`` at ``targets`` (and the entropy of each position).

    In fp32, or fp64 when the logits are fp64: bf16/fp16 logits are upcast, ``chunk_rows`` rows
    at a time, so no full-vocabulary fp32 tensor is built for the whole batch. The entropy is
    computed without gradients (a metric).
    """
    logps, entropies = [], []
    for lo in range(0, logits.shape[0], chunk_rows):
        chunk = _at_least_fp32(logits[lo : lo + chunk_rows])
        if temperature != 1.0:
            chunk = chunk / temperature
        norm = chunk.logsumexp(dim=-1)
        picked = chunk.gather(-1, targets[lo : lo + chunk_rows].unsqueeze(-1)).squeeze(-1)
        logps.append(picked - norm)
        if with_entropy:
            with torch.no_grad():
                entropies.append(norm - (torch.softmax(chunk, dim=-1) * chunk).sum(dim=-1))
    return torch.cat(logps), torch.cat(entropies) if with_entropy else None


def completion_forward(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    start: int,
    *,
    temperature: float = 1.0,
    with_values: bool = False,
    with_entropy: bool = False,
    chunk_rows: int = 8,
    untempered_rows: int = 0,
) -> dict[str, torch.Tensor]:
    """Log-probs (``logp``), optionally ``entropy`` and ``values``, of tokens ``start..L-1``.

    ``input_ids`` are left-padded prompts followed by completions (the sampler's layout);
    positions come from the attention mask. Element ``j`` of each output belongs to token
    ``start + j``: it is computed from the model's output at position ``start + j - 1``.
    The forward and the log-probs are :func:`completion_logits` and
    :func:`token_logprobs`, the same as :func:`sequence_logprobs`.
    The last ``untempered_rows`` rows (PPO-ptx text riding in the same forward) get their
    log-probs at temperature 1, and no entropy (``entropy`` covers the other rows only).
    """
    core = unwrap_model(model)
    if with_values and not isinstance(core, PolicyWithValueHead):
        raise ValueError("values need a PolicyWithValueHead")
    # Through the wrappers (DDP must run the forward) unless only the LM part is wanted.
    if isinstance(core, PolicyWithValueHead) and not with_values:
        model = core.policy
    out = completion_logits(model, input_ids, attention_mask, start)
    targets, split = input_ids[:, start:], input_ids.shape[0] - untempered_rows
    logp, entropy = token_logprobs(
        out.logits[:split], targets[:split], temperature, chunk_rows, with_entropy=with_entropy
    )
    if untempered_rows:
        plain, _ = token_logprobs(out.logits[split:], targets[split:], 1.0, chunk_rows)
        logp = torch.cat([logp, plain])
    result = {"logp": logp}
    if entropy is not None:
        result["entropy"] = entropy
    if with_values:
        keep = input_ids.shape[1] - start + 1  # the outputs end at L-1: positions start-1..L-2
        result["values"] = _at_least_fp32(out.state_values[:, -keep:-1])
    return result
