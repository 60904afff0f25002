"""Text in, text out: prompts encoded left-padded, completions sampled and decoded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from rlalign.errors import UserError
from rlalign.lm.sampling import sample

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class TextSample:
    """One decoded completion (see :func:`generate_text`)."""

    prompt: str
    completion: str
    finish_reason: str
    num_tokens: int
    logprob: float  # sum of the sampled tokens' log-probs under the sampling distribution


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    chat: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize ``prompts`` left-padded; with ``chat=True`` each is a user turn in the chat
    template, followed by the generation prompt."""
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("--chat needs a tokenizer with a chat template")
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]
        add_special = False  # the template writes bos itself
    else:
        texts = list(prompts)
        add_special = True
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special)
    finally:
        tokenizer.padding_side = old_side
    return enc["input_ids"], enc["attention_mask"]


def generate_text(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    chat: bool = False,
    **sample_kwargs: Any,
) -> list[TextSample]:
    """Sample completions for text prompts and decode them (special tokens dropped).

    ``sample_kwargs`` go to :func:`sample` (``max_new_tokens``, ``temperature``, ``top_k``,
    ``top_p``, ``num_samples``, ``stop_strings``, ``generator``, ...). Results are grouped by
    prompt, ``num_samples`` each.
    """
    input_ids, attention_mask = encode_prompts(tokenizer, prompts, chat=chat)
    out = sample(model, input_ids, attention_mask, tokenizer=tokenizer, **sample_kwargs)
    n = sample_kwargs.get("num_samples", 1)
    results = []
    for row in range(out.sequences.shape[0]):
        length = int(out.completion_mask[row].sum())
        ids = out.completion_ids[row, :length]
        results.append(
            TextSample(
                prompt=prompts[row // n],
                completion=tokenizer.decode(ids, skip_special_tokens=True),
                finish_reason=out.finish_reasons[row],
                num_tokens=length,
                logprob=float(out.logprobs[row, :length].sum()),
            )
        )
    return results
