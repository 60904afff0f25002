"""Playing text-environment episodes with the language model, every live episode at once.

The language model is the agent of a :class:`~rlalign.envs.TextEnv`: at each turn it reads the
conversation so far (``history="full"``) or the current observation alone (``"last"``), writes
a short message with the fast sampler (tokens and their behaviour log-probs from the same
pass), and the environment answers with a reward and the next observation. All episodes still
running take their turn in one batched call of :func:`~rlalign.lm.sampling.sample`; an episode
that ended simply leaves the batch.

The conversation is kept as token ids, never re-tokenised: the tokens a training forward later
scores are exactly the tokens the sampler produced and saw. After an action, the environment's
turn is the chat template's text between the assistant's message and the next generation
prompt (``<|eos|>\\n<|user|>\\n... \\n<|assistant|>\\n`` with rlalign's template), tokenised on
its own; these are environment tokens and never carry a loss.

Randomness: turn ``k`` of episode ``i`` draws its tokens with ``uniforms[i, k]``, so an episode
depends on its own numbers only and playing episodes together or one at a time gives the same
episodes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from rlalign.envs import TextEnv
from rlalign.errors import UserError
from rlalign.lm.sampling import sample

History = Literal["full", "last"]


@dataclass
class Turn:
    """One step of an episode: what the model read, what it wrote, what the env answered."""

    observation: str  # the environment's text this action answered
    prompt_ids: list[int]  # the tokens the model was given (history: all so far, or the obs)
    action_ids: list[int]  # the tokens it wrote (the final <|eos|> included when it wrote one)
    logp: list[float]  # behaviour log-prob of each action token
    action: str  # the decoded action text the env received
    reward: float
    invalid: bool  # the env did not understand the action (info["invalid_action"])
    env_ids: list[int] = field(default_factory=list)  # history="full": the env's next turn


@dataclass
class Episode:
    """A whole episode, its return and how it ended."""

    seed: int
    turns: list[Turn] = field(default_factory=list)
    end: str = ""  # "terminated", "truncated" (by the env), "max_turns" or "context"
    info: dict[str, Any] = field(default_factory=dict)  # the last step's info
    # An episode cut before its end (every end but "terminated"): the prompt of the state its
    # last step led to, whose value PPO bootstraps from.
    next_prompt_ids: list[int] | None = None

    @property
    def total_reward(self) -> float:
        return float(sum(turn.reward for turn in self.turns))


@dataclass(frozen=True)
class PlaySettings:
    """How episodes are played (the ``rlalign rl`` keys of the same names)."""

    history: History = "last"
    max_turns: int = 16
    max_new_tokens: int = 8  # max_completion_length: tokens per action
    max_prompt_length: int = 128
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    autocast_dtype: torch.dtype | None = None


class ChatTurns:
    """The token ids of each kind of turn under the tokenizer's chat template."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        # markers no template writes: what lies between them is the template's own text
        action, obs = "\x00action\x00", "\x00observation\x00"
        before = self._render([("user", "q"), ("assistant", action)])
        after = self._render([("user", "q"), ("assistant", action), ("user", obs)], prompt=True)
        if not after.startswith(before):
            raise UserError(
                "the tokenizer's chat template does not render a conversation turn by turn "
                "(a prefix renders differently), so it cannot hold a multi-turn episode"
            )
        # the env's turn is all the template writes from the end of the action's text (the
        # model's <|eos|> excepted, which the action holds) to the next generation prompt,
        # newlines after the <|eos|> included
        between = after[after.index(action) + len(action) :]
        eos = tokenizer.eos_token
        self.closes_with_eos = bool(eos) and between.startswith(eos)
        if self.closes_with_eos:
            between = between[len(eos) :]
        self.env_head, _, self.env_tail = between.partition(obs)

    def _render(self, messages: list[tuple[str, str]], prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": r, "content": c} for r, c in messages],
            tokenize=False,
            add_generation_prompt=prompt,
        )

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def first(self, observation: str) -> list[int]:
        """The opening prompt: the observation as the user's message, then the generation
        prompt (with the template's begin-of-text)."""
        return self._ids(self._render([("user", observation)], prompt=True))

    def after_action(self, observation: str, action_ids: list[int]) -> list[int]:
        """The environment's turn after an action: the end of the assistant's message when
        the model did not write it (cut at ``max_new_tokens``), the observation as the user's
        message, the generation prompt."""
        eos = self.tokenizer.eos_token_id
        closing = (
            [eos] if self.closes_with_eos and (not action_ids or action_ids[-1] != eos) else []
        )
        return closing + self._ids(self.env_head + observation + self.env_tail)


