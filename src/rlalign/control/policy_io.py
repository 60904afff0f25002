"""Policies on disk: ``policy.safetensors`` (weights + normaliser statistics) + ``policy.json``.

Never pickle. The JSON holds what is needed to rebuild the network and to check that a policy
is used on the env it was trained for::

    {"format": "rlalign-control-policy", "version": 1, "env_id": "CartPole-v1",
     "env_kwargs": {}, "algo": "ppo", "net": {...NetSpec...}, "obs_norm": true, "obs_clip": 10.0}

The safetensors file holds the actor/critic parameters under their module names and, with
observation normalisation, ``obs_norm.mean``, ``obs_norm.var`` and ``obs_norm.count`` (float64).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rlalign.control.networks import ActorCritic, NetSpec
from rlalign.control.normalize import ObsNormalizer, RewardScaler
from rlalign.errors import UserError
from rlalign.io import atomic_write_json, check_safetensors

WEIGHTS = "policy.safetensors"
CONFIG = "policy.json"
FORMAT = "rlalign-control-policy"


class Agent:
    """A trained policy: network + frozen observation normaliser, callable on a batch of obs."""

    def __init__(
        self,
        net: ActorCritic,
        obs_norm: ObsNormalizer | None,
        meta: dict[str, Any],
        deterministic: bool = True,
        seed: int = 0,
    ) -> None:
        self.net = net.eval()
        self.obs_norm = obs_norm
        self.meta = meta
        self.deterministic = deterministic
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def env_id(self) -> str:
        return str(self.meta["env_id"])

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        return self.obs_norm(obs) if self.obs_norm is not None else obs

    @torch.inference_mode()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(self.normalize(obs))
        out = self.net.policy(x)
        a = self.net.mode(out) if self.deterministic else self.net.sample(out, self.generator)
        return self.net.to_env_actions(a)


def save_policy(
    out_dir: str | Path,
    net: ActorCritic,
    obs_norm: ObsNormalizer | None,
    meta: dict[str, Any],
    reward_scaler: RewardScaler | None = None,
) -> None:
    """Write ``policy.safetensors`` and ``policy.json`` into ``out_dir``.

    The reward scaler's statistics (``reward_norm.*``) are stored too, so that training can be
    continued with the same scale; acting needs only the observation statistics.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    if obs_norm is not None:
        for k, v in obs_norm.rms.state().items():
            tensors[f"obs_norm.{k}"] = torch.from_numpy(
                np.asarray(v, dtype=np.float64)
            ).contiguous()
    if reward_scaler is not None:
        for k, v in reward_scaler.rms.state().items():
            tensors[f"reward_norm.{k}"] = torch.from_numpy(np.asarray(v, dtype=np.float64))
    tmp = out / f".{WEIGHTS}.tmp"
    save_file(tensors, str(tmp), metadata={"format": FORMAT})
    tmp.replace(out / WEIGHTS)
    config = {
        "format": FORMAT,
        "version": 1,
        **meta,
        "net": net.spec.to_dict(),
        "obs_norm": obs_norm is not None,
        "obs_clip": obs_norm.clip if obs_norm is not None else None,
        "reward_norm": reward_scaler is not None,
    }
    atomic_write_json(out / CONFIG, config)


def load_policy(policy_dir: str | Path, deterministic: bool = True, seed: int = 0) -> Agent:
    """Load a policy written by :func:`save_policy` (a ``UserError`` if it is not one)."""
    d = Path(policy_dir)
    cfg_path, w_path = d / CONFIG, d / WEIGHTS
    if not d.is_dir():
        raise UserError(
            f"{d}: not a directory; pass the --out directory of 'rlalign control train'"
        )
    if not cfg_path.exists() or not w_path.exists():
        raise UserError(
            f"{d}: no {CONFIG} + {WEIGHTS} here; pass the --out directory of 'rlalign control train'"
        )
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{cfg_path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{cfg_path}: not an rlalign control policy (format != {FORMAT!r})")
    try:
        spec = NetSpec(**meta["net"])
    except (KeyError, TypeError) as exc:
        raise UserError(f"{cfg_path}: malformed 'net' section ({exc})") from None
    net = ActorCritic(spec)
    check_safetensors(
        w_path, "train the policy again (rlalign control train --out DIR) or copy it again"
    )
    tensors = load_file(str(w_path))
    obs_state = {
        k.split(".", 1)[1]: v.numpy() for k, v in tensors.items() if k.startswith("obs_norm.")
    }
    weights = {k: v for k, v in tensors.items() if not k.startswith(("obs_norm.", "reward_norm."))}
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"{w_path}: weights do not match {cfg_path} ({first})") from None
    obs_norm = None
    if meta.get("obs_norm"):
        if not obs_state:
            raise UserError(
                f"{w_path}: the config says obs_norm but no obs_norm.* tensors are stored"
            )
        obs_norm = ObsNormalizer((spec.obs_dim,), clip=float(meta.get("obs_clip") or 10.0))
        obs_norm.rms.load(obs_state)
    return Agent(net, obs_norm, meta, deterministic=deterministic, seed=seed)
