"""A hand-written forward for Llama-family causal LMs: the sampler's fast path.

A decode step feeds one token per row. Through the Hugging Face forward, much of that step on
CPU was overhead around the matrix products (module calls, mask building, cache bookkeeping,
``repeat_kv`` copies, a fresh KV-cache tensor every step). :class:`LlamaDecoder` runs the same
arithmetic as the HF modules with a few tensor ops per layer:

- the weights are read from the HF modules at the start of each sampling call. On CPU the
  projections that read the same input run as one product on a packed oneDNN copy (q|k|v,
  gate|up: :func:`rlalign.lm.fast_linear.packed_linear`, which the HF path's
  ``inference_linears`` packs layer by layer: the same amount of copied weights); elsewhere
  each module's own ``forward`` runs. Norms and embeddings read the parameters in place;
- the prompt (prefill) runs its projections on the real tokens only, packed without padding,
  and writes its keys/values straight into the cache;
- the KV cache is allocated once (and grown by doubling) and attention reads it in place, the
  *whole* allocation, with the columns not yet written masked out: the batched one-row
  matmuls of decoding run faster on CPU on dense operands than on a view of the filled prefix,
  which CPU bf16 kernels even copy first (measured on the 28M bench model: 12% faster than a
  prefix view in fp32, 15% in bf16). Growth by doubling keeps that waste under 2x when rows
  end early;
- grouped-query attention reads the shared key/value heads in place (query heads grouped per
  key head) instead of repeating them;
- rotary cos/sin for every row and step, and the padding mask, are built once per call.

Every op is the one the HF module runs, in the same order and dtype, so in fp32 the logits
equal the HF forward's to rounding, and under bf16 autocast (or bf16 weights) the dtype of each
intermediate is the same as in HF's eager attention path.

:func:`unsupported_reason` says why a model cannot use this path (another architecture, a
rope scaling, a sliding window, hooks, adapters, a GPU...); the sampler then keeps the HF
forward. CPU only: that is where it was built, measured and tested.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rlalign.lm.fast_linear import packed_linear

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
    for layer in layers:
        sa = layer.self_attn
        q, k, v = (
            getattr(getattr(sa, n), "out_features", 0) for n in ("q_proj", "k_proj", "v_proj")
        )
        if sa.head_dim != head_dim or k != v or k % head_dim or q % k or k == 0:
            return "attention heads of unexpected shapes"
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
    if params[0].device.type != "cpu":
        # Built and measured for CPU decoding (its cache layout is chosen for CPU kernels),
        # and not tested on a GPU: GPUs keep the HF forward.
        return f"parameters on {params[0].device.type}, not cpu"
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return "global forward hooks are registered"
    for m in model.modules():
        hooks = [h for h in m._forward_hooks.values() if not _capture_hook(h)]
        if hooks or m._forward_pre_hooks or "forward" in m.__dict__:
            return f"{type(m).__name__} has forward hooks or a replaced forward"
    return None


def _capture_hook(hook: Any) -> bool:
    """Whether ``hook`` is one of transformers' output-capturing hooks.

    transformers (5.x) installs them on every decoder layer the first time a forward asks for
    hidden states (PPO's value head does, at its first training step), and leaves them there.
    They record a layer's output only while such a forward runs and never change it, so the
    decoder, which asks for no hidden states, computes what the model does with them in place.
    Were they counted, every rollout after a run's first value-head forward would leave this
    path for the HF forward: slower, and a run resumed at a rollout boundary would sample
    its first rollout on the other path, with other rounding, than the run that never stopped.
    """
    return getattr(hook, "__module__", "") == "transformers.utils.output_capturing"


class LlamaDecoder:
    """Prefill and decode steps of a Llama-family model on its own preallocated KV cache.

    Build it inside the sampler's autocast block (if any) and without gradients; ``dtype`` is
    the compute dtype of the packed projections (as for ``inference_linears``), ``cache_dtype``
    that of the keys and values.
    """

    def __init__(
        self,
        model: Any,
        *,
        rows: int,
        prompt_len: int,
        steps: int,
        dtype: torch.dtype | None,
        cache_dtype: torch.dtype,
    ) -> None:
        inner = model.model
        config = model.config
        layers = list(inner.layers[: config.num_hidden_layers])
        attn = layers[0].self_attn
        # Head counts from the projections' shapes, as HF's attention reshapes them.
        self.head_dim = attn.head_dim
        self.heads = attn.q_proj.out_features // self.head_dim
        self.kv_heads = attn.k_proj.out_features // self.head_dim
        self.groups = self.heads // self.kv_heads
        self.scaling = attn.scaling
        self.rows = rows
        self.prompt_len = prompt_len
        self.capacity = prompt_len + steps
        self.embed = inner.embed_tokens.weight
        self.rotary = inner.rotary_emb
        self.dtype = self.embed.dtype
        self.device = self.embed.device
        # Each layer: (norm1 weight, eps1, qkv, o, norm2 weight, eps2, gate|up, down).
        self.layers = []
        for layer in layers:
            sa, mlp = layer.self_attn, layer.mlp
            self.layers.append(
                (
                    layer.input_layernorm.weight,
                    layer.input_layernorm.variance_epsilon,
                    _projection([sa.q_proj, sa.k_proj, sa.v_proj], dtype, rows),
                    _projection([sa.o_proj], dtype, rows),
                    layer.post_attention_layernorm.weight,
                    layer.post_attention_layernorm.variance_epsilon,
                    _projection([mlp.gate_proj, mlp.up_proj], dtype, rows),
                    _projection([mlp.down_proj], dtype, rows),
                )
            )
        self.norm = (inner.norm.weight, inner.norm.variance_epsilon)
        self.lm_head = _projection([model.lm_head], dtype, rows)
        self.q_width = self.heads * self.head_dim
        self.qk_heads = self.heads + self.kv_heads

        # Attention reads the whole allocation (see the module docstring), so the columns not
        # yet written must be finite: zeros. Room for 32 new tokens first, then doubling.
        room = prompt_len + min(steps, 32)
        shape = (rows, self.kv_heads, room, self.head_dim)
        self.keys = [torch.zeros(shape, dtype=cache_dtype, device=self.device) for _ in layers]
        self.values = [torch.zeros(shape, dtype=cache_dtype, device=self.device) for _ in layers]
        self.min_value = torch.finfo(self.dtype).min
        self.mask: torch.Tensor | None = None  # [rows, 1, 1, room], set by prefill
        self.cos = self.sin = None  # [steps, rows, 1, head_dim], set by prefill

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_samples: int
    ) -> torch.Tensor:
        """Run the left-padded prompts ``[B, P]`` (``B * num_samples == rows``), fill the cache
        (rows ``i*n .. i*n+n-1`` share prompt ``i``) and return the logits after each prompt,
        ``[rows, vocab]``. Positions count real tokens only, as in the sampler."""
        batch, width = input_ids.shape
        real = attention_mask.bool()
        where = real.flatten().nonzero().squeeze(1)  # the real tokens in the [B*P] grid
        positions = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        next_pos = attention_mask.sum(dim=1).repeat_interleave(num_samples)
        steps = self.capacity - self.prompt_len
        decode_pos = next_pos.unsqueeze(0) + torch.arange(steps, device=self.device).unsqueeze(1)
        cos, sin = self._rope(decode_pos)
        self.cos, self.sin = cos.unsqueeze(2), sin.unsqueeze(2)
        room = self.keys[0].shape[2]
        mask = torch.full(
            (self.rows, 1, 1, room), self.min_value, dtype=self.dtype, device=self.device
        )
        mask[:, 0, 0, :width].masked_fill_(real.repeat_interleave(num_samples, dim=0), 0.0)
        self.mask = mask  # new tokens' columns are opened as they are written

        # HF eager attention's mask over the prompt block: causal, padding keys excluded.
        causal = torch.ones(width, width, dtype=torch.bool, device=self.device).tril()
        allowed = causal.unsqueeze(0) & real.unsqueeze(1)  # [B, query, key]
        block_mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        block_mask = block_mask.masked_fill(~allowed, self.min_value)[:, None, None]
        cos, sin = self._rope(positions.flatten()[where])
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [T, 1, head_dim]
        tokens = where.numel()
        kv_heads, head_dim, groups = self.kv_heads, self.head_dim, self.groups
        x = F.embedding(input_ids.flatten()[where], self.embed)  # [T, hidden]
        for i, (w1, eps1, qkv_proj, o_proj, w2, eps2, gate_up, down) in enumerate(self.layers):
            qkv = qkv_proj(_rms_norm(x, w1, eps1))
            qk = _rotary(
                qkv[:, : self.qk_heads * head_dim].view(tokens, self.qk_heads, -1), cos, sin
            )
            # Back to the padded [B, P] grid for attention (padding stays zero).
            grid = qk.new_zeros(batch * width, self.qk_heads + kv_heads, head_dim)
            grid[where, : self.qk_heads] = qk
            grid[where, self.qk_heads :] = (
                qkv[:, self.qk_heads * head_dim :].view(tokens, kv_heads, head_dim).to(grid.dtype)
            )
            grid = grid.view(batch, width, self.qk_heads + kv_heads, head_dim)
            q = grid[:, :, : self.heads].unflatten(2, (kv_heads, groups)).permute(0, 2, 3, 1, 4)
            k = grid[:, :, self.heads : self.qk_heads].transpose(1, 2)  # [B, kv, P, D]
            v = grid[:, :, self.qk_heads :].transpose(1, 2)
            if qkv.dtype != grid.dtype:  # autocast: v stays in the projection's dtype, as in HF
                v = v.to(qkv.dtype)
            for cache, new in ((self.keys[i], k), (self.values[i], v)):
                cache.view(batch, num_samples, *cache.shape[1:])[..., :width, :].copy_(
                    new.unsqueeze(1)
                )
            scores = torch.matmul(q, k.unsqueeze(2).transpose(-1, -2)) * self.scaling
            scores = scores + block_mask
            probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            attn = torch.matmul(probs, v.unsqueeze(2))  # [B, kv, groups, P, D]
            attn = attn.permute(0, 3, 1, 2, 4).reshape(batch * width, self.q_width)[where]
            x = x + o_proj(attn)
            x = x + _mlp(_rms_norm(x, w2, eps2), gate_up, down)
        last = real.sum(dim=1).cumsum(dim=0) - 1  # each prompt's last token (left padding)
        logits = self.lm_head(_rms_norm(x[last], *self.norm))
        return logits.repeat_interleave(num_samples, dim=0)

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin ``[..., head_dim]`` of ``positions``, as HF's rotary embedding computes
        them; sin carries rotate_half's sign: rotate_half(x) * sin == swap_halves(x) * it."""
        inv_freq = self.rotary.inv_freq.to(device=self.device, dtype=torch.float)
        freqs = positions[..., None].float() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.rotary.attention_scaling).to(self.dtype)
        sin = (emb.sin() * self.rotary.attention_scaling).to(self.dtype)
        half = self.head_dim // 2
        return cos, torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)

    def _grow(self) -> None:
        """Double the room for new tokens; the written columns are copied."""
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
        if col >= self.keys[0].shape[2]:
            self._grow()
        self.mask[..., col] = 0.0
        cos, sin = self.cos[t], self.sin[t]
        mask = self.mask
        kv_heads, head_dim = self.kv_heads, self.head_dim
        x = F.embedding(tokens, self.embed)
        for i, (w1, eps1, qkv_proj, o_proj, w2, eps2, gate_up, down) in enumerate(self.layers):
            qkv = qkv_proj(_rms_norm(x, w1, eps1))
            qk = _rotary(qkv[:, : self.qk_heads * head_dim].view(rows, self.qk_heads, -1), cos, sin)
            keys, values = self.keys[i], self.values[i]
            keys[:, :, col] = qk[:, self.heads :]
            values[:, :, col] = qkv[:, self.qk_heads * head_dim :].view(rows, kv_heads, head_dim)
            # Query heads j*groups .. j*groups+groups-1 attend with key/value head j.
            q = qk[:, : self.heads].view(rows, kv_heads, self.groups, head_dim)
            scores = torch.matmul(q, keys.transpose(2, 3)) * self.scaling
            scores = scores + mask
            probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            attn = torch.matmul(probs, values)
            x = x + o_proj(attn.view(rows, self.q_width))
            x = x + _mlp(_rms_norm(x, w2, eps2), gate_up, down)
        return self.lm_head(_rms_norm(x, *self.norm))


