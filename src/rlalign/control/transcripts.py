"""Expert transcripts of the car in words: SFT data for a language-model driver.

A baseline driver (:func:`~rlalign.control.baselines.make_baseline`, which acts on observation
arrays) plays seeded episodes of the text env; each step it reads the array, the transcript
records the sentence the model would read (:func:`~rlalign.control.driving_text.describe_driving`)
and the baseline's action word. Episode ``k`` uses seed ``seed + k``, so the same transcript
can be replayed, and a model trained on it evaluated on exactly those episodes.

``lapse`` > 0 makes the driver inattentive now and then (DART-style noise injection): each step
it may start a lapse of 1 to :data:`LAPSE_MAX_STEPS` steps in which the car plays ``keep``,
while the transcript still records what the driver *would* do. A model imitating the careful
driver alone never sees the states its own small errors lead to (a car closing in, a crosswalk
too near to stop comfortably) and so never learns to recover from them; the lapses put those
states, with the expert's answer, into the data.

``driver`` goes further (DAgger, Ross et al. 2011): a learner -- a language-model driver from
its own run -- drives, all episodes stepped side by side, and the expert labels every state the
learner reaches with what it would do there. Aggregated with the expert's own transcripts and
trained on again, round after round, the learner meets its own mistakes with their correction.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rlalign.control.baselines import BASELINES, make_baseline
from rlalign.control.driving_env import LANE_LEFT, LANE_RIGHT
from rlalign.control.driving_text import DRIVING_WORDS, make_driving_text_env
from rlalign.errors import UserError
from rlalign.io import write_jsonl

LAPSE_MAX_STEPS = 8
# Why lane changes can be repeated: they are about 1% of the careful driver's steps, and a tiny
# model cloning them confused the sides (``left`` with only the right lane free) and drove off
# the road in 14.5-19.5% of the drive demo's episodes after DAgger; with each written 8 times,
# in none on seeds 0-2 (docs/how-to/lm-drives-the-car.md).
LANE_CHANGE_WORDS = frozenset({DRIVING_WORDS[LANE_LEFT], DRIVING_WORDS[LANE_RIGHT]})


def play_episode(
    env: Any, policy: Any, seed: int, lapse: float = 0.0
) -> tuple[list[tuple[str, str]], float, dict]:
    """``([(observation text, action word), ...], return, last info)`` of one episode; the
    words are always the policy's, the car plays ``keep`` during lapses (module docstring)."""
    text, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    turns: list[tuple[str, str]] = []
    total, done, lapsing = 0.0, False, 0
    while not done:
        word = DRIVING_WORDS[int(policy(env.last_obs[None])[0])]
        turns.append((text, word))
        if lapsing == 0 and lapse > 0 and rng.random() < lapse:
            lapsing = int(rng.integers(1, LAPSE_MAX_STEPS + 1))
        played = "keep" if lapsing > 0 else word
        lapsing = max(lapsing - 1, 0)
        text, reward, terminated, truncated, info = env.step(played)
        total += reward
        done = terminated or truncated
    return turns, total, info


def play_driven_episodes(
    env_factory: Any, driver: Any, expert: Any, episodes: int, seed: int
) -> tuple[list[list[tuple[str, str]]], list[float], list[dict]]:
    """``driver`` (a batched policy ``obs -> actions``) plays ``episodes`` episodes side by side
    (episode ``k``: seed ``seed + k``); each turn records the sentence and ``expert``'s word for
    it. Returns each episode's turns, its return and its last info."""
    envs = [env_factory() for _ in range(episodes)]
    texts = [env.reset(seed=seed + k)[0] for k, env in enumerate(envs)]
    turns: list[list[tuple[str, str]]] = [[] for _ in envs]
    returns, infos = [0.0] * episodes, [{} for _ in envs]
    alive = list(range(episodes))
    try:
        while alive:
            obs = np.stack([envs[k].last_obs for k in alive])
            played, labels = driver(obs), expert(obs)
            still = []
            for j, k in enumerate(alive):
                turns[k].append((texts[k], DRIVING_WORDS[int(labels[j])]))
                texts[k], reward, terminated, truncated, infos[k] = envs[k].step(
                    DRIVING_WORDS[int(played[j])]
                )
                returns[k] += reward
                if not (terminated or truncated):
                    still.append(k)
            alive = still
    finally:
        for env in envs:
            env.close()
    return turns, returns, infos


