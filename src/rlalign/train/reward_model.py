"""The reward-model stage: a scalar head on an HF backbone, trained on preference pairs.

The reward model r_phi(prompt, response) is ``AutoModelForSequenceClassification`` with one
label (the score of the last non-padding token), initialised from the SFT or pretrained model.
It is trained with the Bradley–Terry loss

.. math:: L = -\\log \\sigma\\big(r_\\phi(x, y_{chosen}) - r_\\phi(x, y_{rejected}) - m\\big)

(``m`` the optional per-pair margin), on the shared training loop, and saved so that
``AutoModelForSequenceClassification.from_pretrained`` loads it.
:class:`rlalign.rewards.reward_model.RewardModel` scores completions with it, with the
reward-function signature, so RL uses it like any other reward.

With ``lm_loss_coef`` > 0 the loss adds the GRM regulariser (Yang et al. 2024, "Regularizing
Hidden States Enables Learning Generalizable Reward Model for LLMs"): ``alpha`` times the
next-token loss of the chosen response, computed from the same final hidden states through the
backbone's language-model head, so the hidden states that the score reads keep what the
language model knows instead of being reshaped to memorise the training pairs. The head is the
input embedding when the backbone ties them, else the SFT model's ``lm_head`` kept frozen beside
the reward model; either way the saved model is a plain sequence-classification model.

With ``prior_coef`` = c > 0 the reward is the head's score plus a frozen prior,

.. math:: r(x, y) = r_\\phi(x, y) + c \\log p_0(y \\mid x),

the log-likelihood of the response under the model the reward model starts from (the SFT
model), and the Bradley–Terry loss is taken on that sum: the head learns what the prior gets
wrong, a residual. A reward model trained from a few hundred pairs memorises them and cannot
tell a true fact from a false one for a question it did not see (62% on the world's held-out
facts), while the SFT model, which read every fact in pre-training, ranks them by likelihood
(100%); the SFT data's flaws (answered harmful requests) are what the head corrects. The prior
is computed once per sequence before training (as TRL's DPO ``precompute_ref_log_probs``) and
saved with the reward model (``final/prior/`` and ``final/reward_prior.json``), so
:class:`~rlalign.rewards.reward_model.RewardModel` scores completions the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from rlalign.data.formats import load_preferences
from rlalign.dist import RankInfo, all_gather_objects
from rlalign.errors import UserError
from rlalign.lm.chat import IGNORE_INDEX, pad_right
from rlalign.lm.models import check_weight_files
from rlalign.lm.tokenizer import load_tokenizer
from rlalign.rewards.reward_model import (
    encode_scored_labelled,
    labelled_token_nll,
    load_prior_model,
    response_logprobs,
    save_prior,
    sequence_scores,
)
from rlalign.runtime import resolve_device, uses_bf16
from rlalign.train.chat_data import ExampleBatches
from rlalign.train.config import TrainingConfig
from rlalign.train.lora import LoraSettings, apply_lora
from rlalign.train.run import holds_run_directory, prepare_run
from rlalign.train.sizes import check_fits_in_memory, check_length
from rlalign.train.stage import train_and_save


class RewardConfig(TrainingConfig):
    """``rlalign reward`` settings: the shared training keys plus pair handling."""

    output_dir: str = "runs/reward"
    tokenizer: str | None = Field(None, description="tokenizer dir; default: the model's")
    lora: LoraSettings | None = Field(
        None, description="train LoRA adapters instead of every weight (peft)"
    )
    max_length: int = Field(256, ge=2, description="tokens per prompt + response")
    eval_data: str | None = Field(
        None,
        description="held-out preference file (e.g. a world's eval/preferences.jsonl); "
        "default: eval_fraction of the training pairs, split by prompt",
    )
    eval_fraction: float = Field(
        0.1, ge=0, lt=1, description="held-out share of pairs when eval_data is not set"
    )
    use_margin: bool = Field(True, description="subtract each pair's 'margin' in the loss")
    lm_loss_coef: float = Field(
        0.0,
        ge=0,
        description="GRM regulariser: weight of the chosen response's next-token loss, "
        "through the backbone's LM head, added to the Bradley-Terry loss (0: off)",
    )
    prior_coef: float = Field(
        0.0,
        ge=0,
        description="weight c of the starting model's log-likelihood log p0(y|x) of the "
        "response, added to the score (frozen; the head learns the residual; 0: off)",
    )
    max_steps: int = Field(300, gt=0)
    learning_rate: float = Field(5e-4, gt=0)
    warmup_steps: int = Field(20, ge=0)
    per_device_train_batch_size: int = Field(16, gt=0, description="pairs per micro-batch")
    eval_steps: int = Field(100, gt=0)
    save_steps: int = Field(200, gt=0)


def bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-pair ``-log sigmoid(r_chosen - r_rejected - margin)`` (a ``(B,)`` tensor)."""
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff)


