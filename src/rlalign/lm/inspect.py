"""Looking at the policy itself: the next-token distribution P(t_i | t_1..t_{i-1}).

Pure functions behind ``rlalign next-token`` and ``rlalign generate``: they take a model and a
tokenizer and return plain data, so tests and notebooks use them without the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from rlalign.errors import UserError
from rlalign.lm.forward import context_length, keep_logits
from rlalign.lm.generate import encode_prompts

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class TokenProb:
    """One candidate next token."""

    token: str  # the token decoded on its own (e.g. " Mira"; special tokens as written)
    id: int
    prob: float


def next_token_distribution(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    top_k: int = 10,
    *,
    chat: bool = False,
) -> list[TokenProb]:
    """The ``top_k`` most likely next tokens after ``prompt`` with their probabilities.

    The probabilities are the softmax of the model's logits at the prompt's last position
    (temperature 1, full vocabulary), so they are the policy's action probabilities in this
    state. The prompt is encoded exactly as :func:`rlalign.lm.generate.generate_text` encodes it
    (bos prepended by the tokenizer; ``chat=True`` wraps it as a user turn).

    Raises:
        UserError: ``top_k <= 0``, an empty prompt, or a prompt longer than the context.
    """
    if not isinstance(top_k, int) or top_k <= 0:
        raise UserError(f"top_k must be a positive integer, got {top_k}")
    input_ids, attention_mask = encode_prompts(tokenizer, [prompt], chat=chat)
    if input_ids.shape[1] == 0:
        raise UserError("the prompt is empty (it encodes to no tokens)")
    limit = context_length(model)
    if limit is not None and input_ids.shape[1] > limit:
        raise UserError(
            f"prompt of {input_ids.shape[1]} tokens is longer than the model's context of "
            f"{limit} tokens"
        )
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            use_cache=False,
            **keep_logits(model, 1),
        )
        probs = out.logits[0, -1].float().softmax(dim=-1)
        k = min(top_k, probs.shape[0])
        values, ids = probs.topk(k)
    return [
        TokenProb(token=tokenizer.decode([i]), id=i, prob=float(p))
        for p, i in zip(values.tolist(), ids.tolist(), strict=True)
    ]


def format_table(prompt: str, top: list[TokenProb]) -> str:
    """A small readable table: rank, probability, a bar, token id and the token (repr'd so that
    spaces and newlines are visible)."""
    lines = [f"prompt: {prompt!r}", f"{'#':>3}  {'prob':>7}  {'':<20}  {'id':>6}  token"]
    for rank, item in enumerate(top, start=1):
        bar = "#" * max(0, round(item.prob * 20))
        lines.append(f"{rank:>3}  {item.prob:>7.2%}  {bar:<20}  {item.id:>6}  {item.token!r}")
    return "\n".join(lines)
