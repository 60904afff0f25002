"""A language model as the car's driver, measured like every other driver.

:class:`LMDriver` is a batched policy ``obs (B, n_obs) -> actions (B,)`` -- the shape of the MLP
agent and the baselines -- so :func:`~rlalign.control.evaluate.evaluate` scores it on the same
seeded episodes with the same columns. Each step, for every car still driving:

    observation array -> describe_driving -> chat prompt -> one batched greedy sample
    -> the reply's action word (GymTextEnv.action_index) -> action index

The prompt is the one the text env's RL rollouts open an episode with (``history=last``: the
current observation as the user's message and the generation prompt), so a model is measured on
exactly what it was trained to read. A reply that names no action plays the text env's fallback
(``keep``) and is counted in ``invalid_actions``; the evaluation reports it per episode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from rlalign.control.driving_text import describe_driving, make_driving_text_env
from rlalign.errors import UserError
from rlalign.lm.loading import load_model_and_tokenizer
from rlalign.lm.sampling import sample

# Files that make a directory a language model (config + safetensors weights + a tokenizer).
_MODEL_FILES = ("config.json", "tokenizer_config.json")


def lm_model_dir(path: str | Path) -> Path | None:
    """The model directory of a language-model run (``path/final``) or ``path`` itself when it
    holds a Hugging Face model and its tokenizer; ``None`` for anything else (an MLP policy)."""
    path = Path(path)
    for candidate in (path / "final", path):
        if all((candidate / name).is_file() for name in _MODEL_FILES) and any(
            candidate.glob("*.safetensors")
        ):
            return candidate
    return None


def chat_prompt_ids(tokenizer: Any, observation: str) -> list[int]:
    """The observation as the user's message, then the generation prompt, as token ids."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": observation}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class LMDriver:
    """Greedy driving by a causal LM through the car's words (module docstring).

    Args:
        model: a Hugging Face causal LM (eval mode).
        tokenizer: its tokenizer, with a chat template and a pad token.
        env_kwargs: the car's settings (``gymnasium.make`` keywords), for the sentence's scales.
        max_new_tokens: tokens the model may write per action.

    After calls, ``invalid_actions`` counts the replies that named no action and
    ``last_replies`` holds the replies of the latest call.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        env_kwargs: dict[str, Any] | None = None,
        *,
        max_new_tokens: int = 4,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        # The text env parses the replies, exactly as in RL; its car is never stepped.
        self.text_env = make_driving_text_env(**(env_kwargs or {}))
        # what the car itself is made with (the text env's own keywords left out)
        self.gym_kwargs = {
            k: v
            for k, v in (env_kwargs or {}).items()
            if k not in ("fallback_action", "invalid_penalty")
        }
        self.cfg = self.text_env.env.unwrapped.cfg
        self.fallback = self.text_env.action_index(self.text_env.fallback_action)
        self.invalid_actions = 0
        self.last_replies: list[str] = []

    def replies(self, observations: list[str]) -> list[str]:
        """The model's greedy reply to each observation sentence, in one batched call."""
        rows = [chat_prompt_ids(self.tokenizer, o) for o in observations]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
        device = next(self.model.parameters()).device
        with torch.no_grad():
            out = sample(
                self.model,
                ids.to(device),
                mask.to(device),
                max_new_tokens=self.max_new_tokens,
                temperature=0.0,
                tokenizer=self.tokenizer,
            )
        lengths = out.completion_lengths.tolist()
        completion = out.completion_ids.cpu()
        return [
            self.tokenizer.decode(
                completion[i, : int(n)].tolist(), skip_special_tokens=True
            ).strip()
            for i, n in enumerate(lengths)
        ]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        observations = [describe_driving(o, self.cfg) for o in np.asarray(obs)]
        self.last_replies = self.replies(observations)
        actions = np.empty(len(observations), dtype=np.int64)
        for i, reply in enumerate(self.last_replies):
            index = self.text_env.action_index(reply)
            if index is None:
                self.invalid_actions += 1
                index = self.fallback
            actions[i] = index
        return actions

    def close(self) -> None:
        self.text_env.close()


def load_lm_driver(
    path: str | Path,
    *,
    max_new_tokens: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> LMDriver:
    """An :class:`LMDriver` from a language-model run directory or a model directory.

    The car's settings are ``env_kwargs``, else the run's ``config.yaml`` (``env_kwargs`` of an
    ``rlalign rl`` run in the text env), else the defaults; ``max_new_tokens`` defaults to the
    run's ``max_completion_length``, else 4.
    """
    model_dir = lm_model_dir(path)
    if model_dir is None:
        raise UserError(
            f"{path}: not a language model (no config.json, *.safetensors and tokenizer files "
            "in it or in its final/)"
        )
    saved = _run_config(Path(path), model_dir)
    env = saved.get("env")
    if env not in (None, "rlalign/Driving-v0"):
        raise UserError(f"{path}: this model was trained in {env!r}, not rlalign/Driving-v0")
    if max_new_tokens is None:
        max_new_tokens = int(saved.get("max_completion_length") or 4)
    model, tokenizer = load_model_and_tokenizer(model_dir)
    model.eval()
    if env_kwargs is None:
        env_kwargs = dict(saved.get("env_kwargs") or {})
    return LMDriver(model, tokenizer, env_kwargs, max_new_tokens=max_new_tokens)


def _run_config(path: Path, model_dir: Path) -> dict[str, Any]:
    for candidate in (path / "config.yaml", model_dir.parent / "config.yaml"):
        if candidate.is_file():
            saved = yaml.safe_load(candidate.read_text(encoding="utf-8"))
            return saved if isinstance(saved, dict) else {}
    return {}
