"""The RL alignment stage: the LLM as an agent, improved by policy gradient.

State = the prompt plus the tokens so far; action = the next token; policy = the model's token
distribution; reward = the composed reward of the finished response. Each rollout
(:class:`~rlalign.train.rollout.RolloutSource`) samples completions, scores them and computes
advantages with :mod:`rlalign.rl`; the shared training loop then runs ``num_iterations`` passes
of minibatch updates on :func:`rlalign.rl.policy_loss` (plus the value loss for PPO), with
checkpoints, resume, metrics and a progress bar.

Algorithms: ``ppo`` (GAE with a value head, KL penalty in the per-token reward), ``grpo``
(group-normalised score, KL in the loss), ``rloo`` (leave-one-out baseline), ``reinforce``
(batch-mean baseline).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from rlalign.data.formats import load_prompts
from rlalign.data.verifiers import DEFAULT_REWARD_WEIGHTS, VERIFIERS
from rlalign.data.world import KINDS, World, WorldConfig, load_world
from rlalign.dist import RankInfo
from rlalign.envs import evaluation_seeds
from rlalign.envs.registry import make_text_env
from rlalign.errors import UserError
from rlalign.lm.chat import IGNORE_INDEX
from rlalign.lm.loading import resolve_model_and_tokenizer
from rlalign.lm.logprobs import completion_forward
from rlalign.lm.value_head import PolicyWithValueHead, unwrap_policy
from rlalign.report_card import evaluate_model
from rlalign.rewards import RewardComposer, RewardTerm
from rlalign.rewards.compose import callable_name
from rlalign.rewards.reward_model import RewardModel
from rlalign.rl import policy_loss, policy_loss_normalizer, value_loss
from rlalign.runtime import resolve_device, uses_bf16
from rlalign.train.data import BlockBatches, pack_documents, read_corpus
from rlalign.train.episodes import PlaySettings, play_episodes
from rlalign.train.lora import AdapterDisabled, apply_lora
from rlalign.train.multiturn import (
    EpisodeRolloutSource,
    episode_metrics,
    training_seed_problem,
)
from rlalign.train.rl_config import RLConfig
from rlalign.train.rollout import RolloutSource
from rlalign.train.run import holds_run_directory, prepare_run
from rlalign.train.sizes import check_fits_in_memory
from rlalign.train.stage import train_and_save

# The objective each algorithm optimises; the algorithms differ in their advantages.
POLICY_KIND = {"ppo": "ppo", "grpo": "ppo", "rloo": "ppo", "reinforce": "reinforce"}


def make_count_fn(cfg: RLConfig):
    """Loss terms of a micro-batch, as the chosen ``loss_type`` normalises them."""

    def count(batch: dict[str, torch.Tensor]) -> float:
        mask = batch["completion_mask"]
        real = mask[mask.sum(dim=1) > 0]  # a multi-turn rollout's filler rows have no terms
        if real.shape[0] == 0:
            return 0.0
        return policy_loss_normalizer(real, cfg.loss_type, max_length=cfg.max_completion_length)

    return count


def make_loss_fn(cfg: RLConfig, has_reference: bool):
    """``loss_fn(model, batch, num_items)`` for the training loop."""
    count = make_count_fn(cfg)
    kl_in_loss = has_reference and cfg.beta > 0 and not cfg.kl_in_reward

    def loss_fn(model, batch, num_items):
        start = int(batch["prompt_length"][0])
        mask = batch["completion_mask"]
        ids, attention = batch["sequences"], batch["attention_mask"]
        ptx_rows = 0
        if "ptx_input_ids" in batch:  # PPO-ptx text rides in the same forward (DDP: one)
            ids, attention, ptx_targets = with_ptx_rows(batch, start)
            ptx_rows = ptx_targets.shape[0]
        out = completion_forward(
            model,
            ids,
            attention,
            start,
            temperature=cfg.temperature,
            with_values=cfg.algorithm == "ppo",
            with_entropy=True,
            untempered_rows=ptx_rows,
        )
        if ptx_rows:  # entropy covers the RL rows only
            ptx_logp = out["logp"][-ptx_rows:]
            out = {k: v if k == "entropy" else v[:-ptx_rows] for k, v in out.items()}
        loss, stats = policy_loss(
            out["logp"],
            batch["old_logp"],
            batch["advantages"],
            mask,
            kind=POLICY_KIND[cfg.algorithm],
            loss_type=cfg.loss_type,
            normalizer=num_items,
            clip_eps_low=cfg.epsilon,
            clip_eps_high=cfg.epsilon_high if cfg.epsilon_high is not None else cfg.epsilon,
            ref_logp=batch["ref_logp"] if kl_in_loss else None,
            beta=cfg.beta if kl_in_loss else 0.0,
            kl_kind=cfg.kl_estimator,
        )
        # token means of this micro-batch, weighted by its share of the step's loss terms,
        # so that the loop's sum over micro-batches is the step's mean
        share = torch.as_tensor(count(batch), dtype=torch.float32) / num_items
        n_tokens = mask.sum().clamp(min=1)
        metrics = {k: v * share for k, v in stats.items() if k != "ratio_mean"}
        metrics["entropy"] = (out["entropy"] * mask).sum() / n_tokens * share
        metrics["policy_loss"] = loss.detach()
        if cfg.algorithm == "ppo":
            vloss = value_loss(
                out["values"],
                batch["old_values"],
                batch["returns"],
                mask,
                clip_eps=cfg.cliprange_value,
                normalizer=num_items,
            )
            loss = loss + cfg.vf_coef * vloss
            metrics["value_loss"] = vloss.detach()
        if ptx_rows:
            # the micro-batch's mean next-token loss on the text, weighted like its RL terms
            nll = -(ptx_logp * ptx_targets).sum() / ptx_targets.sum().clamp(min=1)
            loss = loss + cfg.ptx_coef * nll * share
            metrics["ptx_loss"] = nll.detach() * share
        return loss, metrics

    return loss_fn


def with_ptx_rows(
    batch: dict[str, torch.Tensor], start: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The RL rows plus the batch's PPO-ptx text rows, in one left-padded layout.

    The loss reads log-probs of tokens ``start .. L-1`` only, so each text block's first
    ``L - start + 1`` tokens are placed at positions ``start-1 .. L-1`` (padding before them,
    positions from 0): its tokens 1.. are scored, each given the block's tokens before it.
    Returns the ids, the attention mask and which scored text tokens count (``(P, L-start)``,
    0 at the corpus's end padding).
    """

    ids, attention = batch["sequences"], batch["attention_mask"]
    width = ids.shape[1] - start + 1
    blocks, labels = batch["ptx_input_ids"], batch["ptx_labels"]
    if blocks.shape[1] < width:
        raise ValueError(
            f"ptx blocks of {blocks.shape[1]} tokens cannot cover {width - 1} completion tokens"
        )
    blocks, real = blocks[:, :width], (labels[:, :width] != IGNORE_INDEX).to(attention.dtype)
    pad = torch.zeros((blocks.shape[0], start - 1), dtype=ids.dtype, device=ids.device)
    rows = torch.cat([pad, blocks.to(ids.device)], dim=1)
    rows_mask = torch.cat([pad.to(attention.dtype), real.to(attention.device)], dim=1)
    targets = real[:, 1:].float().to(ids.device)
    return torch.cat([ids, rows]), torch.cat([attention, rows_mask]), targets


