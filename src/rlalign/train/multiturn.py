"""Multi-turn rollouts: the language model acts in a text environment, turn after turn.

One rollout plays ``prompts_per_iteration`` environment seeds ``num_generations`` times each
(a group shares its seed, as GRPO's completions share their prompt), every live episode's turn
in one batched sampler call (:func:`~rlalign.train.episodes.play_episodes`). Then, as in the
single-turn :class:`~rlalign.train.rollout.RolloutSource`, it scores nothing more (the env gave
a reward at every step), computes the per-token tensors with :mod:`rlalign.rl`, and serves
micro-batches of them to the shared training loop.

Training rows (``history``):

- ``"full"``: one row per episode, the whole conversation: the first observation is the row's
  prompt; after it come the actions and the environment's turns, with ``completion_mask`` 1 on
  the model's tokens only, so environment tokens never carry a loss.
- ``"last"``: one row per turn (the observation, then the action); rows are padded with empty
  ones (``completion_mask`` 0) to whole optimizer steps.

Credit, per episode, on its action tokens laid end to end (environment tokens skipped):

- the reward of step ``k`` sits on the last token of turn ``k``;
- returns discount once per environment step: ``gamma`` at a turn's last token, 1 inside a
  turn, so each token of turn ``k`` has ``G_k = sum_j gamma^j r_{k+j+1}`` of the step sequence;
- PPO: GAE on the value head's per-token values (``-beta * KL`` added to each token's reward),
  bootstrapping from the next turn's first action token across the environment's turn, and
  after the last step of an episode cut before its end (the env's time limit, ``max_turns``,
  the context) from the value of the prompt its next turn would have had;
- GRPO / RLOO / REINFORCE: :func:`~rlalign.rl.turn_advantages` of the step returns (the
  baseline of step ``k`` from the group's episodes that reached step ``k``), the same for every
  token of the turn.

An episode never spans two rollouts, so a checkpoint (always between optimizer steps) holds no
environment in mid-episode: the rollout counter, the random generator and the current buffer
are the whole state, and a resumed run plays the same episodes bit for bit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlalign.envs import TextEnv, evaluation_seeds, info_counters
from rlalign.io import atomic_write_text
from rlalign.lm.forward import context_length
from rlalign.lm.logprobs import completion_forward
from rlalign.lm.value_head import unwrap_policy
from rlalign.rl import discounted_returns, gae, kl_estimate, turn_advantages, whiten
from rlalign.train.episodes import Episode, PlaySettings, left_pad, play_episodes
from rlalign.train.rl_config import RLConfig
from rlalign.train.rollout import RolloutSource

# the per-step baseline of each critic-free algorithm (see rlalign.rl.turn_advantages)
TURN_BASELINE = {"grpo": "group", "rloo": "leave_one_out", "reinforce": "batch"}


@dataclass
class Layout:
    """Episodes as left-padded training rows, and where each turn's action tokens lie."""

    sequences: torch.Tensor  # (R, P + C) long
    attention_mask: torch.Tensor  # (R, P + C) long
    completion_mask: torch.Tensor  # (R, C) float: 1 on the model's tokens
    old_logp: torch.Tensor  # (R, C) float
    prompt_length: int  # P
    # per episode, per turn: (row, first completion column, number of tokens)
    turns: list[list[tuple[int, int, int]]]


def _rows_to_layout(
    rows: list[tuple[list[int], list[int], list[float], list[int]]],
    turns: list[list[tuple[int, int, int]]],
    pad_id: int,
) -> Layout:
    """``rows``: (prompt ids, completion ids, logp per completion token, loss mask)."""
    width = max(len(p) for p, _, _, _ in rows)
    length = max(1, max(len(c) for _, c, _, _ in rows))
    n = len(rows)
    sequences = torch.full((n, width + length), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width + length), dtype=torch.long)
    completion_mask = torch.zeros((n, length))
    old_logp = torch.zeros((n, length))
    for r, (prompt, completion, logp, loss_mask) in enumerate(rows):
        sequences[r, width - len(prompt) : width] = torch.tensor(prompt, dtype=torch.long)
        attention[r, width - len(prompt) : width] = 1
        if completion:
            sequences[r, width : width + len(completion)] = torch.tensor(completion)
            attention[r, width : width + len(completion)] = 1
            completion_mask[r, : len(completion)] = torch.tensor(loss_mask, dtype=torch.float32)
            old_logp[r, : len(completion)] = torch.tensor(logp, dtype=torch.float32)
    return Layout(sequences, attention, completion_mask, old_logp, width, turns)