def _projection(
    modules: list[nn.Linear], dtype: torch.dtype | None, rows: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """One forward for linear layers that read the same input, their outputs concatenated:
    one product on a packed copy of the stacked weights where oneDNN packing applies, else
    each layer's own forward."""
    if len(modules) == 1:
        weight, bias = modules[0].weight, modules[0].bias
    else:
        weight = torch.cat([m.weight for m in modules])
        bias = None
        if any(m.bias is not None for m in modules):
            bias = torch.cat(
                [
                    m.bias if m.bias is not None else m.weight.new_zeros(m.out_features)
                    for m in modules
                ]
            )
    packed = packed_linear(weight, bias, dtype=dtype, rows=rows)
    if packed is not None:
        return packed
    if len(modules) == 1:
        return modules[0].forward
    forwards = [m.forward for m in modules]
    return lambda x: torch.cat([f(x) for f in forwards], dim=-1)


def _mlp(
    h: torch.Tensor, gate_up: Callable[[torch.Tensor], torch.Tensor], down: Callable
) -> torch.Tensor:
    """HF's SwiGLU MLP: ``down(silu(gate(h)) * up(h))``."""
    gate, up = gate_up(h).chunk(2, dim=-1)
    return down(F.silu(gate) * up)


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
    swapped = x.unflatten(2, (2, dim // 2)).flip(2).view(rows, heads, dim)
    return x * cos + swapped * sin
