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

    def forward(self, **kwargs: Any) -> Any:
        """The policy's output, plus ``state_values`` ``[B, L]``: V of every position's state.

        A real forward (rather than reading the two parts separately) so that DDP, which
        synchronises the gradients of what its forward ran, sees the value head too."""
        kwargs["output_hidden_states"] = True
        out = self.policy(**kwargs)
        hidden = out.hidden_states[-1]
        out.state_values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return out


def unwrap_policy(model: nn.Module) -> nn.Module:
    """The causal LM inside DDP and value-head wrappers (what samples and what is saved)."""
    from rlalign.train.parallel import unwrap_model

    model = unwrap_model(model)
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
    untempered_rows: int = 0,
) -> dict[str, torch.Tensor]:
    """Log-probs (``logp``), optionally ``entropy`` and ``values``, of tokens ``start..L-1``.

    ``input_ids`` are left-padded prompts followed by completions (the sampler's layout);
    positions come from the attention mask. Element ``j`` of each output belongs to token
    ``start + j``: it is computed from the model's output at position ``start + j - 1``.
    The forward and the log-probs are :func:`rlalign.lm.sampling.completion_logits` and
    :func:`~rlalign.lm.sampling.token_logprobs`, the same as the sampler's ``sequence_logprobs``.
    The last ``untempered_rows`` rows (PPO-ptx text riding in the same forward) get their
    log-probs at temperature 1, and no entropy (``entropy`` covers the other rows only).
    """
    from rlalign.lm.sampling import completion_logits, token_logprobs
    from rlalign.train.parallel import unwrap_model

    core = unwrap_model(model)
    if with_values and not isinstance(core, PolicyWithValueHead):
        raise ValueError("values need a PolicyWithValueHead")
    # Through the wrappers (DDP must run the forward) unless only the LM part is wanted.
    if isinstance(core, PolicyWithValueHead) and not with_values:
        model = core.policy
    out = completion_logits(model, input_ids, attention_mask, start)
    targets, split = input_ids[:, start:], input_ids.shape[0] - untempered_rows
    logp, entropy = token_logprobs(
        out.logits[:split], targets[:split], temperature, chunk_rows, with_entropy=with_entropy
    )
    if untempered_rows:
        plain, _ = token_logprobs(out.logits[split:], targets[split:], 1.0, chunk_rows)
        logp = torch.cat([logp, plain])
    result = {"logp": logp}
    if entropy is not None:
        result["entropy"] = entropy
    if with_values:
        keep = input_ids.shape[1] - start + 1  # the outputs end at L-1: positions start-1..L-2
        result["values"] = out.state_values[:, -keep:-1].float()
    return result