def layout_episodes(
    episodes: list[Episode], history: str, pad_id: int, *, rows_multiple: int = 1
) -> Layout:
    """The training rows of ``episodes`` (see the module docstring)."""
    rows: list[tuple[list[int], list[int], list[float], list[int]]] = []
    turns: list[list[tuple[int, int, int]]] = []
    for episode in episodes:
        spans = []
        if history == "full":
            completion: list[int] = []
            logp: list[float] = []
            loss_mask: list[int] = []
            for turn in episode.turns:
                spans.append((len(rows), len(completion), len(turn.action_ids)))
                completion += turn.action_ids + turn.env_ids
                logp += turn.logp + [0.0] * len(turn.env_ids)
                loss_mask += [1] * len(turn.action_ids) + [0] * len(turn.env_ids)
            rows.append((episode.turns[0].prompt_ids, completion, logp, loss_mask))
        else:
            for turn in episode.turns:
                spans.append((len(rows), 0, len(turn.action_ids)))
                n = len(turn.action_ids)
                rows.append((turn.prompt_ids, turn.action_ids, turn.logp, [1] * n))
        turns.append(spans)
    filler = (-len(rows)) % rows_multiple
    if filler:  # empty rows (no loss term) up to whole optimizer steps
        prompt = rows[0][0]
        rows += [(prompt, [], [], [])] * filler
    return _rows_to_layout(rows, turns, pad_id)


