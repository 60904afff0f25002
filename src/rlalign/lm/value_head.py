"""A causal LM with a value head: the policy and critic that PPO trains.

:func:`rlalign.lm.logprobs.completion_forward` reads ``log pi(a_t | s_t)``, the entropy and
``V(s_t)`` from one forward pass of it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from rlalign.dist import unwrap_model


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
    model = unwrap_model(model)
    return model.policy if isinstance(model, PolicyWithValueHead) else model