def left_pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one left-padded batch: ``(ids, attention_mask)``, both ``(N, longest)``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


def _context(policy: Any) -> int | None:
    return getattr(getattr(policy, "config", None), "max_position_embeddings", None)


@torch.no_grad()
def play_episodes(
    policy: Any,
    tokenizer: Any,
    envs: Sequence[TextEnv],
    seeds: Sequence[int],
    settings: PlaySettings,
    *,
    uniforms: torch.Tensor | None = None,
    env_name: str = "the environment",
) -> tuple[list[Episode], float]:
    """Play one episode in each of ``envs`` (reset with ``seeds``), all turns batched.

    ``uniforms``: ``(len(envs), max_turns, max_new_tokens)`` random numbers, one per token draw
    (None: greedy when ``settings.temperature == 0``, else the global generator). Returns the
    episodes and the seconds spent sampling.
    """
    if len(envs) != len(seeds):
        raise ValueError(f"{len(envs)} envs but {len(seeds)} seeds")
    chat = ChatTurns(tokenizer)
    context = _context(policy)
    limit = settings.max_prompt_length
    if context is not None:
        limit = min(limit, context - settings.max_new_tokens)
    device = next(policy.parameters()).device
    episodes = [Episode(seed=int(s)) for s in seeds]
    observations: list[str] = []
    for env, seed in zip(envs, seeds, strict=True):
        observation, _ = env.reset(seed=int(seed))
        observations.append(observation)
    conversation = [chat.first(o) for o in observations]
    live = list(range(len(envs)))
    sample_seconds = 0.0
    for k in range(settings.max_turns):
        if not live:
            break
        if settings.history == "full":
            prompts = [conversation[i] for i in live]
        else:
            prompts = [chat.first(observations[i]) for i in live]
        for i, prompt in zip(live, prompts, strict=True):
            if len(prompt) > limit and (settings.history == "last" or k == 0):
                raise UserError(
                    f"{env_name}: the observation at step {k} of the episode with seed "
                    f"{episodes[i].seed} is {len(prompt)} tokens, more than the {limit} a "
                    "prompt may have (max_prompt_length, and the model's context less "
                    "max_completion_length); shorten the observation or raise max_prompt_length"
                )
        ids, mask = left_pad(prompts, tokenizer.pad_token_id)
        started = time.perf_counter()
        out = sample(
            policy,
            ids.to(device),
            mask.to(device),
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_k=settings.top_k,
            top_p=settings.top_p,
            tokenizer=tokenizer,
            uniforms=uniforms[live, k] if uniforms is not None else None,
            autocast_dtype=settings.autocast_dtype,
        )
        sample_seconds += time.perf_counter() - started
        lengths = out.completion_lengths.tolist()
        completion = out.completion_ids.cpu()
        logprobs = out.logprobs.float().cpu()
        still: list[int] = []
        for row, i in enumerate(live):
            n = int(lengths[row])
            action_ids = completion[row, :n].tolist()
            action = tokenizer.decode(action_ids, skip_special_tokens=True).strip()
            observation, reward, terminated, truncated, info = envs[i].step(action)
            turn = Turn(
                observation=observations[i],
                prompt_ids=prompts[row],
                action_ids=action_ids,
                logp=logprobs[row, :n].tolist(),
                action=action,
                reward=float(reward),
                invalid=bool(info.get("invalid_action", False)),
            )
            episode = episodes[i]
            episode.turns.append(turn)
            episode.info = info
            if terminated:
                episode.end = "terminated"
                continue
            if settings.history == "full":
                env_ids = chat.after_action(observation, action_ids)
                next_prompt = conversation[i] + action_ids + env_ids
            if truncated or k == settings.max_turns - 1:
                episode.end = "truncated" if truncated else "max_turns"
                full = settings.history == "full"
                episode.next_prompt_ids = next_prompt if full else chat.first(observation)
                continue
            observations[i] = observation
            if settings.history == "full":
                if len(next_prompt) > limit:  # the next prompt would not fit: the episode ends
                    episode.end = "context"
                    episode.next_prompt_ids = next_prompt
                    continue
                turn.env_ids = env_ids
                conversation[i] = next_prompt
            still.append(i)
        live = still
    return episodes, sample_seconds
