"""Inference weights for the rollout engine: every linear layer on oneDNN, weights packed once.

:func:`inference_linears` is a context manager for forward passes without gradients (sampling,
reference and behaviour log-probs). On entry it makes, for each ``nn.Linear`` (and GPT-2's
``Conv1D``) of a CPU model, a copy of the weight in the compute dtype, reordered into oneDNN's
blocked layout for the expected number of rows; inside the block the layer's forward runs
``torch.ops.mkldnn._linear_pointwise`` on that copy; on exit the layers are restored. The
model's own parameters are never modified, so the copy is always that of the current weights
(an RL rollout re-enters the block after every optimizer step: the inference weights follow
the training weights, like an inference engine's weight sync).

Why (measured on this project's 2-core AMD EPYC with AVX-512, torch 2.13, one thread):

- fp32: ``F.linear`` goes to MKL's sgemm, which reaches ~100 GFLOP/s here, while oneDNN's
  kernel reaches ~240 GFLOP/s on the same shapes (a decode step's ``[32, 256] x [256, 768]``
  as a prefill's ``[1792, 256] x [256, 768]``), with the same fp32 accuracy;
- bf16 autocast: autocast re-casts every fp32 weight to bf16 on *every* call, i.e. once per
  decode step; the copy made on entry is cast once per rollout, and its packed layout is
  another ~15-20% faster at 32 rows. The results are bit-identical to autocast's
  (``F.linear`` under autocast casts input, weight and bias to bf16 and runs the same oneDNN
  bf16 kernel), so sampling under this block draws from exactly the distribution that the
  autocast forward defines.

fp32 layers are switched by default only where that was measured to pay, on AMD x86 CPUs
(:func:`fp32_prefers_onednn`). Anything else (GPU models, layers of other types, FSDP's sharded
parameters, a torch build without oneDNN) keeps its own forward.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

_DTYPES = (torch.float32, torch.bfloat16)


def onednn_available() -> bool:
    """Whether this torch build has the oneDNN linear kernels used here."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


@functools.cache
def onednn_bf16_available() -> bool:
    """Whether oneDNN can pack bf16 weights on this CPU.

    Its bf16 reorder needs AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT; on an AVX2-only CPU (an
    AMD EPYC of the Zen 2 generation, say) it raises. There bf16 layers keep ``F.linear``,
    which autocast serves through a slower generic path. Probed once, on a tiny weight, rather
    than read off CPU flags: the probe asks the kernel itself.
    """
    if not onednn_available():
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight(torch.zeros(16, 16, dtype=torch.bfloat16), 16)
    except RuntimeError:
        return False
    return True


@functools.cache
def fp32_prefers_onednn() -> bool:
    """Whether fp32 linear layers should leave MKL's sgemm for oneDNN on this machine.

    True on AMD x86 CPUs, where MKL's sgemm was measured at ~0.4x oneDNN's speed (see the
    module docstring). Elsewhere (Intel, where MKL is at home; ARM, no MKL) fp32 keeps
    ``F.linear``: not measured here, so not changed. A fixed rule rather than a timing at
    start-up, so that every process of a run (and a resumed run) computes with the same
    kernels and gets the same bits.
    """
    if not onednn_available() or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return "AuthenticAMD" in line
    except OSError:
        pass
    return False


