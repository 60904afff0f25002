"""Data parallelism with PyTorch's own engine: DDP or FSDP2 around the model being trained.

- ``ddp``: :class:`torch.nn.parallel.DistributedDataParallel`; every rank holds the whole
  model, gradients are all-reduced during backward.
- ``fsdp``: FSDP2, :func:`torch.distributed.fsdp.fully_shard` on every transformer block and on
  the root; parameters, gradients and optimizer state are sharded across ranks (bf16 compute
  and fp32 gradient reduction on GPU when bf16 is on).

Both average gradients over ranks. The loop instead wants the *sum* (each rank's loss is already
divided by the step's global item count), so it multiplies its loss by the world size before
``backward``: the update then equals the single-process one with the same global batch.

Checkpoints hold *full* (unsharded) state dicts, keyed by parameter name, gathered to rank 0
with :mod:`torch.distributed.checkpoint.state_dict` and loaded back by broadcasting from
rank 0: the same files are written at any world size, with or without FSDP, so a run saved at
2 ranks resumes at 1 (and the reverse).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from rlalign.dist import is_distributed, unwrap_model
from rlalign.errors import UserError

STRATEGIES = ("ddp", "fsdp")


def _block_classes(model: nn.Module) -> set[type]:
    """Transformer block classes to shard one by one: HF's ``_no_split_modules``, else the
    modules of the longest ``nn.ModuleList`` (the layers of any decoder)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    classes = {type(m) for m in model.modules() if type(m).__name__ in names}
    if classes:
        return classes
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        return set()
    longest = max(lists, key=len)
    return {type(m) for m in longest}


def _inner_language_models(model: nn.Module) -> list[nn.Module]:
    """The outermost Hugging Face (or PEFT) models strictly inside ``model`` (none when
    ``model`` is one: a causal LM's own backbone shares tied weights with its head and stays in
    its unit)."""
    from transformers import PreTrainedModel

    def is_language_model(module: nn.Module) -> bool:  # a HF model, or a PEFT model around one
        return isinstance(module, PreTrainedModel) or hasattr(module, "peft_config")

    if is_language_model(model):
        return []
    found: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if is_language_model(child):
                found.append(child)
            else:
                visit(child)

    visit(model)
    return found


def wrap_for_training(
    model: nn.Module, strategy: str, device: torch.device, *, bf16: bool
) -> nn.Module:
    """``model`` wrapped for data-parallel training across the process group's ranks."""
    if not is_distributed():
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
        # No buffer sync in forward: the models here keep no running statistics, and it keeps
        # every forward free of collectives. torch 2.13 renamed the switch (broadcast_buffers is
        # deprecated there); older builds, e.g. a GPU machine's torch 2.11, know only the old name.
        params = inspect.signature(DistributedDataParallel.__init__).parameters
        no_sync = (
            "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
        )
        return DistributedDataParallel(model, device_ids=ids, **{no_sync: False})
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        kwargs: dict[str, Any] = {}
        if bf16 and device.type == "cuda":
            kwargs["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=torch.bfloat16, reduce_dtype=torch.float32
            )
        blocks = _block_classes(model)
        for module in list(model.modules()):
            if type(module) in blocks:
                fully_shard(module, **kwargs)
        inner = _inner_language_models(model)
        if not inner or any(True for _ in model.parameters(recurse=False)):
            fully_shard(model, **kwargs)
            return model
        # A wrapper around a language model (a value head beside the policy): the language
        # model and the wrapper's other parts are separate roots, so that calling the language
        # model alone -- the sampler does -- gathers its weights (FSDP2 wants the first forward
        # through a root, and a shared root would be bypassed).
        for child in model.children():
            if child not in inner and any(True for _ in child.parameters()):
                fully_shard(child, **kwargs)
        for module in inner:
            fully_shard(module, **kwargs)
        return model
    raise UserError(f"distributed={strategy!r}: expected one of {', '.join(STRATEGIES)}")


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on all but the last micro-batch of a step."""
    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel

    if enabled or not is_distributed():
        yield
    elif isinstance(model, DistributedDataParallel):
        with model.no_sync():
            yield
    else:
        units = [m for m in model.modules() if isinstance(m, FSDPModule)]
        for unit in units:
            unit.set_requires_gradient_sync(False, recurse=False)
        try:
            yield
        finally:
            for unit in units:
                unit.set_requires_gradient_sync(True, recurse=False)


def to_local(value: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value as a plain tensor (e.g. the grad norm under FSDP)."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def _options(**kwargs: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights, unsharded, on CPU; collective under DDP/FSDP (every rank must
    call it); only rank 0 receives them (other ranks get ``{}``)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    if not is_distributed():
        return {k: v.detach() for k, v in unwrap_model(model).state_dict().items()}
    return get_model_state_dict(model, options=_options(cpu_offload=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer state keyed by parameter name (not position), unsharded; rank 0 only."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    distributed = is_distributed()
    return get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=distributed))


def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict (read on rank 0 only when distributed) into every rank's model."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state, options=_options(broadcast_from_rank0=is_distributed()))


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(
        model, optimizer, state, options=_options(broadcast_from_rank0=is_distributed())
    )