def build_rewarder(
    cfg: RLConfig,
    device: torch.device | None = None,
    reward_fns: Sequence[Callable[..., Any]] = (),
    *,
    bf16: bool = False,
):
    """The composed reward: rule functions and/or a reward model; the world's verifiers by
    default. A reward model goes on ``device`` (default: ``cfg.device``), the one the policy
    trains on: a GPU run scoring with a real reward model on the CPU would spend most of each
    step there; it scores under bf16 autocast with ``bf16``, the rollout's precision (on 2
    CPU cores, in fp32 it took a third of the demo's RL step). ``reward_fns``: Python
    callables scored in this process, in place of ``cfg.reward_funcs`` (which then hold their
    names, see :mod:`rlalign.api`)."""

    terms: list[RewardTerm] = []
    if reward_fns:
        weights = cfg.reward_weights or [1.0] * len(reward_fns)
        if len(weights) != len(reward_fns):
            raise UserError(
                f"reward_weights has {len(weights)} values for {len(reward_fns)} reward functions"
            )
        names = [callable_name(fn) for fn in reward_fns]
        terms += [
            RewardTerm(n, fn, float(w)) for n, fn, w in zip(names, reward_fns, weights, strict=True)
        ]
    elif cfg.reward_funcs:
        composer = RewardComposer.from_specs(
            cfg.reward_funcs, cfg.reward_weights, timeout=cfg.reward_timeout, builtins=VERIFIERS
        )
        terms += composer.terms
    elif cfg.reward_model is None:
        terms += [
            RewardTerm(name, VERIFIERS[name], w) for name, w in DEFAULT_REWARD_WEIGHTS.items()
        ]
    if cfg.reward_model is not None:
        model = RewardModel(
            cfg.reward_model, device=device or resolve_device(cfg.device), bf16=bf16
        )
        terms.append(RewardTerm("reward_model", model, cfg.reward_model_weight))
    return RewardComposer(terms)


