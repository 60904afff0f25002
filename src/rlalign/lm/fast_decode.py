"""A hand-written decode step for Llama-family causal LMs: the sampler's fast path.

A decode step feeds one token per row. Through the Hugging Face forward, two thirds of that
step on CPU was per-op overhead around the matrix products (module calls, mask building, cache
bookkeeping, ``repeat_kv`` copies), the rest the products themselves. :class:`LlamaDecoder`
runs the same arithmetic as the HF modules with a few tensor ops per layer:

- the weights are the HF modules' own: each projection is called through its ``forward``
  (inside :func:`rlalign.lm.fast_linear.inference_linears`, the packed oneDNN copy), norms and
  embeddings read the parameters in place;
- the KV cache is allocated once (and grown by doubling) and attention reads it in place. On
  CPU it reads the *whole* allocation, the columns not yet written masked out: the batched
  one-row matmuls of decoding run faster on dense operands than on a view of the filled
  prefix, which CPU bf16 kernels even copy first (measured on the 28M bench model: 12% faster
  than a prefix view in fp32, 15% in bf16). Growth by doubling keeps that waste under 2x when
  rows end early. GPUs read a view of the filled prefix;
- grouped-query attention reads the shared key/value heads in place (query heads grouped per
  key head) instead of repeating them;
- rotary cos/sin for every row and step, and the padding mask, are built once per call.

Every op is the one the HF module runs, in the same order and dtype, so in fp32 the logits
equal the HF forward's to rounding, and under bf16 autocast (or bf16 weights) the dtype of each
intermediate is the same as in HF's eager attention path.

Only the decode steps run here: the prompt goes through the HF forward once (prefill) and its
keys/values are copied in. :func:`unsupported_reason` says why a model cannot use this path;
the sampler then keeps the HF forward.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

# model_type -> the class names whose forward this module reproduces (same structure: RMSNorm,
# default rotary embedding, grouped-query attention with optional q/k/v bias, SwiGLU MLP).
_SUPPORTED = {
    "llama": ("LlamaForCausalLM", "LlamaRMSNorm"),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2RMSNorm"),
    "mistral": ("MistralForCausalLM", "MistralRMSNorm"),
}
_PROJECTIONS = (
    ("self_attn", "q_proj"),
    ("self_attn", "k_proj"),
    ("self_attn", "v_proj"),
    ("self_attn", "o_proj"),
    ("mlp", "gate_proj"),
    ("mlp", "up_proj"),
    ("mlp", "down_proj"),
)


def unsupported_reason(model: Any, capacity: int) -> str | None:
    """Why ``model`` cannot decode through :class:`LlamaDecoder` (None: it can).

    ``capacity`` is the longest sequence the call will reach (prompt + new tokens): a sliding
    window at least that long never masks anything. Checked before the sampler packs the linear
    layers, so that a forward replaced by anything else (a hook library, an adapter) is seen.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in _SUPPORTED:
        return f"model_type {model_type!r} is not one of {sorted(_SUPPORTED)}"
    lm_class, norm_class = _SUPPORTED[model_type]
    if type(model).__name__ != lm_class:
        return f"{type(model).__name__} is not {lm_class}"
    if config.hidden_act not in ("silu", "swish"):
        return f"hidden_act {config.hidden_act!r} (only silu)"
    if model.training and getattr(config, "attention_dropout", 0.0):
        return "attention dropout in training mode"
    if (getattr(config, "pretraining_tp", 1) or 1) != 1:
        return "pretraining_tp > 1"
    inner = getattr(model, "model", None)
    rotary = getattr(inner, "rotary_emb", None)
    if getattr(rotary, "rope_type", None) != "default":
        return f"rope type {getattr(rotary, 'rope_type', None)!r} (only default)"
    if not isinstance(getattr(rotary, "inv_freq", None), torch.Tensor):
        return "no rotary inv_freq buffer"
    layers = list(inner.layers[: config.num_hidden_layers])
    if not layers:
        return "no decoder layers"
    head_dim = layers[0].self_attn.head_dim
    if rotary.inv_freq.numel() * 2 != head_dim:
        return "partial rotary embedding"
    windows = [getattr(layer.self_attn, "sliding_window", None) for layer in layers]
    if model_type == "mistral":
        windows.append(getattr(config, "sliding_window", None))
    if any(w is not None and w < capacity for w in windows):
        return "sliding-window attention shorter than the sequence"
    if type(inner.embed_tokens) is not nn.Embedding or inner.embed_tokens.max_norm is not None:
        return "embedding is not a plain nn.Embedding"
    if type(inner.norm).__name__ != norm_class:
        return f"final norm {type(inner.norm).__name__} is not {norm_class}"
    linears = [model.lm_head]
    norms = [inner.norm]
    for layer in layers:
        norms += [layer.input_layernorm, layer.post_attention_layernorm]
        linears += [getattr(getattr(layer, parent), name) for parent, name in _PROJECTIONS]
    if any(type(norm).__name__ != norm_class for norm in norms):
        return f"a layer norm is not {norm_class}"
    if any(type(linear) is not nn.Linear for linear in linears):
        return "a projection is not a plain nn.Linear (adapter or quantised layer)"
    modules = [inner.embed_tokens, *norms, *linears]
    params = [p for m in modules for p in m.parameters(recurse=False)]
    if any(type(p) not in (torch.Tensor, nn.Parameter) for p in params):
        return "parameters are not plain tensors (sharded or quantised)"
    if len({(p.device, p.dtype) for p in params}) != 1:
        return "parameters on several devices or in several dtypes"
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return "global forward hooks are registered"
    for m in model.modules():
        if m._forward_hooks or m._forward_pre_hooks or "forward" in m.__dict__:
            return f"{type(m).__name__} has forward hooks or a replaced forward"
    return None


