"""Rollouts: the LLM as an agent, one batch of episodes at a time.

Each rollout takes the next ``prompts_per_iteration`` prompts (the initial states), samples
``num_generations`` completions for each with the fast sampler (every sampled token is an
action, with its behaviour log-prob from the same pass), scores the responses with the composed
reward, and turns everything into per-token tensors with :mod:`rlalign.rl`:

- per-token rewards ``r_t``: the response's score on its last token (and, for PPO,
  ``-beta * KL_t`` on every token);
- advantages: GAE with the value head (PPO), or the group / leave-one-out / batch baseline of
  the score placed on the last token and carried back with :func:`rlalign.rl.discounted_returns`
  (so ``gamma < 1`` gives ``A_t = gamma^(L-1-t) A``, what the chapter's ``G_t`` says);
- the reference model's log-probs when the KL term is in the loss.

:class:`RolloutSource` is the loop's :class:`~rlalign.train.loop.OnPolicySource`: the loop calls its
``collect_rollout()``, then takes micro-batches of the result,
``num_iterations`` shuffled passes per rollout, and checkpoints its whole state (prompt order,
sampling generator, the current rollout buffer), so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from rlalign.dist import RankInfo, all_gather_objects, all_ranks_true, is_distributed
from rlalign.errors import UserError
from rlalign.io import atomic_write_text
from rlalign.lm.fast_linear import inference_linears
from rlalign.lm.logprobs import completion_forward
from rlalign.lm.sampling import sample
from rlalign.lm.value_head import unwrap_policy
from rlalign.rl import (
    discounted_returns,
    gae,
    group_advantages,
    kl_estimate,
    rloo_advantages,
    whiten,
)
from rlalign.runtime import resolve_device, uses_bf16
from rlalign.train.data import BlockBatches
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


def _pad_to(tensor: torch.Tensor, left: int, right: int, value: float) -> torch.Tensor:
    return torch.nn.functional.pad(tensor, (left, right), value=value)


def gather_rollouts(local: dict[str, Any], *, pad_id: int) -> dict[str, Any]:
    """Every rank's part of a rollout, concatenated in rank order (= prompt order).

    Parts differ in prompt width and completion length: each is re-padded to the widest (more
    left padding on the prompt, more masked slots after the completion), which changes no
    value. Tensors travel with ``all_gather``; texts and reward components as objects.
    """
    if not is_distributed():
        return local
    import torch.distributed as dist

    start, total = local["prompt_length"], local["sequences"].shape[1]
    sizes = torch.tensor([start, total - start])
    dist.all_reduce(sizes, op=dist.ReduceOp.MAX)
    width, length = int(sizes[0]), int(sizes[1])
    left, right = width - start, length - (total - start)
    padded = {
        "sequences": _pad_to(local["sequences"], left, right, pad_id),
        "attention_mask": _pad_to(local["attention_mask"], left, right, 0),
    }
    for key in ("completion_mask", "old_logp", "ref_logp", "old_values"):
        padded[key] = _pad_to(local[key], 0, right, 0.0)
    padded["scores"] = local["scores"]
    world = dist.get_world_size()
    batch: dict[str, Any] = {}
    for key, value in padded.items():
        parts = [torch.empty_like(value) for _ in range(world)]
        dist.all_gather(parts, value.contiguous())
        batch[key] = torch.cat(parts)
    batch["prompt_length"] = width
    objects = all_gather_objects(
        {"texts": local["texts"], "components": local["components"], "s": local["sample_seconds"]}
    )
    batch["texts"] = [t for part in objects for t in part["texts"]]
    batch["components"] = {
        k: [v for part in objects for v in part["components"][k]] for k in local["components"]
    }
    batch["sample_seconds"] = max(part["s"] for part in objects)
    return batch


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
        ptx: Any = None,
        device: torch.device | None = None,
    ) -> None:
        self._init_training_side(cfg, model, ref_model, tokenizer, rollout_dir, ptx, device)
        self.prompts = prompts
        self.rewarder = rewarder
        self.prompt_order = BlockBatches(
            {"input_ids": torch.arange(len(prompts))}, cfg.prompts_per_iteration, seed=cfg.seed
        )
        problem = cfg.rollout_split_problem(self.rank.world_size)
        if problem:
            raise UserError(problem)
        self._encoded = self._encode_all()

    def _init_training_side(
        self,
        cfg: RLConfig,
        model: torch.nn.Module,
        ref_model: torch.nn.Module | None,
        tokenizer: Any,
        rollout_dir: Path | None,
        ptx: Any,
        device: torch.device | None,
    ) -> None:
        """What every rollout source shares: the models, the buffer it serves and its place in
        it, the sampling generator and the precisions."""
        self.cfg = cfg
        self.ptx = ptx  # PPO-ptx text blocks (BlockBatches), one draw per micro-batch
        self.model = model
        self.ref_model = ref_model
        self.tokenizer = tokenizer
        self.rollout_dir = rollout_dir
        self.prompt_order: BlockBatches | None = None
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.iteration = 0
        self.buffer: dict[str, torch.Tensor] | None = None
        self.order: torch.Tensor | None = None
        self.position = 0
        self.rank = RankInfo.detect()
        # The precisions follow the device the loop will train on (default: cfg.device): the
        # model is still where it was loaded (the CPU), and the loop moves it later.
        train_bf16 = uses_bf16(cfg.bf16, device or resolve_device(cfg.device, self.rank), model)
        self.train_dtype = torch.bfloat16 if train_bf16 else None
        self.rollout_dtype = torch.bfloat16 if cfg.rollout_uses_bf16(train_bf16) else None
        cfg.accumulation_steps(self.rank.world_size)  # global_batch_size splits over the ranks
        # Under FSDP every rank must run the same forward passes (each gathers the weights).
        self._lockstep = self.rank.distributed and cfg.distributed == "fsdp"

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

    def needs_rollout(self) -> bool:
        """Every pass over the current rollout has been served (or none was collected yet)."""
        if self.buffer is None:
            return True
        return self.position >= self.buffer["sequences"].shape[0] * self.cfg.num_iterations

    def __next__(self) -> dict[str, torch.Tensor]:
        """The next micro-batch of the current rollout: ``num_iterations`` passes over it,
        each in a fresh seeded shuffle."""
        cfg = self.cfg
        size = cfg.per_device_train_batch_size
        if self.needs_rollout():
            raise RuntimeError("the rollout is used up: call collect_rollout() first")
        n = self.buffer["sequences"].shape[0]
        pass_position = self.position % n
        if pass_position == 0:  # a new pass over the rollout: a fresh shuffle
            gen = torch.Generator().manual_seed(
                cfg.seed * 7919 + self.iteration * 131 + self.position // n
            )
            self.order = torch.randperm(n, generator=gen)
        rows = self.order[pass_position : pass_position + size]
        self.position += size
        batch = {k: v[rows] for k, v in self.buffer.items()}
        if self.ptx is not None:
            text = next(self.ptx)
            batch["ptx_input_ids"], batch["ptx_labels"] = text["input_ids"], text["labels"]
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {
            "prompt_order": self.prompt_order.state_dict() if self.prompt_order else None,
            "generator": self.generator.get_state(),
            "iteration": self.iteration,
            "buffer": self.buffer,
            "order": self.order,
            "position": self.position,
            "ptx": self.ptx.state_dict() if self.ptx is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.prompt_order is not None:
            self.prompt_order.load_state_dict(state["prompt_order"])
        self.generator.set_state(state["generator"])
        self.iteration = int(state["iteration"])
        self.buffer = state["buffer"]
        self.order = state["order"]
        self.position = int(state["position"])
        if self.ptx is not None and state.get("ptx") is not None:
            self.ptx.load_state_dict(state["ptx"])
        self._discard_later_rollouts()

    def _discard_later_rollouts(self) -> None:
        """A resumed run's rollout files end where its checkpoint does, as its metrics do: the
        rollouts a killed run collected after it are collected again (the same, bit for bit),
        or never if the run now stops sooner."""
        if self.rollout_dir is None or not self.rollout_dir.is_dir():
            return
        for path in self.rollout_dir.glob("iter_*.jsonl"):
            number = path.name[len("iter_") : -len(".jsonl")]
            if number.isdigit() and int(number) > self.iteration:
                path.unlink()

    # --- one rollout -------------------------------------------------------------------

    @torch.no_grad()
    def collect_rollout(self) -> dict[str, float]:
        """Sample, score and credit one rollout; returns its metrics. Under torchrun each rank
        samples and scores its share of the prompts (whole groups), and every rank then holds
        the whole batch."""
        cfg, rank = self.cfg, self.rank
        policy = unwrap_policy(self.model)
        was_training = policy.training
        index = next(self.prompt_order)["input_ids"].tolist()
        n = len(index) * cfg.num_generations
        # One random number per draw for the whole batch, taken before the batch is split:
        # a completion depends on its own numbers only, so the rollout is the same at any
        # world size.
        uniforms = torch.rand((n, cfg.max_completion_length), generator=self.generator)
        share, rows_share = len(index) // rank.world_size, n // rank.world_size
        mine = index[rank.rank * share : (rank.rank + 1) * share]
        local = self._sample_and_score(
            mine, uniforms[rank.rank * rows_share : (rank.rank + 1) * rows_share]
        )
        batch = gather_rollouts(local, pad_id=self.tokenizer.pad_token_id)
        metrics = self._credit([self.prompts[i] for i in index], batch)
        policy.train(was_training)
        return metrics

    def _sample_and_score(self, index: list[int], uniforms: torch.Tensor) -> dict[str, Any]:
        """This rank's part of a rollout: completions, scores, behaviour/reference log-probs and
        (PPO) values of the prompts ``index``."""

        cfg = self.cfg
        policy = unwrap_policy(self.model)
        device = next(policy.parameters()).device
        rows = [self.prompts[i] for i in index]
        pad = self.tokenizer.pad_token_id
        width = max(len(self._encoded[i]) for i in index)
        input_ids = torch.full((len(index), width), pad, dtype=torch.long)
        attention = torch.zeros((len(index), width), dtype=torch.long)
        for r, i in enumerate(index):
            ids = self._encoded[i]
            input_ids[r, width - len(ids) :] = torch.tensor(ids)
            attention[r, width - len(ids) :] = 1

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
            uniforms=uniforms,
            autocast_dtype=self.rollout_dtype,
            all_done=self._all_ranks_done if self._lockstep else None,
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

        def scored(model: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
            """``completion_forward(model)`` in the training precision, masked."""
            tokens = sequences.shape[0] * (sequences.shape[1] - start + 1)
            with self._training_precision(model, tokens):
                out = completion_forward(
                    model, sequences.to(device), full_mask.to(device), start, **kwargs
                )
            return {key: value.cpu() * completion_mask for key, value in out.items()}

        ref_logp = torch.zeros_like(old_logp)
        if self.ref_model is not None:
            ref_logp = scored(self.ref_model, temperature=cfg.temperature)["logp"]
        old_values = torch.zeros_like(old_logp)
        ppo, truncated = cfg.algorithm == "ppo", cfg.truncates_sampling()
        if ppo or truncated:
            own = scored(self.model, temperature=cfg.temperature, with_values=ppo)
            if truncated:  # the policy's log-probs, not the truncated ones
                old_logp = own["logp"]
            if ppo:
                old_values = own["values"]
        return {
            "sequences": sequences,
            "attention_mask": full_mask,
            "completion_mask": completion_mask,
            "old_logp": old_logp,
            "ref_logp": ref_logp,
            "old_values": old_values,
            "prompt_length": start,
            "scores": torch.tensor(scores_list, dtype=torch.float32),
            "texts": texts,
            "components": {k: [float(v) for v in vs] for k, vs in components.items()},
            "sample_seconds": sample_seconds,
        }

    def _training_precision(self, model: Any, rows: int) -> contextlib.ExitStack:
        """The precision of the training forward (bf16 autocast when the loop uses it), for
        the no-grad forwards of a rollout: reference log-probs and PPO's old values then carry
        the same rounding as the policy's training forward, and their linear layers run on
        weights cast and packed once (``inference_linears``)."""
        stack = contextlib.ExitStack()
        param = next(unwrap_policy(self.model).parameters())
        if self.train_dtype is not None:
            stack.enter_context(torch.autocast(param.device.type, dtype=self.train_dtype))
        stack.enter_context(inference_linears(model, dtype=self.train_dtype, rows=rows))
        return stack

    def _all_ranks_done(self, done: bool) -> bool:
        device = next(unwrap_policy(self.model).parameters()).device
        return all_ranks_true(done, device)

    def _credit(self, prompt_rows: list[dict[str, Any]], batch: dict[str, Any]) -> dict[str, float]:
        """Per-token rewards, KL and advantages of the whole batch (identical on every rank),
        then the training buffer and the viewer's rollouts; returns the rollout's metrics."""
        cfg = self.cfg
        completion_mask, old_logp = batch["completion_mask"], batch["old_logp"]
        ref_logp, old_values, scores = batch["ref_logp"], batch["old_values"], batch["scores"]
        components, texts = batch["components"], batch["texts"]
        lengths = completion_mask.sum(dim=1)
        kl = kl_estimate(old_logp, ref_logp, kind="k1", mask=completion_mask)

        token_rewards = last_token_rewards(scores, completion_mask)
        if cfg.algorithm == "ppo":
            if self.ref_model is not None and cfg.beta:
                token_rewards = token_rewards - cfg.beta * kl
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

        sequences = batch["sequences"]
        start = batch["prompt_length"]
        self.buffer = {
            "sequences": sequences,
            "attention_mask": batch["attention_mask"],
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
            # all ranks sample at once: the batch's tokens over the slowest rank's time
            "rollout_tokens_per_s": n_tokens / max(batch["sample_seconds"], 1e-9),
        }
        if self.ref_model is not None:
            metrics["kl_ref"] = float(kl.sum() / completion_mask.sum().clamp(min=1))
        for name, values in components.items():
            metrics[f"reward/{name}"] = sum(values) / max(len(values), 1)
        if self.rollout_dir is not None and self.cfg.save_rollouts:
            expanded = [row for row in prompt_rows for _ in range(cfg.num_generations)]
            self._save_rollouts(
                expanded, texts, scores, components, token_rewards, kl, advantages, returns,
                old_values, ref_logp,
            )  # fmt: skip
        return metrics

    def _save_rollouts(
        self, rows, texts, scores, components, rewards, kl, adv, returns, values, ref_logp
    ) -> None:
        """``rollouts/iter_K.jsonl``: per-token data of a few rollouts, for the viewer."""
        cfg, buf = self.cfg, self.buffer
        start = int(buf["prompt_length"][0])
        token_returns = discounted_returns(rewards, cfg.gamma, buf["completion_mask"])
        lines = []
        # Spread over prompts (first completion of every prompt, then the second, ...), so the
        # viewer shows every kind of prompt rather than one prompt's whole group.
        groups, size = len(texts) // cfg.num_generations, cfg.num_generations
        spread = [p * size + g for g in range(size) for p in range(groups)]
        for j in spread[: cfg.save_rollouts]:
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

        text = "".join(json.dumps(line) + "\n" for line in lines)
        atomic_write_text(self.rollout_dir / f"iter_{self.iteration}.jsonl", text)
