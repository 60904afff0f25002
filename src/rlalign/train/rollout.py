"""Rollouts: the LLM as an agent, one batch of episodes at a time.

Each rollout takes the next ``prompts_per_iteration`` prompts (the initial states), samples
``num_generations`` completions for each with the fast sampler (every sampled token is an
action, with its behaviour log-prob from the same pass), scores the responses with the composed
reward, and turns everything into per-token tensors with :mod:`rlalign.rl`:

- per-token rewards ``r_t``: the response's score on its last token (and, for PPO,
  ``-beta * KL_t`` on every token);
- advantages: GAE with the value head (PPO), or the group / leave-one-out / batch baseline of
  the score placed on the last token and carried back with :func:`rlalign.rl.discounted_returns`
  (so ``gamma < 1`` gives ``A_t = gamma^(L-1-t) A``, what the seed's ``G_t`` says);
- the reference model's log-probs when the KL term is in the loss.

:class:`RolloutSource` serves the result as micro-batches to the shared training loop,
``num_iterations`` shuffled passes per rollout, and checkpoints its whole state (prompt order,
sampling generator, the current rollout buffer), so a resumed run continues exactly.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from rlalign.errors import UserError
from rlalign.rl import (
    discounted_returns,
    gae,
    group_advantages,
    kl_estimate,
    rloo_advantages,
    whiten,
)
from rlalign.train.data import BlockBatches
from rlalign.train.policy_model import completion_forward, unwrap_policy
from rlalign.train.rl_config import RLConfig


def last_token_rewards(scores: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """``(N, T)`` rewards: each score on its completion's last valid token, 0 elsewhere."""
    rewards = torch.zeros(completion_mask.shape, dtype=torch.float32)
    last = completion_mask.sum(dim=1).long().clamp(min=1) - 1
    rewards[torch.arange(len(scores)), last] = scores.float()
    return rewards


def sequence_advantages(scores: torch.Tensor, cfg: RLConfig) -> torch.Tensor:
    """One advantage per completion from its score and the baseline of the algorithm."""
    if cfg.algorithm == "grpo":
        scale = {"group": "std", "batch": "batch", "none": "none"}[cfg.scale_rewards]
        return group_advantages(scores, cfg.num_generations, scale=scale)
    if cfg.algorithm == "rloo":
        return rloo_advantages(scores, cfg.num_generations)
    return scores - scores.mean()  # REINFORCE with the batch-mean baseline


