"""The RL core: model-agnostic policy-gradient math on tensors.

Everything here is torch-only, batched, and masked for variable-length sequences; each function
states the equation it implements. The car (``rlalign.control``) and the language model
(``rlalign.lm`` / ``rlalign.train``) compute every number they optimise with these functions.

Config keys and the core's names. The configs (``rlalign rl`` and ``rlalign control train``)
use TRL's names; the core names each argument after the equation it enters. This is the one
mapping between them:

====================  ===============================================================
config key            core argument
====================  ===============================================================
``epsilon``           ``policy_loss(clip_eps_low=...)`` (and ``clip_eps_high`` unless set)
``epsilon_high``      ``policy_loss(clip_eps_high=...)``
``cliprange_value``   ``value_loss(clip_eps=...)``
``lam``               ``gae(lam=...)``
``gamma``             ``discounted_returns(gamma=...)``, ``gae(gamma=...)``
``beta``              ``policy_loss(beta=...)``
``kl_estimator``      ``policy_loss(kl_kind=...)``
``loss_type``         ``policy_loss(loss_type=...)``: ``grpo`` = ``sequence``, ``dapo`` =
                      ``token``, ``dr_grpo`` = ``constant``
``algorithm``         ``policy_loss(kind=...)``: ``reinforce`` for REINFORCE, ``ppo`` (the
                      clipped surrogate) for PPO, GRPO and RLOO, which differ in their
                      advantages (:func:`gae`, :func:`group_advantages`,
                      :func:`rloo_advantages`)
====================  ===============================================================

Example -- the chapter's return on a three-step reward sequence::

    >>> import torch
    >>> from rlalign.rl import discounted_returns
    >>> discounted_returns(torch.tensor([1.0, 0.0, 2.0]), gamma=0.5)
    tensor([1.5000, 1.0000, 2.0000])
"""

from rlalign.rl.advantages import group_advantages, rloo_advantages, turn_advantages
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
    "turn_advantages",
    "value_loss",
    "whiten",
]
