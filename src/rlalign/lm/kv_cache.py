"""A KV cache that decodes into memory allocated once, and the dtypes it stores.

HF's ``DynamicLayer.update`` concatenates the whole cache into a freshly allocated tensor at
every step; on CPU those fresh pages are a large share of a small model's decode time.
:class:`PreallocatedLayer` sizes its buffers for prompt + all new tokens up front, and
:func:`preallocate` swaps it in for the plain layers of a cache the model returned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel


try:
    from transformers.cache_utils import DynamicLayer
except ImportError:  # transformers without cache layers: their cache is left as it is
    DynamicLayer = None


if DynamicLayer is None:
    PreallocatedLayer = None
else:

    class PreallocatedLayer(DynamicLayer):
        """A ``DynamicLayer`` that decodes into memory allocated once, instead of ``torch.cat``.

        Two modes, both sized for prompt + all new tokens up front:

        - ``dense=False``: one ``[B, H, capacity, D]`` buffer; each step writes one column, and the
          keys/values handed to attention are strided views of the filled part (no copy at all).
        - ``dense=True``: two flat buffers used in turn; each step concatenates (with ``out=``) into
          the other one, so attention gets *contiguous* tensors without any allocation. For
          kernels that copy strided inputs anyway (CPU bf16 matmul).
        """

        def __init__(
            self,
            keys: torch.Tensor,
            values: torch.Tensor,
            capacity: int,
            dense: bool,
            dtype: torch.dtype | None = None,
        ) -> None:
            super().__init__()
            self._dtype = dtype
            if dtype is not None:
                keys, values = keys.to(dtype), values.to(dtype)
            batch, heads, length, _ = keys.shape
            self._dense = dense
            self._capacity = capacity
            self._len = length
            if dense:
                # [2 buffers, numel at capacity]; contiguous [B, H, L, D] views are carved out.
                self._kbuf = keys.new_empty(2, batch * heads * capacity * keys.shape[-1])
                self._vbuf = values.new_empty(2, batch * heads * capacity * values.shape[-1])
                self._turn = 0
                self.keys, self.values = keys.contiguous(), values.contiguous()
            else:
                self._k = keys.new_empty(batch, heads, capacity, keys.shape[-1])
                self._v = values.new_empty(batch, heads, capacity, values.shape[-1])
                self._k[:, :, :length] = keys
                self._v[:, :, :length] = values
                self.keys, self.values = self._k[:, :, :length], self._v[:, :, :length]
            self.device = keys.device
            self.is_initialized = True

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            end = self._len + key_states.shape[-2]
            if self._dtype is not None:
                key_states, value_states = key_states.to(self._dtype), value_states.to(self._dtype)
            if end > self._capacity:  # more tokens than planned: plain concatenation
                self._len = end
                return super().update(key_states, value_states, *args, **kwargs)
            if self._dense:
                self._turn ^= 1
                self.keys = _cat_into(self._kbuf[self._turn], self.keys, key_states)
                self.values = _cat_into(self._vbuf[self._turn], self.values, value_states)
            else:
                self._k[:, :, self._len : end] = key_states
                self._v[:, :, self._len : end] = value_states
                self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
            self._len = end
            return self.keys, self.values


def _cat_into(flat: torch.Tensor, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``torch.cat([old, new], dim=2)`` written into the front of the 1-D buffer ``flat``."""
    batch, heads, length, dim = old.shape
    out = flat[: batch * heads * (length + new.shape[2]) * dim].view(
        batch, heads, length + new.shape[2], dim
    )
    return torch.cat([old, new], dim=2, out=out)


def preallocate(
    cache: Any, capacity: int, *, dense: bool, dtype: torch.dtype | None = None
) -> None:
    """Swap the plain dynamic layers of ``cache`` for preallocated ones (others untouched),
    storing keys and values in ``dtype`` (default: as they come)."""
    layer_cls = PreallocatedLayer
    layers = getattr(cache, "layers", None)
    if layer_cls is None or not isinstance(layers, list):
        return
    base = DynamicLayer  # sliding/quantised subclasses keep their own update
    for i, layer in enumerate(layers):
        keys = getattr(layer, "keys", None)
        if type(layer) is base and isinstance(keys, torch.Tensor) and keys.dim() == 4:
            layers[i] = layer_cls(layer.keys, layer.values, capacity, dense, dtype)


def dense_cache_pays(model: PreTrainedModel, autocast_dtype: torch.dtype | None) -> bool:
    """Whether attention should get contiguous keys/values (``dense=True`` above).

    fp32 kernels (and GPU ones) read strided views in place, so the copy-free mode wins there;
    CPU bf16/fp16 matmuls copy a strided operand first (measured ~3x slower than on a
    contiguous one), so there one copy into a ready buffer is cheaper.
    """
    param = next(model.parameters())
    low = {torch.bfloat16, torch.float16}
    return param.device.type == "cpu" and (param.dtype in low or autocast_dtype in low)


def cache_dtype(
    model: PreTrainedModel, autocast_dtype: torch.dtype | None, attention: str | None
) -> torch.dtype | None:
    """bf16 for the KV cache when autocast would cast it to bf16 at every step anyway.

    Under CPU autocast the keys come out of the rotary embedding in fp32, and eager attention
    reads the cache only through ``matmul``, which autocast runs in bf16 after casting its
    inputs: a cache stored in bf16 gives the same bits, without re-casting (and copying) the
    whole cache at every step. Other attention kernels keep the cache as it comes.
    """
    param = next(model.parameters())
    effective = attention or getattr(model.config, "_attn_implementation", None)
    if autocast_dtype == torch.bfloat16 and param.device.type == "cpu" and effective == "eager":
        return torch.bfloat16
    return None


def decode_cache_dtype(model: PreTrainedModel, autocast_dtype: torch.dtype | None) -> torch.dtype:
    """The fast decoder's KV-cache dtype: autocast's low precision when it is on (attention's
    matmuls would cast the cache to it at every step: same bits), else the weights'."""
    if autocast_dtype is not None and autocast_dtype != torch.float32:
        return autocast_dtype
    return next(model.parameters()).dtype
