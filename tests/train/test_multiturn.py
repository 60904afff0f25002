"""Multi-turn credit: where each step's reward lands, the returns per environment step, the
baselines per step, and the two row layouts -- against loops written out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlalign.rl import discounted_returns, turn_advantages
from rlalign.train.episodes import Episode, Turn
from rlalign.train.multiturn import Timeline, credit, episode_metrics, layout_episodes
from rlalign.train.rl_config import RLConfig

PAD = 0


def _episode(seed: int, turns: list[tuple[int, float, int]], first_id: int = 10) -> Episode:
    """``turns``: (action tokens, reward, env tokens after it) per step; ids count up."""
    ep = Episode(seed=seed, end="terminated", info={"collision": seed % 2 == 0, "speed": 3.0})
    prompt = [first_id, first_id + 1, first_id + 2][: 1 + seed % 3]
    for k, (n_act, reward, n_env) in enumerate(turns):
        base = 100 * (seed + 1) + 10 * k
        ep.turns.append(
            Turn(
                observation=f"obs {k}",
                prompt_ids=list(prompt) if k == 0 else [first_id + k] * (2 + k),
                action_ids=[base + j for j in range(n_act)],
                logp=[-0.1 * (j + 1) for j in range(n_act)],
                action=f"a{k}",
                reward=reward,
                invalid=k == 1,
                env_ids=[7] * n_env,
            )
        )
    return ep


def _episodes() -> list[Episode]:
    # two groups of two episodes (group g = seeds 2g, 2g+1), different lengths and turn sizes
    return [
        _episode(0, [(2, 0.0, 3), (1, 0.5, 2), (3, 1.0, 0)]),
        _episode(1, [(1, 0.3, 1), (2, 0.0, 0)]),
        _episode(2, [(3, -1.0, 0)]),
        _episode(3, [(1, 0.0, 2), (1, 0.0, 1), (2, 2.0, 0)]),
    ]


def _cfg(**kw) -> RLConfig:
    base = dict(env="x.py:make_env", num_generations=2, prompts_per_iteration=2, gamma=0.8,
                per_device_train_batch_size=4)  # fmt: skip
    base.update(kw)
    return RLConfig(**base)


@pytest.mark.parametrize("history", ["full", "last"])
def test_only_the_models_tokens_are_in_the_loss(history):
    eps = _episodes()
    lay = layout_episodes(eps, history, PAD, rows_multiple=4)
    seen = []
    for spans, ep in zip(lay.turns, eps, strict=True):
        for (row, col, n), turn in zip(spans, ep.turns, strict=True):
            start = lay.prompt_length + col
            assert lay.sequences[row, start : start + n].tolist() == turn.action_ids
            assert lay.old_logp[row, col : col + n].tolist() == pytest.approx(turn.logp)
            seen += [(row, col + j) for j in range(n)]
    loss_positions = {tuple(x) for x in lay.completion_mask.nonzero().tolist()}
    assert loss_positions == set(seen)  # environment tokens and padding carry no loss
    assert lay.sequences.shape[0] % 4 == 0
    if history == "full":  # one row per episode: the conversation in the order it was played
        for ep, row in zip(eps, range(len(eps)), strict=True):
            real = lay.sequences[row][lay.attention_mask[row].bool()].tolist()
            want = ep.turns[0].prompt_ids + [i for t in ep.turns for i in t.action_ids + t.env_ids]
            assert real == want


@pytest.mark.parametrize("algorithm", ["grpo", "rloo", "reinforce"])
@pytest.mark.parametrize("history", ["full", "last"])
def test_step_rewards_returns_and_baselines_land_on_their_turns(algorithm, history):
    eps = _episodes()
    cfg = _cfg(algorithm=algorithm, scale_rewards="group")
    lay = layout_episodes(eps, history, PAD)
    adv, ret, rew = credit(eps, lay, cfg)
    k = max(len(e.turns) for e in eps)
    rewards = torch.zeros(4, k)
    mask = torch.zeros(4, k)
    for i, ep in enumerate(eps):
        for s, turn in enumerate(ep.turns):
            rewards[i, s], mask[i, s] = turn.reward, 1
    step_returns = discounted_returns(rewards, 0.8, mask)  # the chapter's G_k on the steps
    baseline = {"grpo": "group", "rloo": "leave_one_out", "reinforce": "batch"}[algorithm]
    step_adv = turn_advantages(
        step_returns, mask, 2, baseline, "std" if algorithm == "grpo" else "none"
    )
    for i, (ep, spans) in enumerate(zip(eps, lay.turns, strict=True)):
        for s, ((row, col, n), turn) in enumerate(zip(spans, ep.turns, strict=True)):
            for j in range(n):
                last = j == n - 1
                assert float(rew[row, col + j]) == pytest.approx(turn.reward if last else 0.0)
                assert float(ret[row, col + j]) == pytest.approx(float(step_returns[i, s]))
                assert float(adv[row, col + j]) == pytest.approx(float(step_adv[i, s]))
    assert float(adv[lay.completion_mask == 0].abs().sum()) == 0.0


def test_ppo_bootstraps_across_the_environments_turn():
    eps = _episodes()
    cfg = _cfg(algorithm="ppo", lam=0.7, whiten_advantages=False, beta=0.5)
    results = {}
    for history in ("full", "last"):
        lay = layout_episodes(eps, history, PAD)
        gen = torch.Generator().manual_seed(0)
        line = Timeline.of(lay)
        # the same value and KL for the same action token, whichever layout holds it
        token_values = torch.randn(line.valid.shape, generator=gen)
        token_kl = torch.rand(line.valid.shape, generator=gen)
        values = line.scatter(token_values, lay.completion_mask)
        kl = line.scatter(token_kl, lay.completion_mask)
        adv, ret, _ = credit(eps, lay, cfg, kl=kl, values=values)
        results[history] = (line.gather(adv), line.gather(ret))
        # brute force: each episode's action tokens in order, the GAE loop with gamma at each
        # turn's last token and 1 inside a turn, -beta * KL on every token
        for i, ep in enumerate(eps):
            flat = [(s, j == len(t.action_ids) - 1) for s, t in enumerate(ep.turns)
                    for j in range(len(t.action_ids))]  # fmt: skip
            running, nxt = 0.0, 0.0
            for p in reversed(range(len(flat))):
                s, last = flat[p]
                r = (ep.turns[s].reward if last else 0.0) - 0.5 * float(token_kl[i, p])
                g = 0.8 if last else 1.0
                delta = r + g * nxt - float(token_values[i, p])
                running = delta + g * 0.7 * running
                nxt = float(token_values[i, p])
                assert float(results[history][0][i, p]) == pytest.approx(running, abs=1e-5)
    torch.testing.assert_close(results["full"][0], results["last"][0])


def test_ppo_bootstraps_a_cut_episode_from_the_value_of_the_state_it_reached():
    """An episode cut by a time limit (the env's, max_turns, the context) goes on beyond the
    cut: its last step's target is r + gamma * V(next state), not r. One that terminated
    bootstraps nothing."""
    eps = _episodes()
    eps[0].end, eps[2].end = "truncated", "max_turns"
    cfg = _cfg(algorithm="ppo", lam=0.7, whiten_advantages=False, beta=0.0)
    lay = layout_episodes(eps, "last", PAD)
    line = Timeline.of(lay)
    token_values = torch.randn(line.valid.shape, generator=torch.Generator().manual_seed(1))
    values = line.scatter(token_values, lay.completion_mask)
    last_values = torch.tensor([2.0, 0.0, -1.5, 0.0])
    adv, ret, _ = credit(eps, lay, cfg, values=values, last_values=last_values)
    adv, ret = line.gather(adv), line.gather(ret)
    for i, ep in enumerate(eps):
        flat = [(s, j == len(t.action_ids) - 1) for s, t in enumerate(ep.turns)
                for j in range(len(t.action_ids))]  # fmt: skip
        running, nxt = 0.0, float(last_values[i])  # 0 for the episodes that terminated
        for p in reversed(range(len(flat))):
            s, last = flat[p]
            g = 0.8 if last else 1.0
            delta = (ep.turns[s].reward if last else 0.0) + g * nxt - float(token_values[i, p])
            running = delta + g * 0.7 * running
            nxt = float(token_values[i, p])
            assert float(adv[i, p]) == pytest.approx(running, abs=1e-5)
            assert float(ret[i, p]) == pytest.approx(running + nxt, abs=1e-5)
    # the first episode's last token: r + gamma * V(next) - V(s)
    n = sum(len(t.action_ids) for t in eps[0].turns)
    want = eps[0].turns[-1].reward + 0.8 * 2.0 - float(token_values[0, n - 1])
    assert float(adv[0, n - 1]) == pytest.approx(want, abs=1e-5)


def test_episode_metrics_average_the_envs_counters():
    m = episode_metrics(_episodes())
    assert m["env/return"] == pytest.approx((1.5 + 0.3 - 1.0 + 2.0) / 4)
    assert m["env/turns"] == pytest.approx(9 / 4)
    assert m["env/invalid_actions"] == pytest.approx(3 / 4)  # turn 1 of the 3 longer episodes
    assert m["env/collision"] == pytest.approx(0.5)
    assert m["env/speed"] == pytest.approx(3.0)


def test_the_envs_own_counters_never_replace_rlaligns():
    """An env that counts its own turns (only when it ends the episode itself) or reports a
    return must not overwrite rlalign's count; numpy scalars (a Gymnasium env's info) count."""
    eps = _episodes()
    eps[0].info = {"turns": 3, "return": -9.0, "crashed": np.bool_(True), "lane": np.int64(2)}
    eps[1].info = {"crashed": np.bool_(False), "lane": np.int64(1), "speed": np.float32(3.5)}
    m = episode_metrics(eps)
    assert m["env/turns"] == pytest.approx(9 / 4)
    assert m["env/return"] == pytest.approx((1.5 + 0.3 - 1.0 + 2.0) / 4)
    assert m["env/crashed"] == pytest.approx(1 / 4)
    assert m["env/lane"] == pytest.approx(3 / 4)
    assert m["env/speed"] == pytest.approx((3.5 + 3.0 + 3.0) / 4)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"data": "p.jsonl"}, "not both"),
        ({"ptx_data": "c.txt", "ptx_coef": 0.1}, "single-turn"),
        ({"reward_funcs": ["x.py:f"]}, "environment gives the rewards"),
    ],
)
def test_settings_a_multi_turn_run_cannot_honour_are_refused(extra, message):
    with pytest.raises(ValueError, match=message):
        _cfg(**extra)
