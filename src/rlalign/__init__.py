from typing import Any

from rlalign.version import __version__

__all__ = [
    "PPOConfig",
    "PretrainConfig",
    "RLConfig",
    "ReinforceConfig",
    "RewardConfig",
    "RunResult",
    "SFTConfig",
    "__version__",
    "align",
    "average_models",
    "control_train",
    "pretrain",
    "reward",
    "sft",
]

# The Python API (rlalign.api) and the stages' configs, imported when first used: `import
# rlalign` (and so `rlalign --help`) does not import torch.
_LAZY = {
    "pretrain": "rlalign.api",
    "sft": "rlalign.api",
    "reward": "rlalign.api",
    "align": "rlalign.api",
    "control_train": "rlalign.api",
    "average_models": "rlalign.train.average",
    "PPOConfig": "rlalign.control.train_config",
    "ReinforceConfig": "rlalign.control.train_config",
    "RunResult": "rlalign.api",
    "PretrainConfig": "rlalign.train.pretrain",
    "SFTConfig": "rlalign.train.sft",
    "RewardConfig": "rlalign.train.reward_model",
    "RLConfig": "rlalign.train.rl_config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rlalign' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


def _register_envs() -> None:
    # Gymnasium ids (rlalign/Driving-v0, ...) exist as soon as rlalign is imported. Entry points
    # are strings, so this imports neither torch nor the simulator.
    try:
        from rlalign.control.registration import register_envs
    except ImportError:  # pragma: no cover - gymnasium missing in a stripped-down install
        return
    register_envs()


_register_envs()
