"""The language-model driver: scored on the same seeded episodes as every other driver.

The reference is a constant-action policy of :func:`rlalign.control.evaluate.evaluate`: a model
built to write one fixed reply whatever it reads must drive exactly like it.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
import yaml

from rlalign.cli import main
from rlalign.control.driving_env import ACCELERATE, KEEP
from rlalign.control.envs import env_factory
from rlalign.control.episode import Episode, record_episode
from rlalign.control.evaluate import evaluate
from rlalign.control.lm_driver import LMDriver, chat_prompt_ids, lm_model_dir
from rlalign.control.runs import eval_policy
from rlalign.control.transcripts import write_transcripts
from rlalign.io import read_jsonl
from rlalign.lm.models import create_model
from rlalign.lm.tokenizer import train_tokenizer
from rlalign.train.episodes import ChatTurns


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("car_words") / "t.jsonl"
    write_transcripts(path, episodes=2, seed=100_000)
    texts = [m["content"] for _, row in read_jsonl(path) for m in row["messages"]]
    return train_tokenizer(texts, 400)


def answering_model(tokenizer, reply: str):
    """A Llama that writes ``reply`` and its end of message after any chat prompt.

    Attention and MLP outputs are zeroed, so the last hidden state is the embedding of the
    last token alone; the prompt always ends with the generation prompt's token, and each
    token of the reply (orthogonal one-hot embeddings) points the untied head at the next.
    """
    model = create_model(
        "tiny",
        len(tokenizer),
        seed=0,
        num_hidden_layers=1,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    last = chat_prompt_ids(tokenizer, "x")[-1]
    chain = [last, *tokenizer(reply, add_special_tokens=False)["input_ids"]]
    chain.append(tokenizer.eos_token_id)
    assert len(set(chain)) == len(chain), chain
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = model.get_input_embeddings().weight
        head = model.lm_head.weight
        head.zero_()
        for k, (token, following) in enumerate(itertools.pairwise(chain)):
            embed[token] = 0.0
            embed[token, k] = 1.0
            head[following, k] = 1.0
    return model.eval()


def constant(action: int):
    return lambda obs: np.full(len(obs), action, dtype=np.int64)


def test_prompt_is_the_rollouts_first_turn(tokenizer):
    sentence = "speed 13, lane 1 of 3, careful accel +1.2. no car ahead."
    assert chat_prompt_ids(tokenizer, sentence) == ChatTurns(tokenizer).first(sentence)


def test_a_model_that_always_says_accelerate_drives_like_the_constant_policy(tokenizer):
    short = {"max_steps": 60}
    driver = LMDriver(answering_model(tokenizer, "accelerate"), tokenizer, short)
    make_env = env_factory("rlalign/Driving-v0", short)
    got = evaluate(make_env, driver, 4, 0, batch=4).summary()
    want = evaluate(make_env, constant(ACCELERATE), 4, 0, batch=4).summary()
    assert driver.last_replies and set(driver.last_replies) == {"accelerate"}
    assert got == want
    assert driver.invalid_actions == 0


@pytest.fixture(scope="module")
def honk_run(tokenizer, tmp_path_factory):
    """A language-model run directory whose model answers "honk" (no action) to everything."""
    run = tmp_path_factory.mktemp("honk") / "run"
    model = answering_model(tokenizer, "honk")
    model.save_pretrained(run / "final")
    tokenizer.save_pretrained(run / "final")
    # the car's settings of an `rlalign rl` run in the text env
    config = {"env": "rlalign/Driving-v0", "env_kwargs": {"max_steps": 30}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def test_a_run_directory_is_evaluated_with_invalid_replies_counted(honk_run, capsys):
    run = honk_run
    assert lm_model_dir(run) == run / "final"
    assert lm_model_dir(run / "final") == run / "final"

    got = eval_policy(run, 4, 7)
    want = evaluate(env_factory("rlalign/Driving-v0", {"max_steps": 30}), constant(KEEP), 4, 7)
    want = want.summary()
    assert got["policy"] == "lm"
    assert {k: got[k] for k in want} == want
    # "honk" names no action: every step fell back to keep, and each one is counted
    assert got["invalid_actions_per_episode"] == want["episode_length"] == 30

    assert main(["control", "eval", str(run), "--episodes", "4", "--seed", "7", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == got


def test_an_mlp_or_baseline_result_has_no_invalid_column():
    res = eval_policy(None, 2, 0, env_id="rlalign/Driving-v0", baseline="constant_speed")
    assert "invalid_actions_per_episode" not in res


def test_render_captions_each_frame_with_the_models_words(honk_run, tmp_path, capsys):
    ep = record_episode(honk_run, 3)
    assert ep.label == "lm" and len(ep.actions) == 30
    assert ep.words == ["honk"] * 30 and ep.actions == ["keep"] * 30
    assert all('said "honk"  action=keep' in line for line in ep.captions()[:-1])

    # the teacher beside it, on the car the model was trained in (30 steps at most)
    png = tmp_path / "strip.png"
    command = ["control", "render", str(honk_run), "--strip", str(png), "--frames", "2"]
    assert main([*command, "--compare", "rule_based"]) == 0
    printed = capsys.readouterr().out
    assert png.stat().st_size > 0 and '"policy": "lm"' in printed
    rule = json.loads(printed.strip().splitlines()[-1])
    assert rule["policy"] == "rule_based" and rule["steps"] <= 30


def test_a_long_reply_is_shortened_in_the_caption():
    ep = Episode(label="lm", seed=0, gamma=1.0, frames=[None] * 2)
    ep.actions, ep.rewards, ep.words = ["keep"], [0.0], ["brake\nno, accelerate hard"]
    assert 'said "brake no, a..."  action=keep' in ep.captions()[0]


def test_transcripts_driven_by_a_language_model(tokenizer, tmp_path, capsys):
    """`control transcripts --driver RUN`: the model's car (it always brakes) is what the
    expert labels; the run's car settings (max_steps=30) are the episodes'."""
    run = tmp_path / "run"
    model = answering_model(tokenizer, "brake")
    model.save_pretrained(run / "final")
    tokenizer.save_pretrained(run / "final")
    (run / "config.yaml").write_text(
        yaml.safe_dump({"env": "rlalign/Driving-v0", "env_kwargs": {"max_steps": 30}})
    )
    out = tmp_path / "d.jsonl"
    assert main(["control", "transcripts", "--driver", str(run), "--episodes", "2",
                 "--seed", "7", "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert f"steps of {run}, labelled by rule_based" in printed
    rows = [row for _, row in read_jsonl(out)]
    speeds = [int(r["messages"][0]["content"].split(",")[0].split()[1]) for r in rows]
    assert len(rows) == 2 * 30  # braking to a standstill: every episode runs out its 30 steps
    assert speeds[29] == 0 and speeds[-1] == 0  # the car it drove has stopped
    assert {r["messages"][1]["content"] for r in rows} != {"brake"}  # the expert's words
