"""Snapshot and restore the state of a Gymnasium env, so a resumed run steps it identically.

Gymnasium has no state API, so the snapshot is generic: for the env and every wrapper around it,
each attribute holding plain data -- numpy arrays and scalars, Python numbers, strings, None,
tuples/lists of those -- and each ``numpy.random.Generator`` (its bit-generator state). Objects
(configs, spaces, specs, renderers) are left alone: they are rebuilt identically by ``gym.make``
and do not change while stepping. That covers envs whose dynamic state lives in arrays and numbers:
the driving envs, classic control (CartPole, Pendulum, ...), the time-limit and order wrappers.

The snapshot holds only tensors, numbers, strings, lists and dicts, so it is saved inside a
checkpoint's ``trainer_state.pt`` and read back with ``torch.load(weights_only=True)``. Arrays
become tensors (exact bytes); 128-bit generator words are stored as decimal strings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

_SKIP = {"_saved_kwargs", "metadata", "_metadata", "spec", "_cached_spec"}


def _pack(value: Any) -> Any:
    """A weights_only-loadable encoding of ``value``; ``_NOT_PLAIN`` if it is not plain data."""
    if value is None or isinstance(value, bool | int | str):
        return {"k": "py", "v": value}
    if isinstance(value, np.generic):  # before float: np.float64 is a float subclass
        return {"k": "npscalar", "v": value.item(), "dtype": value.dtype.str}
    if isinstance(value, float):
        return {"k": "py", "v": value}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            return _NOT_PLAIN
        arr = np.ascontiguousarray(value)
        # torch has no uint16/32/64 tensors: store those as int64 (exact for the values used).
        store = arr.astype(np.int64) if arr.dtype.kind == "u" and arr.itemsize > 1 else arr
        return {"k": "ndarray", "v": torch.from_numpy(store.copy()), "dtype": arr.dtype.str}
    if isinstance(value, np.random.Generator):
        return {"k": "rng", "v": _stringify(value.bit_generator.state)}
    if isinstance(value, tuple | list):
        items = [_pack(v) for v in value]
        if any(i is _NOT_PLAIN for i in items):
            return _NOT_PLAIN
        return {"k": type(value).__name__, "v": items}
    return _NOT_PLAIN


_NOT_PLAIN = object()


def _unpack(packed: dict[str, Any], current: Any) -> Any:
    kind = packed["k"]
    if kind == "py":
        return packed["v"]
    if kind == "npscalar":
        return np.dtype(packed["dtype"]).type(packed["v"])
    if kind == "ndarray":
        return packed["v"].numpy().astype(np.dtype(packed["dtype"]), copy=True)
    if kind == "rng":
        rng = current if isinstance(current, np.random.Generator) else np.random.default_rng()
        rng.bit_generator.state = _destringify(packed["v"])
        return rng
    items = [_unpack(p, None) for p in packed["v"]]
    return tuple(items) if kind == "tuple" else items


def _stringify(state: Any) -> Any:
    if isinstance(state, dict):
        return {k: _stringify(v) for k, v in state.items()}
    if isinstance(state, int) and not isinstance(state, bool):
        return f"int:{state}"
    return state


def _destringify(state: Any) -> Any:
    if isinstance(state, dict):
        return {k: _destringify(v) for k, v in state.items()}
    if isinstance(state, str) and state.startswith("int:"):
        return int(state[4:])
    return state


def _layers(env: Any) -> list[Any]:
    out = [env]
    while hasattr(out[-1], "env"):
        out.append(out[-1].env)
    return out


def get_env_state(env: Any) -> list[dict[str, Any]]:
    """The plain-data state of ``env`` and each wrapper, outermost first."""
    state = []
    for layer in _layers(env):
        attrs = {}
        for name, value in vars(layer).items():
            if name in _SKIP or name == "env":
                continue
            packed = _pack(value)
            if packed is not _NOT_PLAIN:
                attrs[name] = packed
        state.append({"type": type(layer).__name__, "attrs": attrs})
    return state


def set_env_state(env: Any, state: list[dict[str, Any]]) -> None:
    """Restore a snapshot of :func:`get_env_state` into an env built the same way."""
    layers = _layers(env)
    types = [type(layer).__name__ for layer in layers]
    if types != [s["type"] for s in state]:
        raise ValueError(f"env snapshot of {[s['type'] for s in state]} does not fit {types}")
    for layer, saved in zip(layers, state, strict=True):
        for name, packed in saved["attrs"].items():
            setattr(layer, name, _unpack(packed, getattr(layer, name, None)))