def ptx_batches(cfg: RLConfig, docs: list[str], tokenizer: Any) -> Any:
    """PPO-ptx micro-batches: the corpus packed into blocks one token longer than a
    completion (see :func:`with_ptx_rows`), reshuffled each epoch, resumable."""

    blocks = pack_documents(docs, tokenizer, cfg.max_completion_length + 1)
    return BlockBatches(blocks, cfg.ptx_batch_size, seed=cfg.seed)


def rl_world(cfg: RLConfig) -> World:
    """The built-in world RL draws from: the exported one in ``cfg.world``, else the world of
    ``cfg.world_seed`` at its default sizes."""
    if cfg.world is None:
        return World(WorldConfig(seed=cfg.world_seed))
    world = load_world(cfg.world)
    # 0 is world_seed's default, which a run's config.yaml carries beside world
    if cfg.world_seed not in (0, world.config.seed):
        raise UserError(
            f"world_seed={cfg.world_seed}, but the world in {cfg.world} has seed "
            f"{world.config.seed}: give world or world_seed, not both"
        )
    return world


def load_rl_prompts(cfg: RLConfig) -> list[dict[str, Any]]:
    if cfg.data is not None:
        return load_prompts(cfg.data)

    return rl_world(cfg).rl_prompts()


def world_eval_rows(cfg: RLConfig) -> list[dict[str, Any]]:
    """A fixed, kind-balanced subset of the world's held-out questions for periodic evaluation."""

    if cfg.eval_prompts == 0 or cfg.data is not None:
        return []
    sets = rl_world(cfg).eval_sets()
    per_kind = max(1, cfg.eval_prompts // len(KINDS))
    return [row for name in KINDS for row in sets[name][:per_kind]]


def env_eval_fn(cfg: RLConfig, tokenizer: Any, envs: list[Any]):
    """Greedy episodes in ``envs`` (``eval_episodes`` of them, the caller closes them) on the
    env's held-out seeds (:func:`~rlalign.envs.evaluation_seeds`): their mean return and
    counters."""
    if not envs:
        return None
    settings = PlaySettings(
        history=cfg.history,
        max_turns=cfg.max_turns,
        max_new_tokens=cfg.max_completion_length,
        max_prompt_length=cfg.max_prompt_length,
        temperature=0.0,
    )
    seeds = evaluation_seeds(envs[0], len(envs))

    def eval_fn(m: Any) -> dict[str, float]:
        episodes, _ = play_episodes(
            unwrap_policy(m), tokenizer, envs, seeds, settings,
            env_name=cfg.env or "the environment",
        )  # fmt: skip
        return {f"eval/{k.removeprefix('env/')}": v for k, v in episode_metrics(episodes).items()}

    return eval_fn


@holds_run_directory
def run_rl(cfg: RLConfig, *, resume: bool = False, reward_fns: Sequence[Callable[..., Any]] = ()):
    """Run (or continue) RL alignment as configured; ``reward_fns``: Python callables that
    score in this process instead of ``cfg.reward_funcs`` (:func:`rlalign.api.align`)."""

    rank = RankInfo.detect()
    device = resolve_device(cfg.device, rank)  # where the loop will train
    make_env = None
    if cfg.env is not None:
        problem = cfg.rollout_split_problem(rank.world_size)
        if problem:
            raise UserError(problem)
        make_env = functools.partial(make_text_env, cfg.env, cfg.env_kwargs)
        probe = make_env()  # a bad env (or a bad first observation) fails before any write
        probe.reset(seed=cfg.env_seed)
        problem = training_seed_problem(cfg, probe)
        probe.close()
        if problem:
            raise UserError(problem)
    prompts = load_rl_prompts(cfg) if make_env is None else []  # validated before any write
    ptx_docs = None
    if cfg.ptx_data is not None:
        ptx_docs = read_corpus(cfg.ptx_data)
    policy, tokenizer = resolve_model_and_tokenizer(cfg.model, cfg.tokenizer, cfg.seed)
    policy = apply_lora(policy, cfg.lora, task="causal_lm", seed=cfg.seed)
    train_bf16 = uses_bf16(cfg.bf16, device, policy)
    check_fits_in_memory(  # a lower bound: every completion has at least one prompt token
        policy,
        sequences=cfg.per_device_train_batch_size,
        length=cfg.max_completion_length + 1,
        length_key="max_completion_length",
        device=device,
        bf16=train_bf16,
    )
    rewarder = None
    if make_env is None:
        rewarder = build_rewarder(cfg, device, reward_fns, bf16=cfg.rollout_uses_bf16(train_bf16))
    source: Any = None
    eval_envs: list[Any] = []
    try:
        ref_model = None
        if cfg.beta > 0 and cfg.lora is not None:
            # the base model is the policy with its adapters off: no second copy of the weights
            ref_model = AdapterDisabled(policy)
        elif cfg.beta > 0:
            ref_model = copy.deepcopy(policy).eval().requires_grad_(False)
            ref_model.to(device)
        model = PolicyWithValueHead(policy) if cfg.algorithm == "ppo" else policy
        out_dir = Path(cfg.output_dir)
        rollout_dir = out_dir / "rollouts" if rank.is_main else None
        if make_env is not None:
            source = EpisodeRolloutSource(
                cfg, model, ref_model, tokenizer, make_env, rollout_dir=rollout_dir, device=device
            )
        else:
            source = RolloutSource(  # rejects prompts too long for the context: before writing
                cfg,
                model,
                ref_model,
                tokenizer,
                prompts,
                rewarder,
                rollout_dir=rollout_dir,
                ptx=ptx_batches(cfg, ptx_docs, tokenizer) if ptx_docs is not None else None,
                device=device,
            )
        prepare_run(cfg, resume=resume, rank=rank)
        eval_rows = world_eval_rows(cfg) if make_env is None else []
        if make_env is not None:
            eval_envs = [make_env() for _ in range(cfg.eval_episodes)]
        eval_fn = env_eval_fn(cfg, tokenizer, eval_envs)
        if eval_rows:

            def eval_fn(m: Any) -> dict[str, float]:
                card, _ = evaluate_model(unwrap_policy(m), tokenizer, eval_rows)
                return {f"eval/{k}": v for k, v in card.items() if isinstance(v, int | float)}

        return train_and_save(
            model,
            tokenizer,
            make_loss_fn(cfg, ref_model is not None),
            source,
            cfg,
            resume=resume,
            final_model=unwrap_policy(model),
            count_fn=make_count_fn(cfg),
            eval_fn=eval_fn,
            item_name="train_tokens" if cfg.loss_type == "dapo" else "items",
            rank=rank,
        )
    finally:
        if rewarder is not None:
            rewarder.close()
        if isinstance(source, EpisodeRolloutSource):
            source.close()
        for env in eval_envs:
            env.close()
