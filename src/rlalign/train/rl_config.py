"""``rlalign rl`` settings, named as TRL users know them where TRL has the knob."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from rlalign.train.config import TrainingConfig
from rlalign.train.lora import LoraSettings

# How GRPO's advantages are scaled (rlalign.rl.advantages.group_advantages), for every config
# that passes the knob on.
ScaleRewards = Literal["group", "batch", "none"]


class RLConfig(TrainingConfig):
    """RL alignment of a causal LM: rollouts, rewards, advantages and the policy loss."""

    # The reward is computed afresh at every rollout, so a resume may fix or replace it.
    resume_may_change: ClassVar[frozenset[str]] = TrainingConfig.resume_may_change | {
        "reward_funcs",
        "reward_weights",
        "reward_model",
        "reward_model_weight",
        "reward_timeout",
        "save_rollouts",
        "eval_prompts",
        "eval_episodes",
    }

    output_dir: str = "runs/rl"
    data: str | None = Field(
        None, description="RL prompts JSONL {'prompt', ...}; default: the built-in world's"
    )
    world_seed: int = Field(0, description="seed of the built-in world (when data is not given)")
    world: str | None = Field(
        None,
        description="instead of world_seed: an exported world's directory (`rlalign world "
        "export`, the demo's world/), whose world.yaml (seed and sizes) is the world the "
        "prompts and the held-out questions come from (world_seed, if not 0, must agree)",
    )
    env: str | None = Field(
        None,
        description="a text environment to act in, turn after turn, instead of prompts: a "
        "built-in id (rlalign/Driving-v0, rlalign/Calculator-v0) or file.py:make_env / "
        "module:make_env",
    )
    env_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of the environment's constructor"
    )
    history: Literal["full", "last"] = Field(
        "full",
        description="env: each turn's prompt is the whole conversation so far (full) or the "
        "current observation alone (last)",
    )
    max_turns: int = Field(16, gt=0, description="env: steps after which an episode is cut off")
    env_seed: int = Field(
        100_000,
        ge=0,
        description="env: seed of the first training episode (group g of rollout i plays "
        "env_seed + i * prompts_per_iteration + g); they must stay clear of the held-out seeds",
    )
    eval_episodes: int = Field(
        32,
        ge=0,
        description="env: greedy episodes per evaluation, on the env's eval_seeds(n) when it "
        "defines them, else on seeds 0, 1, ...",
    )
    tokenizer: str | None = Field(None, description="tokenizer dir; default: the model's")
    lora: LoraSettings | None = Field(
        None, description="train LoRA adapters instead of every weight (peft)"
    )

    algorithm: Literal["ppo", "grpo", "rloo", "reinforce"] = Field(
        "grpo", description="the policy-gradient method (its advantage and loss)"
    )
    prompts_per_iteration: int = Field(16, gt=0, description="prompts sampled per rollout")
    num_generations: int = Field(4, gt=0, description="completions per prompt (the group)")
    max_completion_length: int = Field(32, gt=0, description="tokens sampled per completion")
    max_prompt_length: int = Field(
        128, gt=0, description="the longest prompt in tokens (a longer one is an error)"
    )
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the rollouts")
    top_k: int | None = Field(None, gt=0, description="sample among the k likeliest tokens")
    top_p: float | None = Field(
        None, gt=0, le=1, description="sample among the likeliest tokens holding mass p"
    )

    beta: float = Field(0.04, ge=0, description="KL coefficient to the reference model")
    kl_estimator: Literal["k1", "k2", "k3"] = Field(
        "k3", description="estimator of the per-token KL to the reference (Schulman's k1-k3)"
    )
    loss_type: Literal["grpo", "dapo", "dr_grpo"] = Field(
        "dapo",
        description="how token losses are averaged: per sequence (grpo), over the batch's "
        "tokens (dapo) or over a fixed length (dr_grpo)",
    )
    num_iterations: int = Field(1, gt=0, description="passes over each rollout batch (mu)")
    epsilon: float = Field(0.2, gt=0, lt=1, description="lower clip range of the ratio")
    epsilon_high: float | None = Field(None, gt=0, description="upper clip range; default epsilon")
    scale_rewards: ScaleRewards = Field(
        "group", description="divide advantages by the std of the group, the batch, or not"
    )
    gamma: float = Field(1.0, ge=0, le=1, description="discount of the per-token return G_t")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda (PPO)")
    vf_coef: float = Field(0.1, ge=0, description="value-loss weight (PPO)")
    cliprange_value: float | None = Field(0.2, gt=0, description="value clipping (PPO)")
    whiten_advantages: bool = Field(True, description="PPO: normalise GAE advantages")

    reward_funcs: list[str] = Field(
        default_factory=list,
        description="module:function or file.py:function (or a world verifier's name); "
        "default: the world's verifiers",
    )
    reward_weights: list[float] | None = Field(
        None, description="one weight per reward function; None: all 1"
    )
    reward_model: str | None = Field(None, description="a reward run's final/ directory")
    reward_model_weight: float = Field(
        1.0, description="weight of the reward model's score in the total reward"
    )
    reward_timeout: float = Field(30.0, gt=0, description="seconds per reward-function call")

    ptx_data: str | None = Field(
        None,
        description="PPO-ptx: a text corpus (.txt or JSONL {'text'}, e.g. the pre-training "
        "one) whose next-token loss is mixed into the RL loss against the alignment tax",
    )
    ptx_coef: float = Field(
        0.0, ge=0, description="weight of the ptx_data next-token loss in the RL loss"
    )
    ptx_batch_size: int = Field(
        8, gt=0, description="ptx_data rows (of max_completion_length + 1 tokens) per micro-batch"
    )

    rollout_bf16: bool | None = Field(
        None, description="bf16 autocast when sampling; default: bf16"
    )
    eval_prompts: int = Field(60, ge=0, description="held-out world prompts per evaluation")
    save_rollouts: int = Field(8, ge=0, description="rollouts kept per iteration for the viewer")

    max_steps: int = Field(100, gt=0)
    learning_rate: float = Field(1e-4, gt=0)
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(1.0, ge=0, le=1)
    per_device_train_batch_size: int = Field(16, gt=0, description="completions per micro-batch")
    logging_steps: int = Field(1, gt=0)
    eval_steps: int = Field(20, gt=0)
    save_steps: int = Field(20, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> RLConfig:
        problem = self.rollout_split_problem(world_size=1)
        if problem:
            raise ValueError(problem)
        if self.algorithm in ("grpo", "rloo") and self.num_generations < 2:
            raise ValueError(f"algorithm={self.algorithm} needs num_generations >= 2")
        if self.algorithm == "reinforce" and self.num_iterations > 1:
            # its loss -A log pi has no importance ratio: a second pass over a batch sampled
            # by an older policy would follow a biased gradient with nothing to correct it
            raise ValueError(
                "algorithm=reinforce makes one pass over each rollout (its loss has no "
                "importance ratio); use num_iterations=1, or grpo/rloo/ppo for several passes"
            )
        if self.algorithm == "ppo" and self.loss_type == "grpo":
            raise ValueError(
                "algorithm=ppo aggregates per token (its value loss has no per-sequence form): "
                "use loss_type=dapo or dr_grpo"
            )
        if (self.ptx_data is None) != (self.ptx_coef == 0):
            raise ValueError(
                "PPO-ptx needs both ptx_data (a text corpus) and ptx_coef > 0; "
                f"got ptx_data={self.ptx_data!r}, ptx_coef={self.ptx_coef}"
            )
        if self.env is not None and self.data is not None:
            raise ValueError("give data (prompts) or env (an environment), not both")
        if self.env is not None and self.ptx_data is not None:
            raise ValueError("ptx_data is mixed into single-turn RL only; unset it with env")
        if self.env is not None and (self.reward_funcs or self.reward_model):
            raise ValueError(
                "with env the environment gives the rewards; unset reward_funcs/reward_model"
            )
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(
                f"reward_weights has {len(self.reward_weights)} values for "
                f"{len(self.reward_funcs)} reward_funcs"
            )
        return self

    def truncates_sampling(self) -> bool:
        """Whether rollouts sample from a truncated distribution (``top_k``, ``top_p`` < 1).

        Then the sampler's log-probs are those of the truncated, renormalised distribution,
        not the policy's: a ratio against them would start below 1 (the kept tokens' mass),
        and the clip would silence every negative advantage. The behaviour log-probs are then
        taken from a fresh forward of the policy at the rollout's temperature, as the loss
        computes them (the ratio starts at 1); the truncation itself stays uncorrected, as in
        TRL."""
        return self.top_k is not None or (self.top_p is not None and self.top_p < 1.0)

    def rollout_uses_bf16(self, train_bf16: bool) -> bool:
        """Whether rollouts (sampling, and the reward model's scores) run under bf16 autocast:
        ``rollout_bf16``, by default the training precision."""
        return self.rollout_bf16 if self.rollout_bf16 is not None else train_bf16

    def rollout_split_problem(self, world_size: int) -> str | None:
        """Why a rollout does not split into whole groups per rank and whole optimizer steps
        at this world size (None when it does): the loop collects rollouts between steps."""
        if self.env is not None and world_size > 1:
            return "env (multi-turn RL) runs in one process; start it without torchrun"
        if self.prompts_per_iteration % world_size:
            return (
                f"prompts_per_iteration={self.prompts_per_iteration} does not split over "
                f"{world_size} ranks (each rank samples whole groups); use a multiple of "
                f"{world_size}"
            )
        if self.env is not None and self.history == "last":
            return None  # one row per turn: the rollout is padded to whole steps
        rollout = self.prompts_per_iteration * self.num_generations
        step = self.global_batch_size or (
            self.per_device_train_batch_size * self.gradient_accumulation_steps * world_size
        )
        if rollout % step:
            return (
                f"prompts_per_iteration x num_generations = {rollout} completions per rollout "
                f"must be a multiple of the {step} completions of an optimizer step "
                f"(global_batch_size, or per_device_train_batch_size x "
                f"gradient_accumulation_steps x {world_size} ranks)"
            )
        return None

    @property
    def left_padded_batches(self) -> bool:
        """Training batches are left-padded prompts + completions (see training_attention)."""
        return True

    @property
    def kl_in_reward(self) -> bool:
        """PPO puts -beta * KL in the per-token reward; the others put beta * KL in the loss."""
        return self.algorithm == "ppo"
