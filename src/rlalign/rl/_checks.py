"""Argument checks shared by the RL core: every error names the argument and the shapes."""

from __future__ import annotations

import torch


def check_tensor(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_same_shape(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    check_tensor(name, x)
    if x.shape != ref.shape:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)} but {ref_name} has shape {tuple(ref.shape)}; "
            "they must match"
        )


def check_mask(mask: torch.Tensor | None, ref_name: str, ref: torch.Tensor) -> torch.Tensor:
    """Return the mask as a float tensor of ``ref``'s shape (all ones when ``mask`` is None)."""
    if mask is None:
        return torch.ones_like(ref, dtype=ref.dtype if ref.is_floating_point() else torch.float32)
    check_same_shape("mask", mask, ref_name, ref)
    dtype = ref.dtype if ref.is_floating_point() else torch.float32
    return mask.to(dtype)


def float_dtype(*xs: object) -> torch.dtype:
    """The dtype to compute in: the promotion of the floating-point tensors among ``xs`` (a
    float64 input keeps the result float64), or the default float dtype when none is one
    (integer rewards)."""
    dtypes = [x.dtype for x in xs if isinstance(x, torch.Tensor) and x.is_floating_point()]
    if not dtypes:
        return torch.get_default_dtype()
    out = dtypes[0]
    for dtype in dtypes[1:]:
        out = torch.promote_types(out, dtype)
    return out


def check_unit_interval(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def check_discount(
    name: str, gamma: float | torch.Tensor, ref_name: str, ref: torch.Tensor
) -> float | torch.Tensor:
    """A discount in ``[0, 1]``: one number, or one per position (``ref``'s shape)."""
    if not isinstance(gamma, torch.Tensor):
        return check_unit_interval(name, gamma)
    check_same_shape(name, gamma, ref_name, ref)
    if bool(((gamma < 0) | (gamma > 1) | gamma.isnan()).any()):
        raise ValueError(f"every entry of {name} must be in [0, 1]")
    return gamma.to(ref.dtype)


def check_has_time_axis(name: str, x: torch.Tensor) -> None:
    check_tensor(name, x)
    if x.dim() < 1:
        raise ValueError(f"{name} must have a time axis (shape (..., T)), got a scalar")


def check_leading(
    name: str, x: torch.Tensor | float | None, ref_name: str, ref: torch.Tensor
) -> torch.Tensor:
    """A per-sequence value (shape ``ref.shape[:-1]``), e.g. a bootstrap value; None -> zeros."""
    lead = ref.shape[:-1]
    if x is None:
        return torch.zeros(lead, dtype=ref.dtype, device=ref.device)
    if not isinstance(x, torch.Tensor):
        return torch.full(lead, float(x), dtype=ref.dtype, device=ref.device)
    if x.shape != lead:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)} but must have shape {tuple(lead)} "
            f"(the leading dimensions of {ref_name}, shape {tuple(ref.shape)})"
        )
    return x.to(ref.dtype)