@dataclass
class Timeline:
    """Each episode's action tokens end to end: ``(E, T)`` gather indices into the rows."""

    row: torch.Tensor  # (E, T) long
    col: torch.Tensor  # (E, T) long
    valid: torch.Tensor  # (E, T) float
    turn: torch.Tensor  # (E, T) long: the turn of each token
    last: torch.Tensor  # (E, T) bool: the last token of its turn

    @classmethod
    def of(cls, layout: Layout) -> Timeline:
        e = len(layout.turns)
        t = max(1, max(sum(n for _, _, n in spans) for spans in layout.turns))
        row, col = torch.zeros((e, t), dtype=torch.long), torch.zeros((e, t), dtype=torch.long)
        valid, turn = torch.zeros((e, t)), torch.zeros((e, t), dtype=torch.long)
        last = torch.zeros((e, t), dtype=torch.bool)
        for i, spans in enumerate(layout.turns):
            pos = 0
            for k, (r, c, n) in enumerate(spans):
                row[i, pos : pos + n] = r
                col[i, pos : pos + n] = torch.arange(c, c + n)
                valid[i, pos : pos + n] = 1
                turn[i, pos : pos + n] = k
                if n:
                    last[i, pos + n - 1] = True
                pos += n
        return cls(row, col, valid, turn, last)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[self.row, self.col] * self.valid

    def scatter(self, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(like, dtype=torch.float32)
        keep = self.valid.bool()
        out[self.row[keep], self.col[keep]] = values[keep].float()
        return out


def step_rewards(episodes: list[Episode]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E, K)`` rewards of each step and the mask of the steps taken."""
    k = max(len(e.turns) for e in episodes)
    rewards, mask = torch.zeros((len(episodes), k)), torch.zeros((len(episodes), k))
    for i, episode in enumerate(episodes):
        n = len(episode.turns)
        rewards[i, :n] = torch.tensor([t.reward for t in episode.turns])
        mask[i, :n] = 1
    return rewards, mask


def credit(
    episodes: list[Episode],
    layout: Layout,
    cfg: RLConfig,
    *,
    kl: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    last_values: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token ``(advantages, returns, rewards)`` of the rows, shaped like
    ``completion_mask`` (see the module docstring). ``kl``: the per-token KL to the reference
    (PPO adds ``-beta * kl`` to the rewards); ``values``: PPO's per-token values;
    ``last_values`` ``(E,)``: PPO's value of the state after each episode's last step, 0 for
    an episode that terminated (None: every episode terminated)."""
    line = Timeline.of(layout)
    rewards_k, mask_k = step_rewards(episodes)
    # the reward of step k on the last token of turn k
    token_rewards = torch.where(line.last, rewards_k.gather(1, line.turn), 0.0) * line.valid
    discount = torch.where(line.last, torch.tensor(cfg.gamma), torch.tensor(1.0))
    like = layout.completion_mask
    if cfg.algorithm == "ppo":
        if kl is not None and cfg.beta:
            token_rewards = token_rewards - cfg.beta * line.gather(kl)
        adv, ret = gae(
            token_rewards,
            line.gather(values),
            discount,
            cfg.lam,
            mask=line.valid,
            last_value=last_values,
        )
        advantages = line.scatter(adv, like)
        if cfg.whiten_advantages:
            advantages = whiten(advantages, layout.completion_mask)
        return advantages, line.scatter(ret, like), line.scatter(token_rewards, like)
    step_returns = discounted_returns(rewards_k, cfg.gamma, mask_k)
    scale = {"group": "std", "batch": "batch", "none": "none"}[cfg.scale_rewards]
    if cfg.algorithm != "grpo":
        scale = "none"
    group = cfg.num_generations
    adv_k = turn_advantages(step_returns, mask_k, group, TURN_BASELINE[cfg.algorithm], scale)
    advantages = line.scatter(adv_k.gather(1, line.turn) * line.valid, like)
    returns = line.scatter(step_returns.gather(1, line.turn) * line.valid, like)
    return advantages, returns, line.scatter(token_rewards, like)


def episode_metrics(episodes: list[Episode]) -> dict[str, float]:
    """Per-episode means: return, turns, invalid actions, how episodes ended, and the env's
    own counters from each episode's last ``info``."""
    n = len(episodes)
    counters: dict[str, float] = {}
    for episode in episodes:
        for key, value in info_counters(episode.info).items():
            if key != "invalid_action":
                counters[key] = counters.get(key, 0.0) + value
    # the env's counters first: a counter named like one of rlalign's (an env's own "turns",
    # counted only when the env ends the episode) must not replace rlalign's count
    out = {f"env/{k}": v / n for k, v in sorted(counters.items())}
    out |= {
        "env/return": sum(e.total_reward for e in episodes) / n,
        "env/turns": sum(len(e.turns) for e in episodes) / n,
        "env/invalid_actions": sum(t.invalid for e in episodes for t in e.turns) / n,
        "env/ended_by_env": sum(e.end in ("terminated", "truncated") for e in episodes) / n,
    }
    return out


def training_seed_problem(cfg: RLConfig, env: Any) -> str | None:
    """Why the run's training episodes could replay held-out ones (None when they cannot).

    Rollout ``i`` plays seeds ``env_seed + i * prompts_per_iteration + g``, and a run collects
    at most ``max_steps`` rollouts (each feeds at least one optimizer step), so its training
    seeds lie in ``[env_seed, env_seed + max_steps * prompts_per_iteration)``. An env with
    ``eval_seeds`` holds out every seed from its first evaluation seed on (even when the run
    does not evaluate); another env's held-out seeds are the ``0 .. eval_episodes-1`` played.
    """
    span = cfg.max_steps * cfg.prompts_per_iteration
    first, last = cfg.env_seed, cfg.env_seed + span - 1
    if callable(getattr(env, "eval_seeds", None)):
        start = min(evaluation_seeds(env, max(cfg.eval_episodes, 1)))
        if last < start:
            return None
        return (
            f"env_seed={cfg.env_seed}: training episodes may play seeds up to {last} "
            f"(env_seed + max_steps x prompts_per_iteration - 1), but the environment holds out "
            f"every seed from {start} on for evaluation; set env_seed <= {max(start - span, 0)}"
            + (" or fewer max_steps" if start < span else "")
        )
    if cfg.eval_episodes == 0 or first >= cfg.eval_episodes:
        return None
    return (
        f"env_seed={cfg.env_seed}: training episodes would play seeds {first}..{last}, which "
        f"include the evaluation seeds 0..{cfg.eval_episodes - 1}; set env_seed >= "
        f"{cfg.eval_episodes} (or eval_episodes=0)"
    )


class EpisodeRolloutSource(RolloutSource):
    """The RL batch source when the policy acts in a text environment (module docstring)."""

    def __init__(
        self,
        cfg: RLConfig,
        model: torch.nn.Module,
        ref_model: torch.nn.Module | None,
        tokenizer: Any,
        make_env: Callable[[], TextEnv],
        *,
        rollout_dir: Path | None = None,
        device: torch.device | None = None,
    ) -> None:
        self._init_training_side(cfg, model, ref_model, tokenizer, rollout_dir, None, device)
        self.envs = [make_env() for _ in range(cfg.prompts_per_iteration * cfg.num_generations)]
        self.settings = PlaySettings(
            history=cfg.history,
            max_turns=cfg.max_turns,
            max_new_tokens=cfg.max_completion_length,
            max_prompt_length=cfg.max_prompt_length,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            autocast_dtype=self.rollout_dtype,
        )

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def episode_seeds(self, iteration: int) -> list[int]:
        """The environment seeds of rollout ``iteration`` (0-based): group ``g`` plays
        ``env_seed + iteration * prompts_per_iteration + g``, all its episodes alike."""
        cfg = self.cfg
        first = cfg.env_seed + iteration * cfg.prompts_per_iteration
        return [
            first + g for g in range(cfg.prompts_per_iteration) for _ in range(cfg.num_generations)
        ]

    @torch.no_grad()
    def collect_rollout(self) -> dict[str, float]:
        cfg = self.cfg
        policy = unwrap_policy(self.model)
        was_training = policy.training
        policy.eval()
        seeds = self.episode_seeds(self.iteration)
        uniforms = torch.rand(
            (len(seeds), cfg.max_turns, cfg.max_completion_length), generator=self.generator
        )
        started = time.perf_counter()
        episodes, sample_seconds = play_episodes(
            policy, self.tokenizer, self.envs, seeds, self.settings, uniforms=uniforms,
            env_name=cfg.env or "the environment",
        )  # fmt: skip
        play_seconds = time.perf_counter() - started
        step_rows = cfg.per_device_train_batch_size * cfg.accumulation_steps(1)
        layout = layout_episodes(
            episodes, cfg.history, self.tokenizer.pad_token_id, rows_multiple=step_rows
        )
        old_logp = layout.old_logp
        ref_logp = torch.zeros_like(old_logp)
        if self.ref_model is not None:
            ref = self._scored_rows(self.ref_model, layout, temperature=cfg.temperature)
            ref_logp = ref["logp"]
        old_values = torch.zeros_like(old_logp)
        last_values = None
        ppo, truncated = cfg.algorithm == "ppo", cfg.truncates_sampling()
        if ppo or truncated:
            own = self._scored_rows(
                self.model, layout, temperature=cfg.temperature, with_values=ppo
            )
            if truncated:  # the policy's log-probs, not the truncated ones
                old_logp = own["logp"]
            if ppo:
                old_values = own["values"]
                last_values = self._bootstrap_values(episodes)
        kl = kl_estimate(old_logp, ref_logp, kind="k1", mask=layout.completion_mask)
        with_ref = self.ref_model is not None
        advantages, returns, token_rewards = credit(
            episodes,
            layout,
            cfg,
            kl=kl if with_ref else None,
            values=old_values,
            last_values=last_values,
        )
        rows = layout.sequences.shape[0]
        self.buffer = {
            "sequences": layout.sequences,
            "attention_mask": layout.attention_mask,
            "completion_mask": layout.completion_mask,
            "old_logp": old_logp,
            "ref_logp": ref_logp,
            "advantages": advantages,
            "returns": returns,
            "old_values": old_values,
            "prompt_length": torch.full((rows,), layout.prompt_length, dtype=torch.long),
        }
        self.position = 0
        self.iteration += 1
        policy.train(was_training)

        mask = layout.completion_mask
        turns = sum(len(e.turns) for e in episodes)
        totals = torch.tensor([e.total_reward for e in episodes])
        metrics = {
            "iteration": float(self.iteration),
            "reward_mean": float(totals.mean()),
            "reward_std": float(totals.std()) if len(totals) > 1 else 0.0,
            "completion_length": float(mask.sum()) / max(turns, 1),
            "rollout_tokens_per_s": float(mask.sum()) / max(sample_seconds, 1e-9),
            "env_steps_per_s": turns / max(play_seconds, 1e-9),
            **episode_metrics(episodes),
        }
        if with_ref:
            metrics["kl_ref"] = float(kl.sum() / mask.sum().clamp(min=1))
        if self.rollout_dir is not None and cfg.save_rollouts:
            self._save_episodes(episodes, layout, kl, token_rewards, returns, old_values)
        return metrics

    def _scored_rows(self, model: Any, layout: Layout, **kwargs: Any) -> dict[str, torch.Tensor]:
        """``completion_forward(model)`` of every row, a few hundred rows at a time, masked."""
        device = next(unwrap_policy(self.model).parameters()).device
        parts: dict[str, list[torch.Tensor]] = {}
        chunk = 256
        start = layout.prompt_length
        for lo in range(0, layout.sequences.shape[0], chunk):
            ids = layout.sequences[lo : lo + chunk]
            mask = layout.attention_mask[lo : lo + chunk]
            with self._training_precision(model, ids.numel()):
                out = completion_forward(model, ids.to(device), mask.to(device), start, **kwargs)
            for key, value in out.items():
                parts.setdefault(key, []).append(value.float().cpu())
        return {key: torch.cat(p) * layout.completion_mask for key, p in parts.items()}

    def _bootstrap_values(self, episodes: list[Episode]) -> torch.Tensor:
        """``(E,)``: V of the state after the last step of each episode cut before its end
        (the env's time limit, ``max_turns``, the context), 0 for one that terminated.

        Why: a cut episode's next state is not terminal; its return goes on beyond the cut,
        and a value of 0 there would teach the value head that states near a time limit are
        worth only what is left of the rewards before it. A prompt longer than the model's
        context (a ``context`` cut) is kept to its last tokens, as a sliding window would."""
        values = torch.zeros(len(episodes))
        cut = [i for i, e in enumerate(episodes) if e.next_prompt_ids is not None]
        if not cut:
            return values
        limit = context_length(unwrap_policy(self.model))
        device = next(unwrap_policy(self.model).parameters()).device
        prompts = [episodes[i].next_prompt_ids or [] for i in cut]
        if limit:
            prompts = [p[-limit:] for p in prompts]
        for lo in range(0, len(cut), 256):
            ids, mask = left_pad(prompts[lo : lo + 256], self.tokenizer.pad_token_id)
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
            with torch.no_grad(), self._training_precision(self.model, ids.numel()):
                out = self.model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    use_cache=False,
                )
            values[cut[lo : lo + 256]] = out.state_values[:, -1].float().cpu()
        return values

    def _save_episodes(self, episodes, layout, kl, rewards, returns, values) -> None:
        """``rollouts/iter_K.jsonl``: a few episodes turn by turn, each action token with its
        pi, KL, r_t, G_t, V and A, for the viewer."""
        cfg, buf = self.cfg, self.buffer
        group = cfg.num_generations
        spread = [p * group + g for g in range(group) for p in range(len(episodes) // group)]
        lines = []
        for i in spread[: cfg.save_rollouts]:
            episode = episodes[i]
            turns = []
            for turn, (r, c, n) in zip(episode.turns, layout.turns[i], strict=True):
                tokens = []
                for t in range(n):
                    tokens.append({
                        "t": t, "id": int(turn.action_ids[t]),
                        "token": self.tokenizer.decode([turn.action_ids[t]]),
                        "logp": float(buf["old_logp"][r, c + t]),
                        "ref_logp": float(buf["ref_logp"][r, c + t]),
                        "kl": float(kl[r, c + t]), "reward": float(rewards[r, c + t]),
                        "return": float(returns[r, c + t]), "value": float(values[r, c + t]),
                        "advantage": float(buf["advantages"][r, c + t]),
                    })  # fmt: skip
                turns.append({
                    "observation": turn.observation, "action": turn.action,
                    "reward": turn.reward, "invalid": turn.invalid, "tokens": tokens,
                })  # fmt: skip
            lines.append({
                "iteration": self.iteration, "index": i, "kind": "episode", "seed": episode.seed,
                "prompt": episode.turns[0].observation, "history": cfg.history,
                "completion": " | ".join(t.action for t in episode.turns),
                "reward": episode.total_reward, "end": episode.end,
                "counters": info_counters(episode.info), "algorithm": cfg.algorithm,
                "gamma": cfg.gamma, "turns": turns,
            })  # fmt: skip
        text = "".join(json.dumps(line) + "\n" for line in lines)
        atomic_write_text(self.rollout_dir / f"iter_{self.iteration}.jsonl", text)
