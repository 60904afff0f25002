"""Loss functions for the loop: causal language modelling (pretraining and SFT).

Labels follow the Hugging Face convention: ``labels`` has the shape of ``input_ids`` and
``-100`` marks positions that carry no loss (padding, or prompt tokens in SFT); the shift by
one position (token ``t`` predicts token ``t+1``) happens here.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rlalign.lm.chat import IGNORE_INDEX


def count_label_tokens(batch: dict[str, Any]) -> torch.Tensor:
    """Number of predicted tokens in a micro-batch: labels after the shift that are not -100."""
    return (batch["labels"][:, 1:] != IGNORE_INDEX).sum()


def causal_lm_loss(
    model: nn.Module, batch: dict[str, torch.Tensor], num_items: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum of next-token cross-entropies in ``batch`` divided by the step's ``num_items``.

    Logits are upcast to fp32 before the softmax (they may be bf16 under autocast), so the loss
    is accurate whatever precision the matmuls ran in.
    """
    kwargs = {"attention_mask": batch["attention_mask"]} if "attention_mask" in batch else {}
    logits = model(input_ids=batch["input_ids"], **kwargs).logits
    logits = logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return total / num_items, {}


@torch.no_grad()
def evaluate_causal_lm(
    model: nn.Module, batches: list[dict[str, torch.Tensor]], device: torch.device
) -> dict[str, float]:
    """Held-out token-mean loss and perplexity over ``batches`` (every token weighted alike)."""
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        n = count_label_tokens(batch)
        loss, _ = causal_lm_loss(model, batch, torch.ones((), device=device))
        total += loss.double()
        count += int(n)
    mean = float(total) / max(count, 1)
    return {"eval_loss": mean, "eval_perplexity": float(torch.tensor(mean).exp())}
