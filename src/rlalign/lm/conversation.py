"""A conversation with a model, turn by turn, its reply streamed as it is generated.

:class:`Conversation` keeps the messages, renders them with the tokenizer's chat template and
answers with ``transformers``' ``generate`` (greedy at temperature 0, else sampled from a
seeded generator state), handing each piece of text to a callback as soon as its tokens are
decoded (``transformers.TextStreamer``). When the conversation outgrows the model's context,
its oldest turns are dropped first. ``rlalign chat`` is the terminal around it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import TextStreamer

from rlalign.errors import UserError


class _Stream(TextStreamer):
    """``TextStreamer`` that hands the text to a callback instead of printing it."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.on_text(text)


class Conversation:
    """A chat with ``model`` (module docstring).

    Args:
        model: a Hugging Face causal LM.
        tokenizer: its tokenizer, with a chat template.
        system: a system message opening every conversation (``None``: none).
        temperature: 0 for greedy replies, else the sampling temperature.
        max_new_tokens: the longest reply, in tokens.
        seed: the seed of the sampling (each reply continues the same generator).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        system: str | None = None,
        temperature: float = 0.7,
        max_new_tokens: int = 128,
        seed: int = 0,
    ) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("this tokenizer has no chat template; chat needs one")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.system = system
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.generator_state = torch.Generator().manual_seed(seed).get_state()
        self.messages: list[dict[str, str]] = []
        self.dropped_turns = 0
        self.reset()

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        if not value >= 0 or value == float("inf"):
            raise UserError(f"temperature must be a number >= 0 (0: greedy), got {value}")
        self._temperature = float(value)

    def reset(self) -> None:
        """Forget every turn (the system message stays)."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def prompt_ids(self) -> list[int]:
        """The conversation so far, rendered for the assistant's next turn, as token ids;
        the oldest user/assistant turns are dropped until it fits in the context with room
        for a whole reply (nothing is dropped when even the last message alone does not fit)."""
        limit = getattr(self.model.config, "max_position_embeddings", None)
        first = 1 if self.messages and self.messages[0]["role"] == "system" else 0
        for dropped in range(0, len(self.messages) - first, 2):
            kept = self.messages[:first] + self.messages[first + dropped :]
            text = self.tokenizer.apply_chat_template(
                kept, tokenize=False, add_generation_prompt=True
            )
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if limit is None or len(ids) + self.max_new_tokens <= limit:
                self.messages = kept
                self.dropped_turns += dropped // 2
                return ids
        raise UserError(
            f"the message is {len(ids)} tokens; with a reply of up to {self.max_new_tokens} it "
            f"does not fit the model's {limit}"
        )

    def reply(self, text: str, on_text: Callable[[str], None] | None = None) -> str:
        """The model's answer to ``text`` (added to the conversation with it)."""
        self.messages.append({"role": "user", "content": text})
        try:
            ids = torch.tensor([self.prompt_ids()])
        except UserError:
            self.messages.pop()
            raise
        streamer = _Stream(self.tokenizer, on_text) if on_text is not None else None
        sampling: dict[str, Any] = {"do_sample": False}
        if self.temperature > 0:
            sampling = {"do_sample": True, "temperature": self.temperature, "top_k": 0}
        device = next(self.model.parameters()).device
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.set_rng_state(self.generator_state)  # generate() samples from the global RNG
            out = self.model.generate(
                ids.to(device),
                attention_mask=torch.ones_like(ids).to(device),
                max_new_tokens=self.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                streamer=streamer,
                **sampling,
            )
            self.generator_state = torch.get_rng_state()
        answer = self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
        self.messages.append({"role": "assistant", "content": answer})
        return answer