@dataclass
class PairBatch:
    chosen: list[int]
    rejected: list[int]
    margin: float
    kind: str | None = None
    chosen_labels: list[int] | None = None  # for the LM regulariser
    prior: tuple[float, float] = (0.0, 0.0)  # c * log p0(y|x) of chosen and rejected


def collate_pairs(pairs: list[PairBatch], pad_id: int) -> dict[str, torch.Tensor]:
    ids, mask = pad_right([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "margin": torch.tensor([p.margin for p in pairs], dtype=torch.float32),
        "prior": torch.tensor(
            [p.prior[0] for p in pairs] + [p.prior[1] for p in pairs], dtype=torch.float32
        ),
    }
    if pairs and all(p.chosen_labels is not None for p in pairs):
        labels = torch.full((len(pairs), ids.shape[1]), IGNORE_INDEX, dtype=torch.long)
        for i, p in enumerate(pairs):
            labels[i, : len(p.chosen_labels)] = torch.tensor(p.chosen_labels)
        batch["chosen_labels"] = labels
    return batch


def per_sequence_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each row's mean next-token cross-entropy over its labelled tokens, ``(B,)`` fp32."""
    counts = (labels[:, 1:] != IGNORE_INDEX).sum(dim=1).to(logits.device)
    return labelled_token_nll(logits, labels).sum(dim=1) / counts.clamp_min(1)


class LMHeadTap:
    """Language-model logits of the reward model's first ``rows`` sequences, from the
    backbone's final hidden states (the ones the score head reads), for the GRM regulariser.

    A forward hook on the backbone computes them during the reward model's own forward pass,
    so data-parallel wrappers see one forward and FSDP has the (tied) embedding gathered.

    Args:
        model: the sequence-classification model (or a PEFT model around one).
        head_weight: the ``(vocab, hidden)`` LM head of an untied backbone (kept frozen);
            ``None`` when the backbone ties it to the input embedding.
    """

    def __init__(self, model: Any, head_weight: torch.Tensor | None) -> None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.backbone = getattr(base, base.base_model_prefix)
        self.head_weight = head_weight
        self.rows = 0
        self.logits: torch.Tensor | None = None

    def _hook(self, module: Any, args: Any, output: Any) -> None:
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        if self.head_weight is None:
            weight = module.get_input_embeddings().weight
        else:
            weight = self.head_weight = self.head_weight.to(hidden.device)
        self.logits = F.linear(hidden[: self.rows], weight)

    def run(self, model: Any, rows: int, **inputs: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """``sequence_scores(model, **inputs)`` and the LM logits of the first ``rows``."""
        self.rows = rows
        handle = self.backbone.register_forward_hook(self._hook)
        try:
            scores = sequence_scores(model, **inputs)
        finally:
            handle.remove()
        logits, self.logits = self.logits, None
        return scores, logits


def untied_lm_head(model_dir: str | Path, config: Any) -> torch.Tensor | None:
    """The causal LM's own ``lm_head.weight`` when it is not tied to the embedding, else None.

    ``AutoModelForSequenceClassification`` drops that head; the regulariser needs it."""
    if getattr(config, "tie_word_embeddings", True):
        return None
    from transformers import AutoModelForCausalLM

    check_weight_files(Path(model_dir))
    try:
        lm = AutoModelForCausalLM.from_pretrained(model_dir)
    except ValueError as exc:
        raise UserError(
            f"model={str(model_dir)!r}: lm_loss_coef needs the causal LM's head, and "
            f"transformers cannot load this model as one ({exc}); set lm_loss_coef=0"
        ) from None
    return lm.get_output_embeddings().weight.detach().clone()


def make_preference_loss(lm_loss_coef: float = 0.0, tap: LMHeadTap | None = None):
    """The reward model's loss for the training loop: Bradley–Terry, summed over the
    micro-batch's pairs and divided by the step's pairs; with ``lm_loss_coef`` > 0 plus that
    times each chosen response's mean next-token loss (logged as ``lm_loss``)."""

    def loss_fn(model: Any, batch: dict[str, torch.Tensor], num_items: torch.Tensor):
        n = batch["margin"].shape[0]
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if lm_loss_coef > 0 and tap is not None:
            scores, logits = tap.run(model, n, **inputs)
        else:
            scores, logits = sequence_scores(model, **inputs), None
        scores = scores + batch["prior"].to(scores.device)  # zero unless prior_coef > 0
        chosen, rejected = scores[:n], scores[n:]
        loss = bradley_terry_loss(chosen, rejected, batch["margin"]).sum() / num_items
        metrics = {}
        with torch.no_grad():
            metrics["bt_loss"] = loss.detach()
            metrics["accuracy"] = (chosen > rejected).float().sum() / num_items
            metrics["reward_margin"] = (chosen - rejected).sum() / num_items
        if logits is not None:
            lm = per_sequence_lm_loss(logits, batch["chosen_labels"]).sum() / num_items
            metrics["lm_loss"] = lm.detach()
            loss = loss + lm_loss_coef * lm
        return loss, metrics

    return loss_fn


preference_loss = make_preference_loss()


def count_pairs(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["margin"].shape[0])


@torch.no_grad()
def evaluate_pairs(
    model: Any,
    batches: list[dict[str, torch.Tensor]],
    device: torch.device,
    kinds: list[list[str | None]] | None = None,
) -> dict[str, float]:
    """Held-out pairwise accuracy (chosen scored above rejected) and mean loss; with ``kinds``
    (each batch's pair labels), also ``eval_accuracy/<kind>`` for every labelled kind."""
    correct, total, loss = 0, 0, 0.0
    by_kind: dict[str, list[int]] = {}
    for b, batch in enumerate(batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        scores = sequence_scores(model, batch["input_ids"], batch["attention_mask"])
        scores = scores + batch["prior"]
        n = scores.shape[0] // 2
        right = (scores[:n] > scores[n:]).tolist()
        correct += sum(right)
        loss += float(bradley_terry_loss(scores[:n], scores[n:], batch["margin"]).sum())
        total += n
        for kind, ok in zip(kinds[b] if kinds else [None] * n, right, strict=True):
            if kind is not None:
                tally = by_kind.setdefault(kind, [0, 0])
                tally[0] += int(ok)
                tally[1] += 1
    out = {"eval_accuracy": correct / max(total, 1), "eval_loss": loss / max(total, 1)}
    out.update({f"eval_accuracy/{k}": c / n for k, (c, n) in sorted(by_kind.items())})
    return out


def split_by_prompt(
    pairs: list[dict[str, Any]], fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A seeded held-out share of the pairs in which no prompt is also a training prompt.

    Several pairs often share a prompt (another wrong answer to the same question); split pair
    by pair, the held-out accuracy would partly measure memorised training questions.
    """
    if fraction <= 0 or len(pairs) < 2:
        return list(pairs), []
    prompts = list(dict.fromkeys(p["prompt"] for p in pairs))
    gen = torch.Generator().manual_seed(seed)
    order = [prompts[i] for i in torch.randperm(len(prompts), generator=gen).tolist()]
    size: dict[str, int] = {}
    for p in pairs:
        size[p["prompt"]] = size.get(p["prompt"], 0) + 1
    target = max(1, round(len(pairs) * fraction))
    held: set[str] = set()
    count = 0
    for prompt in order[:-1]:  # at least one prompt stays for training
        if count >= target:
            break
        held.add(prompt)
        count += size[prompt]
    return [p for p in pairs if p["prompt"] not in held], [p for p in pairs if p["prompt"] in held]


def require_model_dir(model_dir: str) -> Path:
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise UserError(
            f"model={model_dir!r}: a reward model starts from a model directory with a "
            "config.json (an SFT or pretrained run's final/ directory)"
        )
    return path


def load_backbone_as_reward_model(model_dir: str, tokenizer: Any, seed: int) -> Any:
    """``AutoModelForSequenceClassification`` (one label) from a causal-LM directory."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = require_model_dir(model_dir)
    check_weight_files(path)
    torch.manual_seed(seed)  # the new score head is initialised from the global RNG
    config = AutoConfig.from_pretrained(path, num_labels=1)
    config.pad_token_id = tokenizer.pad_token_id
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the new score head is "missing" by design: no warning
    try:
        # fp32 master weights whatever dtype the backbone was saved in (see load_model)
        return AutoModelForSequenceClassification.from_pretrained(
            path, config=config, dtype=torch.float32
        )
    except ValueError as exc:
        raise UserError(
            f"model={model_dir!r}: transformers has no sequence-classification head for "
            f"model_type={config.model_type!r} ({exc})"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)


@holds_run_directory
def run_reward(cfg: RewardConfig, *, resume: bool = False):
    """Train (or continue training) a reward model as configured."""

    rank = RankInfo.detect()
    pairs = load_preferences(cfg.data)
    if cfg.eval_data is not None:
        train_pairs, held_pairs = pairs, load_preferences(cfg.eval_data)
    else:
        train_pairs, held_pairs = split_by_prompt(pairs, cfg.eval_fraction, cfg.seed)
    require_model_dir(cfg.model)  # before its tokenizer, whose error would not name model=
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
    model = load_backbone_as_reward_model(cfg.model, tokenizer, cfg.seed)
    model = apply_lora(model, cfg.lora, task="seq_cls", seed=cfg.seed)
    tap = None
    if cfg.lm_loss_coef > 0:
        tap = LMHeadTap(model, untied_lm_head(cfg.model, model.config))
    check_length("max_length", cfg.max_length, model)
    device = resolve_device(cfg.device, rank)
    check_fits_in_memory(
        model,
        sequences=2 * cfg.per_device_train_batch_size,  # chosen and rejected
        length=cfg.max_length,
        length_key="max_length",
        device=device,
        bf16=uses_bf16(cfg.bf16, device, model),
        logits=False,  # a score per sequence (the LM regulariser's logits are left out)
    )
    max_length = cfg.max_length

    prior = load_prior_model(cfg.model) if cfg.prior_coef > 0 else None

    def encode(p: dict[str, Any]) -> tuple[PairBatch, list[tuple[list[int], list[int]]]]:
        # labels (the response's tokens, as SFT labels them) feed the LM regulariser and
        # the prior; the token ids are encode_scored's either way
        chosen = encode_scored_labelled(tokenizer, p["prompt"], p["chosen"], max_length)
        rejected = encode_scored_labelled(tokenizer, p["prompt"], p["rejected"], max_length)
        pair = PairBatch(
            chosen[0],
            rejected[0],
            p["margin"] if cfg.use_margin else 0.0,
            p["kind"],
            chosen[1] if tap is not None else None,
        )
        return pair, [chosen, rejected]

    encoded = [encode(p) for p in train_pairs + held_pairs]
    if prior is not None and encoded:
        # one pass over the training and held-out sequences together; each rank scores its
        # share, then every rank takes all of them
        seqs = [seq for _, both in encoded for seq in both]
        share = -(-len(seqs) // rank.world_size)
        mine = response_logprobs(
            prior.to(device),
            seqs[rank.rank * share : (rank.rank + 1) * share],
            batch_size=cfg.eval_batch_size,
            device=device,
            desc="prior of the preference pairs" if rank.is_main else None,
        )
        prior.to("cpu")  # only saved from here on: no accelerator memory kept
        logps = [lp for part in all_gather_objects(mine) for lp in part]
        for k, (pair, _) in enumerate(encoded):
            pair.prior = (cfg.prior_coef * logps[2 * k], cfg.prior_coef * logps[2 * k + 1])
    train = [pair for pair, _ in encoded[: len(train_pairs)]]
    held_out = [pair for pair, _ in encoded[len(train_pairs) :]]
    prepare_run(cfg, resume=resume, rank=rank)
    pad_id = tokenizer.pad_token_id
    data = ExampleBatches(
        train,
        cfg.per_device_train_batch_size,
        seed=cfg.seed,
        collate_fn=lambda b: collate_pairs(b, pad_id),
    )
    eval_fn = None
    if held_out:
        size = cfg.eval_batch_size
        chunks = [held_out[i : i + size] for i in range(0, len(held_out), size)]
        eval_batches = [collate_pairs(chunk, pad_id) for chunk in chunks]
        eval_kinds = [[p.kind for p in chunk] for chunk in chunks]

        def eval_fn(m: Any) -> dict[str, float]:
            return evaluate_pairs(m, eval_batches, next(m.parameters()).device, eval_kinds)

    return train_and_save(
        model,
        tokenizer,
        make_preference_loss(cfg.lm_loss_coef, tap),
        data,
        cfg,
        resume=resume,
        count_fn=count_pairs,
        eval_fn=eval_fn,
        item_name="pairs",
        rank=rank,
        final_extra=None if prior is None else lambda d: save_prior(prior, cfg.prior_coef, d),
    )