def write_transcripts(
    out_path: str | Path,
    *,
    policy: str = "rule_based",
    episodes: int,
    seed: int,
    history: Literal["last", "full"] = "last",
    env_kwargs: dict[str, Any] | None = None,
    lapse: float = 0.0,
    driver: Any = None,
    lane_change_repeats: int = 1,
) -> dict[str, Any]:
    """Play ``episodes`` episodes of ``policy`` in the car's text env and write them as SFT
    JSONL (``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}``), atomically.

    ``history="last"``: one line per step, the step's observation and action. ``"full"``: one
    line per episode, its observations and actions as alternating turns. ``lapse``: the
    per-step chance that the driver starts a lapse (module docstring; 0 for none). ``driver``:
    a batched policy that drives instead, ``policy`` labelling its states (DAgger; module
    docstring). ``lane_change_repeats``: each line whose word is ``left`` or ``right`` is
    written that many times (``history="last"`` only; see :data:`LANE_CHANGE_WORDS`).

    Returns:
        ``{"episodes", "steps", "mean_return", "collisions", "arrived", ...}``.
    """
    if policy not in BASELINES:
        raise UserError(f"unknown policy {policy!r}; choose one of {', '.join(BASELINES)}")
    if episodes < 1:
        raise UserError(f"episodes must be >= 1, got {episodes}")
    if not 0.0 <= lapse < 1.0:
        raise UserError(f"lapse must be in [0, 1), got {lapse}")
    if history not in ("last", "full"):
        raise UserError(f"history must be 'last' or 'full', got {history!r}")
    if lane_change_repeats < 1:
        raise UserError(f"lane_change_repeats must be >= 1, got {lane_change_repeats}")
    if lane_change_repeats > 1 and history != "last":
        raise UserError("lane_change_repeats repeats single steps: it needs history='last'")
    if driver is not None and lapse > 0:
        raise UserError("a driver plays its own episodes: lapse applies to the policy only")
    try:
        env = make_driving_text_env(**(env_kwargs or {}))
    except TypeError as exc:  # the world's make_config names the unknown setting
        raise UserError(f"env_kwargs: {exc}") from None
    expert = make_baseline(policy, env.env.unwrapped.cfg, seed)
    rows: list[dict[str, Any]] = []
    played: list[tuple[list[tuple[str, str]], float, dict]] = []
    try:
        if driver is not None:
            made = functools.partial(make_driving_text_env, **(env_kwargs or {}))
            # the baselines take a batch of observations, as the driver does
            turns, totals, infos = play_driven_episodes(made, driver, expert, episodes, seed)
            played = list(zip(turns, totals, infos, strict=True))
        else:
            played = [play_episode(env, expert, seed + k, lapse) for k in range(episodes)]
    finally:
        env.close()
    returns, steps, collisions, arrived = [], 0, 0, 0
    for turns, total, info in played:
        returns.append(total)
        steps += len(turns)
        collisions += bool(info.get("collision"))
        arrived += bool(info.get("arrived"))
        if history == "last":
            for turn in turns:
                repeats = lane_change_repeats if turn[1] in LANE_CHANGE_WORDS else 1
                rows += [_messages([turn])] * repeats
        else:
            rows.append(_messages(turns))
    write_jsonl(out_path, rows)
    return {
        "out": str(out_path),
        "policy": policy,
        "history": history,
        "seed": seed,
        "lapse": lapse,
        "driven": driver is not None,
        "episodes": episodes,
        "steps": steps,
        "lines": len(rows),
        "mean_return": sum(returns) / episodes,
        "returns": returns,
        "collisions": collisions,
        "arrived": arrived,
    }


def _messages(turns: list[tuple[str, str]]) -> dict[str, list[dict[str, str]]]:
    messages = []
    for text, word in turns:
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": word}]
    return {"messages": messages}