def _layer_kv(cache: Any, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Keys and values ``[B, kv_heads, P, head_dim]`` of one layer of an HF cache."""
    layers = getattr(cache, "layers", None)
    if isinstance(layers, list) and index < len(layers):
        keys, values = getattr(layers[index], "keys", None), getattr(layers[index], "values", None)
    else:  # transformers 4.x DynamicCache
        try:
            keys, values = cache.key_cache[index], cache.value_cache[index]
        except (AttributeError, IndexError):
            return None
    if not isinstance(keys, torch.Tensor) or keys.dim() != 4:
        return None
    return keys, values


class LlamaDecoder:
    """Decode steps of a Llama-family model on its own preallocated KV cache.

    Build it after the HF prefill, inside the sampler's ``inference_linears`` and autocast
    blocks (the projections' forwards are read once, here), with :meth:`from_prefill`.
    """

    def __init__(
        self,
        model: Any,
        *,
        rows: int,
        prompt_len: int,
        steps: int,
        next_pos: torch.Tensor,
        prompt_mask: torch.Tensor,
        cache_dtype: torch.dtype,
    ) -> None:
        inner = model.model
        config = model.config
        layers = list(inner.layers[: config.num_hidden_layers])
        attn = layers[0].self_attn
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = attn.head_dim
        self.groups = self.heads // self.kv_heads
        self.scaling = attn.scaling
        self.prompt_len = prompt_len
        self.embed = inner.embed_tokens.weight
        dtype, device = self.embed.dtype, self.embed.device
        # Each layer: (norm1 weight, eps1, q, k, v, o, norm2 weight, eps2, gate, up, down).
        self.layers = [
            (
                layer.input_layernorm.weight,
                layer.input_layernorm.variance_epsilon,
                layer.self_attn.q_proj.forward,
                layer.self_attn.k_proj.forward,
                layer.self_attn.v_proj.forward,
                layer.self_attn.o_proj.forward,
                layer.post_attention_layernorm.weight,
                layer.post_attention_layernorm.variance_epsilon,
                layer.mlp.gate_proj.forward,
                layer.mlp.up_proj.forward,
                layer.mlp.down_proj.forward,
            )
            for layer in layers
        ]
        self.norm = (inner.norm.weight, inner.norm.variance_epsilon)
        self.lm_head: Callable[[torch.Tensor], torch.Tensor] = model.lm_head.forward

        self.rows = rows
        self.capacity = prompt_len + steps
        self.cache_dtype = cache_dtype
        # Whole-allocation attention (see the module docstring) where strided views are copied.
        self.dense = device.type == "cpu"
        room = prompt_len + min(steps, 32) if self.dense else self.capacity
        # Zeros in dense mode: unwritten columns are read (and masked), so they must be finite.
        alloc = torch.zeros if self.dense else torch.empty
        shape = (rows, self.kv_heads, room, self.head_dim)
        self.keys = [alloc(shape, dtype=cache_dtype, device=device) for _ in layers]
        self.values = [alloc(shape, dtype=cache_dtype, device=device) for _ in layers]
        # The additive mask of HF's eager attention (its dtype and minimum): 0 where attended,
        # the minimum on the prompt's padding and, in dense mode, on columns not yet written.
        self.min_value = torch.finfo(dtype).min
        mask = torch.full((rows, 1, 1, room), self.min_value, dtype=dtype, device=device)
        mask[:, 0, 0, :prompt_len].masked_fill_(prompt_mask.to(device) != 0, 0.0)
        if not self.dense:
            mask[..., prompt_len:] = 0.0
        self.mask = mask
        # cos/sin of every row's position at every step, as HF's rotary embedding computes them;
        # sin carries rotate_half's sign: rotate_half(x) * sin == swap_halves(x) * signed_sin.
        rotary = inner.rotary_emb
        positions = next_pos.to(device).unsqueeze(0) + torch.arange(steps, device=device).unsqueeze(
            1
        )
        freqs = positions[..., None].float() * rotary.inv_freq.to(device=device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * rotary.attention_scaling).to(dtype)
        sin = (emb.sin() * rotary.attention_scaling).to(dtype)
        half = self.head_dim // 2
        sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        self.cos = cos.unsqueeze(2)  # [steps, rows, 1, head_dim]
        self.sin = sin.unsqueeze(2)

    @classmethod
    def from_prefill(
        cls,
        model: Any,
        cache: Any,
        *,
        num_samples: int,
        steps: int,
        next_pos: torch.Tensor,
        prompt_mask: torch.Tensor,
        cache_dtype: torch.dtype,
    ) -> LlamaDecoder | None:
        """A decoder whose cache holds the prefill's keys/values, each prompt's repeated for
        its ``num_samples`` rows; None when the HF cache is not in a known layout."""
        num_layers = model.config.num_hidden_layers
        found = [_layer_kv(cache, i) for i in range(num_layers)]
        if any(kv is None for kv in found):
            logger.debug("fast decode off: unknown KV cache layout %s", type(cache).__name__)
            return None
        batch, _, prompt_len, _ = found[0][0].shape
        decoder = cls(
            model,
            rows=batch * num_samples,
            prompt_len=prompt_len,
            steps=steps,
            next_pos=next_pos,
            prompt_mask=prompt_mask,
            cache_dtype=cache_dtype,
        )
        for (keys, values), k, v in zip(found, decoder.keys, decoder.values, strict=True):
            # Rows i*n .. i*n+n-1 share prompt i: broadcast-copy, no repeated tensor.
            k.view(batch, num_samples, *k.shape[1:])[..., :prompt_len, :].copy_(keys.unsqueeze(1))
            v.view(batch, num_samples, *v.shape[1:])[..., :prompt_len, :].copy_(values.unsqueeze(1))
        return decoder

    def _grow(self) -> None:
        """Double the room for new tokens (dense mode); the written columns are copied."""
        old = self.keys[0].shape[2]
        room = min(self.capacity, self.prompt_len + 2 * (old - self.prompt_len))
        for cache in (self.keys, self.values):
            for i, tensor in enumerate(cache):
                grown = tensor.new_zeros(*tensor.shape[:2], room, tensor.shape[3])
                grown[:, :, :old] = tensor
                cache[i] = grown
        mask = self.mask.new_full((*self.mask.shape[:3], room), self.min_value)
        mask[..., :old] = self.mask
        self.mask = mask

    def step(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        """Logits ``[rows, vocab]`` after feeding ``tokens`` ``[rows]`` as the ``t``-th new
        token of every row (cache column ``prompt_len + t``)."""
        rows = self.rows
        col = self.prompt_len + t
        if self.dense:
            if col >= self.keys[0].shape[2]:
                self._grow()
            self.mask[..., col] = 0.0
            end = self.keys[0].shape[2]  # attend over the whole allocation (dense operands)
        else:
            end = col + 1  # attend over a view of the filled prefix
        cos, sin = self.cos[t], self.sin[t]
        mask = self.mask[..., :end]
        q_shape = (rows, self.heads, self.head_dim)
        kv_shape = (rows, self.kv_heads, self.head_dim)
        x = F.embedding(tokens, self.embed)
        for i, (w1, eps1, q_proj, k_proj, v_proj, o_proj, w2, eps2, gate, up, down) in enumerate(
            self.layers
        ):
            h = _rms_norm(x, w1, eps1)
            q = _rotary(q_proj(h).view(q_shape), cos, sin)
            keys, values = self.keys[i], self.values[i]
            keys[:, :, col] = _rotary(k_proj(h).view(kv_shape), cos, sin)
            values[:, :, col] = v_proj(h).view(kv_shape)
            # Query heads j*groups .. j*groups+groups-1 attend with key/value head j.
            q = q.view(rows, self.kv_heads, self.groups, self.head_dim)
            scores = torch.matmul(q, keys[:, :, :end].transpose(2, 3)) * self.scaling
            scores = scores + mask
            probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            attn = torch.matmul(probs, values[:, :, :end])
            x = x + o_proj(attn.view(rows, self.heads * self.head_dim))
            h = _rms_norm(x, w2, eps2)
            x = x + down(F.silu(gate(h)) * up(h))
        return self.lm_head(_rms_norm(x, *self.norm))


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF's ``LlamaRMSNorm``: normalise in fp32, cast back, then scale."""
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` for ``x`` ``[rows, heads, head_dim]``; ``sin`` holds
    rotate_half's sign, so swapping the halves of ``x`` completes rotate_half."""
    rows, heads, dim = x.shape
    swapped = x.view(rows, heads, 2, dim // 2).flip(2).view(rows, heads, dim)
    return x * cos + swapped * sin
