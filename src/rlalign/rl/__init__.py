"""The RL core: model-agnostic policy-gradient math on tensors.

Everything here is torch-only, batched, and masked for variable-length sequences; each function
states the equation it implements. The car (``rlalign.control``) and the language model
(``rlalign.lm`` / ``rlalign.train``) compute every number they optimise with these functions.

Example -- the seed's return on a three-step reward sequence::

    >>> import torch
    >>> from rlalign.rl import discounted_returns
    >>> discounted_returns(torch.tensor([1.0, 0.0, 2.0]), gamma=0.5)
    tensor([1.5000, 1.0000, 2.0000])
"""

from rlalign.rl.advantages import group_advantages, rloo_advantages
from rlalign.rl.kl import kl_estimate
from rlalign.rl.losses import (
    entropy,
    policy_loss,
    policy_loss_normalizer,
    token_entropy,
    value_loss,
)
from rlalign.rl.returns import discounted_returns, gae
from rlalign.rl.stats import masked_mean, masked_sum, whiten

__all__ = [
    "discounted_returns",
    "entropy",
    "gae",
    "group_advantages",
    "kl_estimate",
    "masked_mean",
    "masked_sum",
    "policy_loss",
    "policy_loss_normalizer",
    "rloo_advantages",
    "token_entropy",
    "value_loss",
    "whiten",
]