def _weight_and_bias(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """``(weight [out, in], bias)`` of a plain linear layer, or None for anything else."""
    if type(module) is nn.Linear:
        return module.weight, module.bias
    # transformers' Conv1D (GPT-2): y = x @ W + b with W stored [in, out].
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return module.weight.t(), module.bias
    return None


def _packable(weight: torch.Tensor) -> bool:
    return (
        type(weight) in (torch.Tensor, nn.Parameter)  # not a DTensor (FSDP) or a quantised one
        and weight.device.type == "cpu"
        and weight.dtype in _DTYPES
        and weight.dim() == 2
    )


def _packed_forward(
    weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, out_features: int
) -> Any:
    linear = torch.ops.mkldnn._linear_pointwise

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.dtype != dtype:
            x = x.to(dtype)
        if x.dim() == 1:
            return linear(x.unsqueeze(0), weight, bias, "none", [], "").squeeze(0)
        return linear(x, weight, bias, "none", [], "")

    forward.out_features = out_features  # type: ignore[attr-defined]
    return forward


@contextlib.contextmanager
def inference_linears(
    model: Any, *, dtype: torch.dtype | None = None, rows: int = 32, fp32: bool | None = None
) -> Iterator[int]:
    """Run the linear layers of ``model`` on packed oneDNN weights inside the block.

    Args:
        model: any module; its CPU ``nn.Linear`` / ``Conv1D`` layers with fp32 or bf16 weights
            are switched, every other layer is left alone.
        dtype: the compute dtype: ``None`` keeps each weight's dtype; ``torch.bfloat16`` casts
            weights (and inputs) to bf16, which is what autocast does.
        rows: the expected number of rows per call (batch x tokens): oneDNN picks its blocked
            layout for it. Any number of rows gives the same result.
        fp32: whether fp32 layers are switched too (default: :func:`fp32_prefers_onednn`);
            bf16 ones always are (packing replaces a cast at every call).

    Yields the number of layers switched (0 when oneDNN is unavailable or nothing matched).
    Only for forward passes without gradients: the packed kernel has no backward, so under
    ``torch.is_grad_enabled()`` nothing is switched.
    """
    root = _root_module(model)
    if root is None or torch.is_grad_enabled() or not onednn_available():
        yield 0
        return

    def packed(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> Any:
        return packed_linear(weight, bias, dtype=dtype, rows=rows, fp32=fp32)

    with _switched_forwards(root, packed) as count:
        yield count


def packed_linear(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    dtype: torch.dtype | None = None,
    rows: int = 32,
    fp32: bool | None = None,
) -> Any:
    """``x -> x weight^T + bias`` on a copy of ``weight`` ``[out, in]`` packed for oneDNN (see
    :func:`inference_linears` for the arguments), or None where that block would leave such a
    layer alone (no oneDNN, not a plain CPU tensor, fp32 where it does not pay). For
    inference only: the packed kernel has no backward."""
    if not onednn_available():
        return None
    if fp32 is None:
        fp32 = fp32_prefers_onednn()
    if not _packable(weight) or (bias is not None and not _packable_bias(bias)):
        return None
    compute = dtype or weight.dtype
    if compute not in _DTYPES or (compute == torch.float32 and not fp32):
        return None
    if compute == torch.bfloat16 and not onednn_bf16_available():
        return None
    with torch.no_grad():
        w = torch.ops.mkldnn._reorder_linear_weight(
            weight.detach().to(compute).contiguous(), max(1, rows)
        )
        b = None if bias is None else bias.detach().to(compute)
    return _packed_forward(w, b, compute, weight.shape[0])


@contextlib.contextmanager
def _switched_forwards(root: nn.Module, make_forward: Any) -> Iterator[int]:
    """Inside the block, each linear layer of ``root`` for which ``make_forward(module,
    weight, bias)`` returns a function runs that function as its ``forward``; the layers'
    own forwards come back on exit. Yields the number of layers switched."""
    switched: list[nn.Module] = []
    try:
        for module in root.modules():
            found = _weight_and_bias(module)
            if found is None or "forward" in module.__dict__:  # already wrapped by a hook lib
                continue
            forward = make_forward(module, *found)
            if forward is not None:
                module.forward = forward
                switched.append(module)
        yield len(switched)
    finally:
        for module in switched:
            del module.forward


def _root_module(model: Any) -> nn.Module | None:
    """The module tree to switch: the model, or the base model of a wrapper that is not a
    module (RL's LoRA reference, :class:`rlalign.train.lora.AdapterDisabled`)."""
    if isinstance(model, nn.Module):
        return model
    base = getattr(model, "get_base_model", None)
    return base() if callable(base) else None


def _packable_bias(bias: torch.Tensor) -> bool:
    return type(bias) in (torch.Tensor, nn.Parameter) and bias.device.type == "cpu"


def _onednn_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _save_for_backward(ctx: Any, inputs: tuple, output: torch.Tensor | None = None) -> None:
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _linear_backward(ctx: Any, grad: torch.Tensor, product: Any):
    """The gradients of ``y = x W^T + b``, each product a linear layer run by ``product``."""
    x, weight = ctx.saved_tensors
    g2 = grad.reshape(-1, grad.shape[-1])
    grad_x = grad_w = grad_b = None
    if ctx.needs_input_grad[0]:  # dL/dx = g W: a linear layer with weight W^T
        grad_x = product(g2, weight.t(), None).reshape(x.shape)
    if ctx.needs_input_grad[1]:  # dL/dW = g^T x: a linear layer with weight x^T
        grad_w = product(g2.t(), x.reshape(-1, x.shape[-1]).t(), None)
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_b = g2.sum(dim=0)
    return grad_x, grad_w, grad_b


class _OneDNNLinear(torch.autograd.Function):
    """``y = x W^T + b`` and its backward, every product on oneDNN's fp32 kernel (eager)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        _save_for_backward(ctx, (x, weight, bias))
        return _onednn_product(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor):
        return _linear_backward(ctx, grad, _onednn_product)


# The same products as one registered operator, for torch.compile: a compiled graph keeps it
# as an opaque kernel call and fuses the elementwise ops around it, where it would otherwise
# put every product on MKL's sgemm (less than half oneDNN's speed on the AMD CPUs measured).
# Eager runs keep the autograd.Function: a registered operator's Python dispatch costs ~12% of
# a `tiny` training step there. Both call the same kernels, so both give the same bits.
@torch.library.custom_op("rlalign::onednn_linear", mutates_args=())
def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x weight^T + bias`` on oneDNN (``weight`` ``[out, in]``, any strides)."""
    return _onednn_product(x, weight, bias)


@onednn_linear.register_fake
def _onednn_linear_shape(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _onednn_linear_backward(ctx: Any, grad: torch.Tensor):
    return _linear_backward(ctx, grad, onednn_linear)


onednn_linear.register_autograd(_onednn_linear_backward, setup_context=_save_for_backward)


def _trainable_forward(module: nn.Module, transposed: bool, traceable: bool) -> Any:
    linear = onednn_linear if traceable else _OneDNNLinear.apply

    def forward(x: torch.Tensor) -> torch.Tensor:
        weight = module.weight.t() if transposed else module.weight
        if x.dtype != torch.float32 or weight.dtype != torch.float32:  # e.g. under autocast
            return torch.nn.functional.linear(x, weight, module.bias)
        return linear(x, weight, module.bias)

    return forward


@contextlib.contextmanager
def training_linears(model: nn.Module, *, traceable: bool = False) -> Iterator[int]:
    """Inside the block, fp32 CPU linear layers of ``model`` compute forward *and* backward on
    oneDNN (the graph built inside keeps using it for ``backward()`` after the block).
    ``traceable``: through the registered operator ``rlalign::onednn_linear``, which
    ``torch.compile`` can trace (for a compiled forward), instead of an autograd.Function.

    The layers read their live parameters at every call (no copy), so gradients reach the
    parameters as usual; the results equal ``F.linear``'s within fp32 rounding. On this
    project's AMD EPYC a training step's linear layers run ~2x faster than on MKL's sgemm (see
    the module docstring). bf16 (autocast) inputs go to ``F.linear`` unchanged: PyTorch already
    runs those on oneDNN. Yields the number of layers switched.
    """
    root = _root_module(model)
    if root is None or not onednn_available():
        yield 0
        return

    def trainable(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> Any:
        if weight.dtype != torch.float32 or not _packable(weight):
            return None
        if bias is not None and not _packable_bias(bias):
            return None
        transposed = type(module) is not nn.Linear
        return _trainable_forward(module, transposed=transposed, traceable=traceable)

    with _switched_forwards(root, trainable) as count:
        yield count
