"""The policy as the RL stage trains it: per-token log-probs, entropy and (PPO) values.

One forward pass of the causal LM gives, for each completion token ``a_t`` after the state
``s_t`` (the prompt plus the tokens before it): ``log pi(a_t | s_t)`` (at the sampling
temperature), the entropy of ``pi(. | s_t)``, and, with a value head on the last hidden state,
``V(s_t)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def hidden_size(config: Any) -> int:
    for name in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot find the hidden size of {type(config).__name__}")


class PolicyWithValueHead(nn.Module):
    """A causal LM and a scalar value head ``V(s) = w . h(s) + b`` on its last hidden state.

    The head starts at zero (``V = 0`` everywhere), so the first advantages are the returns.
    """

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(hidden_size(policy.config), 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    @property
    def config(self) -> Any:
        return self.policy.config


def unwrap_policy(model: nn.Module) -> nn.Module:
    return model.policy if isinstance(model, PolicyWithValueHead) else model


def completion_forward(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    start: int,
    *,
    temperature: float = 1.0,
    with_values: bool = False,
    with_entropy: bool = False,
    chunk_rows: int = 8,
) -> dict[str, torch.Tensor]:
    """Log-probs (``logp``), optionally ``entropy`` and ``values``, of tokens ``start..L-1``.

    ``input_ids`` are left-padded prompts followed by completions (the sampler's layout);
    positions come from the attention mask. Element ``j`` of each output belongs to token
    ``start + j``: it is computed from the model's output at position ``start + j - 1``.
    Logits are upcast to fp32 a few rows at a time, so no full fp32 ``(B, T, V)`` tensor is
    ever built.
    """
    policy = unwrap_policy(model)
    position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
    keep = input_ids.shape[1] - start + 1
    out = policy(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        logits_to_keep=keep,
        output_hidden_states=with_values,
    )
    logits = out.logits[:, :-1, :]
    targets = input_ids[:, start:]
    logps, entropies = [], []
    for lo in range(0, logits.shape[0], chunk_rows):
        chunk = logits[lo : lo + chunk_rows].float()
        if temperature != 1.0:
            chunk = chunk / temperature
        norm = chunk.logsumexp(dim=-1)
        picked = chunk.gather(-1, targets[lo : lo + chunk_rows].unsqueeze(-1)).squeeze(-1)
        logps.append(picked - norm)
        if with_entropy:
            with torch.no_grad():
                probs = torch.softmax(chunk, dim=-1)
                entropies.append(norm - (probs * chunk).sum(dim=-1))
    result = {"logp": torch.cat(logps)}
    if with_entropy:
        result["entropy"] = torch.cat(entropies)
    if with_values:
        if not isinstance(model, PolicyWithValueHead):
            raise ValueError("values need a PolicyWithValueHead")
        hidden = out.hidden_states[-1][:, start - 1 : -1, :]
        result["values"] = (
            model.value_head(hidden.to(model.value_head.weight.dtype)).squeeze(-1).float()
        )
    return result