class RolloutSource:
    """The RL batch source of the training loop (see the module docstring)."""

    def __init__(
        self,
        cfg: RLConfig,
        model: torch.nn.Module,
        ref_model: torch.nn.Module | None,
        tokenizer: Any,
        prompts: list[dict[str, Any]],
        rewarder: Any,
        *,
        rollout_dir: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.ref_model = ref_model
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.rewarder = rewarder
        self.rollout_dir = rollout_dir
        self.prompt_order = BlockBatches(
            {"input_ids": torch.arange(len(prompts))}, cfg.prompts_per_iteration, seed=cfg.seed
        )
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.iteration = 0
        self.buffer: dict[str, torch.Tensor] | None = None
        self.order: torch.Tensor | None = None
        self.position = 0
        self.pending_metrics: list[dict[str, float]] = []
        self.rollout_dtype = torch.bfloat16 if self._rollout_bf16() else None
        self._encoded = self._encode_all()

    def _rollout_bf16(self) -> bool:
        if self.cfg.rollout_bf16 is not None:
            return self.cfg.rollout_bf16
        if self.cfg.bf16 is not None:
            return self.cfg.bf16
        return next(self.model.parameters()).device.type == "cuda"

    def _encode_all(self) -> list[list[int]]:
        """Chat-format every prompt once; reject those that leave no room for an answer."""
        encoded = []
        policy = unwrap_policy(self.model)
        context = getattr(policy.config, "max_position_embeddings", None)
        for i, row in enumerate(self.prompts):
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": row["prompt"]}],
                tokenize=False,
                add_generation_prompt=True,
            )
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            where = row.get("_where", f"prompt {i + 1}")
            if len(ids) > self.cfg.max_prompt_length:
                raise UserError(
                    f"{where}: the prompt is {len(ids)} tokens, more than "
                    f"max_prompt_length={self.cfg.max_prompt_length}; shorten it or raise "
                    "max_prompt_length"
                )
            if context is not None and len(ids) + self.cfg.max_completion_length > context:
                raise UserError(
                    f"{where}: the prompt ({len(ids)} tokens) plus max_completion_length="
                    f"{self.cfg.max_completion_length} exceeds the model's context of {context}"
                )
            encoded.append(ids)
        return encoded

    # --- the BatchSource protocol ------------------------------------------------------

    def __iter__(self) -> RolloutSource:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        size = cfg.per_device_train_batch_size
        n = cfg.prompts_per_iteration * cfg.num_generations
        if self.buffer is None or self.position >= n * cfg.num_iterations:
            self._rollout()
        pass_position = self.position % n
        if pass_position == 0:  # a new pass over the rollout: a fresh shuffle
            gen = torch.Generator().manual_seed(
                cfg.seed * 7919 + self.iteration * 131 + self.position // n
            )
            self.order = torch.randperm(n, generator=gen)
        rows = self.order[pass_position : pass_position + size]
        self.position += size
        return {k: v[rows] for k, v in self.buffer.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "prompt_order": self.prompt_order.state_dict(),
            "generator": self.generator.get_state(),
            "iteration": self.iteration,
            "buffer": self.buffer,
            "order": self.order,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prompt_order.load_state_dict(state["prompt_order"])
        self.generator.set_state(state["generator"])
        self.iteration = int(state["iteration"])
        self.buffer = state["buffer"]
        self.order = state["order"]
        self.position = int(state["position"])

    def pop_metrics(self) -> dict[str, float]:
        """Means of the rollout metrics since the last call (merged into the logged row)."""
        pending, self.pending_metrics = self.pending_metrics, []
        if not pending:
            return {}
        keys = {k for m in pending for k in m}
        return {
            k: sum(m[k] for m in pending if k in m) / sum(k in m for m in pending) for k in keys
        }

    # --- one rollout -------------------------------------------------------------------

    @torch.no_grad()
    def _rollout(self) -> None:
        from rlalign.lm.sampling import sample

        cfg = self.cfg
        policy = unwrap_policy(self.model)
        device = next(policy.parameters()).device
        index = next(self.prompt_order)["input_ids"].tolist()
        rows = [self.prompts[i] for i in index]
        pad = self.tokenizer.pad_token_id
        width = max(len(self._encoded[i]) for i in index)
        input_ids = torch.full((len(index), width), pad, dtype=torch.long)
        attention = torch.zeros((len(index), width), dtype=torch.long)
        for r, i in enumerate(index):
            ids = self._encoded[i]
            input_ids[r, width - len(ids) :] = torch.tensor(ids)
            attention[r, width - len(ids) :] = 1

        was_training = policy.training
        policy.eval()
        started = time.perf_counter()
        out = sample(
            policy,
            input_ids.to(device),
            attention.to(device),
            max_new_tokens=cfg.max_completion_length,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            num_samples=cfg.num_generations,
            tokenizer=self.tokenizer,
            generator=self.generator,
            autocast_dtype=self.rollout_dtype,
        )
        sample_seconds = time.perf_counter() - started
        # clone: the sampler runs in inference mode, and its tensors must not reach autograd
        sequences = out.sequences.cpu().clone()
        full_mask = out.attention_mask.cpu().clone()
        completion_mask = out.completion_mask.cpu().float()
        old_logp = out.logprobs.cpu().float() * completion_mask
        start = out.prompt_length
        lengths = completion_mask.sum(dim=1)

        texts = [
            self.tokenizer.decode(
                out.completion_ids[j, : int(lengths[j])], skip_special_tokens=True
            )
            for j in range(sequences.shape[0])
        ]
        expanded = [row for row in rows for _ in range(cfg.num_generations)]
        fields: dict[str, list[Any]] = {}
        for key in {
            k for row in rows for k in row if k not in ("prompt",) and not k.startswith("_")
        }:
            fields[key] = [row.get(key) for row in expanded]
        scores_list, components = self.rewarder(
            [row["prompt"] for row in expanded], [t.strip() for t in texts], **fields
        )
        scores = torch.tensor(scores_list, dtype=torch.float32)

        ref_logp = torch.zeros_like(old_logp)
        if self.ref_model is not None:
            ref_logp = (
                completion_forward(
                    self.ref_model,
                    sequences.to(device),
                    full_mask.to(device),
                    start,
                    temperature=cfg.temperature,
                )["logp"].cpu()
                * completion_mask
            )
        kl = kl_estimate(old_logp, ref_logp, kind="k1", mask=completion_mask)

        token_rewards = last_token_rewards(scores, completion_mask)
        old_values = torch.zeros_like(old_logp)
        if cfg.algorithm == "ppo":
            if self.ref_model is not None and cfg.beta:
                token_rewards = token_rewards - cfg.beta * kl
            old_values = (
                completion_forward(
                    self.model, sequences.to(device), full_mask.to(device), start, with_values=True
                )["values"].cpu()
                * completion_mask
            )
            advantages, returns = gae(
                token_rewards, old_values, cfg.gamma, cfg.lam, mask=completion_mask
            )
            if cfg.whiten_advantages:
                advantages = whiten(advantages, completion_mask)
        else:
            seq_adv = sequence_advantages(scores, cfg)
            advantages = discounted_returns(
                last_token_rewards(seq_adv, completion_mask), cfg.gamma, completion_mask
            )
            returns = discounted_returns(token_rewards, cfg.gamma, completion_mask)
        policy.train(was_training)

        self.buffer = {
            "sequences": sequences,
            "attention_mask": full_mask,
            "completion_mask": completion_mask,
            "old_logp": old_logp,
            "ref_logp": ref_logp,
            "advantages": advantages.float(),
            "returns": returns.float(),
            "old_values": old_values,
            "prompt_length": torch.full((sequences.shape[0],), start, dtype=torch.long),
        }
        self.position = 0
        self.iteration += 1
        n_tokens = float(completion_mask.sum())
        metrics = {
            "iteration": float(self.iteration),
            "reward_mean": float(scores.mean()),
            "reward_std": float(scores.std()) if len(scores) > 1 else 0.0,
            "completion_length": float(lengths.mean()),
            "rollout_tokens_per_s": n_tokens / max(sample_seconds, 1e-9),
        }
        if self.ref_model is not None:
            metrics["kl_ref"] = float(kl.sum() / completion_mask.sum().clamp(min=1))
        for name, values in components.items():
            metrics[f"reward/{name}"] = sum(values) / max(len(values), 1)
        self.pending_metrics.append(metrics)
        if self.rollout_dir is not None and self.cfg.save_rollouts:
            self._save_rollouts(
                expanded, texts, scores, components, token_rewards, kl, advantages, returns,
                old_values, ref_logp,
            )  # fmt: skip

    def _save_rollouts(
        self, rows, texts, scores, components, rewards, kl, adv, returns, values, ref_logp
    ) -> None:
        """``rollouts/iter_K.jsonl``: per-token data of a few rollouts, for the viewer."""
        cfg, buf = self.cfg, self.buffer
        start = int(buf["prompt_length"][0])
        token_returns = discounted_returns(rewards, cfg.gamma, buf["completion_mask"])
        lines = []
        for j in range(min(cfg.save_rollouts, len(texts))):
            length = int(buf["completion_mask"][j].sum())
            ids = buf["sequences"][j, start : start + length].tolist()
            prompt_ids = buf["sequences"][j, :start][
                buf["attention_mask"][j, :start].bool()
            ].tolist()
            tokens = []
            for t, token_id in enumerate(ids):
                tokens.append({
                    "t": t, "id": token_id, "token": self.tokenizer.decode([token_id]),
                    "logp": float(buf["old_logp"][j, t]), "ref_logp": float(ref_logp[j, t]),
                    "kl": float(kl[j, t]), "reward": float(rewards[j, t]),
                    "return": float(token_returns[j, t]), "value": float(values[j, t]),
                    "advantage": float(adv[j, t]),
                })  # fmt: skip
            lines.append({
                "iteration": self.iteration, "index": j, "prompt": rows[j]["prompt"],
                "kind": rows[j].get("kind"), "prompt_text": self.tokenizer.decode(prompt_ids),
                "completion": texts[j], "reward": float(scores[j]),
                "components": {k: float(v[j]) for k, v in components.items()},
                "algorithm": cfg.algorithm, "gamma": cfg.gamma, "tokens": tokens,
            })  # fmt: skip
        from rlalign.io import atomic_write_text

        text = "".join(json.dumps(line) + "\n" for line in lines)
        atomic_write_text(self.rollout_dir / f"iter_{self.iteration}.jsonl", text)
