"""A trained reward model as a reward function, and the scoring it shares with its training.

:class:`RewardModel` loads a reward run's ``final/`` directory (a sequence-classification
model, its tokenizer and, when trained with ``prior_coef`` > 0, the frozen prior) and scores
completions with the reward-function signature, so RL uses it like any other reward:

.. math:: r(x, y) = r_\\phi(x, y) + c \\log p_0(y \\mid x)

(``c = 0`` without a prior). A pair is encoded as one chat-formatted sequence
(:func:`encode_scored`) and scored at its last real token (:func:`sequence_scores`); the
reward-model stage (:mod:`rlalign.train.reward_model`) trains with exactly these functions.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rlalign.errors import UserError
from rlalign.lm.chat import IGNORE_INDEX, pad_right, tokenize_with_labels
from rlalign.lm.fast_linear import inference_linears
from rlalign.lm.models import check_weight_files
from rlalign.lm.tokenizer import load_tokenizer


def encode_scored(tokenizer: Any, prompt: str, response: str, max_length: int) -> list[int]:
    """Prompt and response as one chat-formatted sequence, truncated from the left of the
    prompt if needed so that the response's end (where the score is read) is kept."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    ids = tokenizer(text.rstrip(), add_special_tokens=False)["input_ids"]
    return ids[-max_length:]


def encode_scored_labelled(
    tokenizer: Any, prompt: str, response: str, max_length: int
) -> tuple[list[int], list[int]]:
    """:func:`encode_scored`'s tokens and language-modelling labels: the token inside the
    assistant turn (as SFT labels it), ``-100`` on the prompt."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    ids, labels = tokenize_with_labels(tokenizer, messages, strip=True)
    return ids[-max_length:], labels[-max_length:]


def sequence_scores(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """The score at each row's last real token (right padding), as fp32 ``(B,)``.

    Read from the attention mask rather than from pad-token ids, so it is right even when the
    pad token equals the eos token.
    """
    out = model(input_ids=input_ids, attention_mask=attention_mask)
    logits = out.logits  # (B, 1) for *ForSequenceClassification models
    if logits.dim() == 3:  # a backbone returning per-position scores
        last = attention_mask.sum(dim=1) - 1
        logits = logits[torch.arange(logits.shape[0]), last]
    return logits[:, 0].float()


def labelled_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of each labelled token, ``(B, L-1)`` fp32, 0 where the label
    is ``IGNORE_INDEX``."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:].to(logits.device)
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(labels.shape)


@torch.no_grad()
def response_logprobs(
    model: Any,
    rows: Sequence[tuple[list[int], list[int]]],
    *,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    desc: str | None = None,
) -> list[float]:
    """``log p(y | x)`` of each ``(ids, labels)`` row under a causal LM: the sum of the
    log-probabilities of its labelled tokens (the response, as SFT labels it), in fp32.
    ``desc``: show a progress bar with that title."""
    from tqdm.auto import tqdm

    out: list[float] = []
    starts = range(0, len(rows), batch_size)
    for i in tqdm(starts, desc=desc, disable=desc is None, leave=False):
        chunk = rows[i : i + batch_size]
        ids, mask = pad_right([r[0] for r in chunk], 0)
        labels, _ = pad_right([r[1] for r in chunk], IGNORE_INDEX)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        out += (-labelled_token_nll(logits, labels).sum(dim=1)).tolist()
    return out


PRIOR_FILE = "reward_prior.json"


PRIOR_DIR = "prior"


def load_prior_model(model_dir: str | Path) -> Any:
    """The causal LM a reward model's prior reads (frozen, eval mode)."""
    from transformers import AutoModelForCausalLM

    check_weight_files(Path(model_dir))
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"model={str(model_dir)!r}: prior_coef > 0 needs a causal LM there, and "
            f"transformers cannot load one ({exc}); set prior_coef=0"
        ) from None
    model.eval().requires_grad_(False)
    return model


def save_prior(prior: Any, coef: float, directory: Path) -> None:
    """Write the prior model and its weight into a reward model's directory."""
    prior.save_pretrained(directory / PRIOR_DIR, safe_serialization=True)
    (directory / PRIOR_FILE).write_text(json.dumps({"coef": coef, "model": PRIOR_DIR}) + "\n")


class RewardModel:
    """A trained reward model as a reward function: ``rm(prompts, completions) -> list[float]``.

    Args:
        path: a reward run's ``final/`` directory (or any sequence-classification model dir
            with a tokenizer).
        batch_size: completions scored per forward pass.
        bf16: score under bf16 autocast (the classifier and the prior), as an RL run that
            trains in bf16 samples and takes its reference log-probs; the linear layers then
            run on weights cast once per call (``inference_linears``), with autocast's results.
            Default: fp32.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        max_length: int = 512,
        bf16: bool = False,
    ) -> None:
        from transformers import AutoModelForSequenceClassification

        path = Path(path)
        if not (path / "config.json").is_file():
            raise UserError(
                f"reward_model={str(path)!r}: no config.json there (a reward run's final/ dir)"
            )
        self.tokenizer = load_tokenizer(path)
        check_weight_files(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
        if self.model.config.num_labels != 1:
            raise UserError(
                f"reward_model={str(path)!r} has {self.model.config.num_labels} labels, expected 1"
            )
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.bf16 = bf16
        limit = getattr(self.model.config, "max_position_embeddings", None)
        self.max_length = min(max_length, limit) if limit else max_length
        self.prior, self.prior_coef = self._load_prior(path)
        self.__name__ = "reward_model"

    def _load_prior(self, path: Path) -> tuple[Any, float]:
        spec_file = path / PRIOR_FILE
        if not spec_file.is_file():
            return None, 0.0
        try:
            spec = json.loads(spec_file.read_text())
            coef, where = float(spec["coef"]), path / spec["model"]
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(
                f"{spec_file}: not a reward-model prior spec ({exc}); expected "
                '{"coef": <float>, "model": "prior"}'
            ) from None
        if not (where / "config.json").is_file():
            raise UserError(
                f"{spec_file}: the prior model it names, {where}, is missing; copy the reward "
                "run's final/ directory whole (prior/ included)"
            )
        return load_prior_model(where).to(self.device), coef

    @torch.no_grad()
    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """The reward of each (prompt, completion) pair: the head's score, plus
        ``coef * log p0(completion | prompt)`` when the model was trained with a prior."""
        rows = [
            encode_scored_labelled(self.tokenizer, p, c, self.max_length)
            for p, c in zip(prompts, completions, strict=True)
        ]
        out: list[float] = []
        with self._precision(self.model):
            for i in range(0, len(rows), self.batch_size):
                ids, mask = pad_right(
                    [r[0] for r in rows[i : i + self.batch_size]], self.tokenizer.pad_token_id
                )
                out += sequence_scores(
                    self.model, ids.to(self.device), mask.to(self.device)
                ).tolist()
        if self.prior is not None:
            with self._precision(self.prior):
                logps = response_logprobs(
                    self.prior, rows, batch_size=self.batch_size, device=self.device
                )
            out = [o + self.prior_coef * lp for o, lp in zip(out, logps, strict=True)]
        return out

    def _precision(self, model: Any) -> contextlib.AbstractContextManager:
        """bf16 autocast with the linear layers on weights cast once (``bf16``), else fp32 as
        the model computes it."""
        if not self.bf16:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
        rows = self.batch_size * 64  # oneDNN's layout for about this many tokens a call
        stack.enter_context(inference_linears(model, dtype=torch.bfloat16, rows=rows))
        return stack

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **fields: Any
    ) -> list[float]:
        return self.score(prompts, completions)
