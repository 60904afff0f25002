"""The calculator episode: the tool is exact, answers are scored right, the split holds."""

from __future__ import annotations

import json
import random
import re

import pytest

from rlalign.data.formats import load_sft
from rlalign.envs.base import TextEnv
from rlalign.envs.calculator import (
    EVAL_SEED_START,
    NO_TOOL,
    balanced_train_seeds,
    eval_seeds,
    expert_messages,
    make_env,
    play_episode,
    train_seeds,
    write_expert_transcripts,
)
from rlalign.errors import UserError

# The reference reads the question's text, not the module's Question: "What is 4 8 2 1 plus
# 3 9 0 7?" -> (4821, "plus", 3907).
QUESTION_RE = re.compile(r"What is ([\d ]+?) (plus|minus) ([\d ]+)\?")


def parse_question(text: str) -> tuple[int, str, int]:
    match = QUESTION_RE.fullmatch(text)
    assert match, text
    a, op, b = match.groups()
    return int(a.replace(" ", "")), op, int(b.replace(" ", ""))


def reference(a: int, op: str, b: int) -> int:
    return a + b if op in ("plus", "+") else a - b


def spaced(n: int) -> str:
    return " ".join(str(n))


def replay(messages: list[dict[str, str]]):
    """A player that says the assistant turns of ``messages`` in order."""
    said = iter(m["content"] for m in messages if m["role"] == "assistant")
    return lambda conversation: next(said)


SEEDS = train_seeds(150, seed=7) + eval_seeds(50)


def test_is_a_text_env_with_free_text_actions():
    env = make_env()
    assert isinstance(env, TextEnv)
    assert env.actions is None


@pytest.mark.parametrize("tool", [True, False])
def test_expert_transcript_played_back_scores_one(tool):
    for seed in SEEDS:
        expert = expert_messages(seed, tool=tool)
        result = play_episode(make_env(tool=tool), replay(expert), seed)
        assert result["return"] == 1.0 and result["correct"], (seed, expert)
        assert result["tool_calls"] == int(tool) and result["invalid_tool_calls"] == 0
        # The env says exactly what the transcript's user turns say.
        assert result["messages"] == expert
        a, op, b = parse_question(expert[0]["content"])
        assert f"{reference(a, op, b)}" == expert[-1]["content"].removeprefix("It is ")[
            :-1
        ].replace(" ", "")


def test_wrong_answers_score_zero_and_right_ones_in_any_spacing_score_one():
    for seed in SEEDS[:60]:
        env = make_env()
        text, _ = env.reset(seed=seed)
        answer = reference(*parse_question(text))
        wrong = [answer + 1, answer - 1, answer + 10, answer * 10, -answer]
        for message in [f"It is {spaced(w)}." for w in wrong] + [
            f"{answer + 1}",
            "I don't know.",
            "",
            f"It is {spaced(answer)[:-2]}.",  # a digit short
        ]:
            env.reset(seed=seed)
            _, reward, terminated, truncated, info = env.step(message)
            assert (reward, terminated, truncated, info["correct"]) == (0.0, True, False, False), (
                message
            )
        # The first number counts: the right one first, in either spelling, scores 1.
        for message in [f"{answer}", f"It is {spaced(answer)}, not {answer + 1}.", f"={answer}"]:
            env.reset(seed=seed)
            _, reward, terminated, _, info = env.step(message)
            assert (reward, terminated, info["correct"]) == (1.0, True, True), message
        env.reset(seed=seed)
        assert env.step(f"not {answer + 1} but {answer}")[1] == 0.0


def test_tool_output_is_exactly_the_result():
    rng = random.Random(0)
    env = make_env(max_turns=4)
    cases = [parse_question(make_env().reset(seed=s)[0]) for s in SEEDS]
    cases += [
        (rng.randrange(10 ** rng.randint(1, 18)), rng.choice("+-"), rng.randrange(10**12))
        for _ in range(300)
    ]
    cases += [(0, "plus", 0), (5, "minus", 9), (10**18 - 1, "+", 10**18 - 1)]
    for a, op, b in cases:
        env.reset(seed=1)
        for call in (
            f"calc {spaced(a)} {op} {spaced(b)}",
            f"calc {a}{op}{b}",
            f"CALC {a} {op} {b}",
        ):
            output, reward, terminated, truncated, _ = env.step(call)
            assert output == f"= {'-' if reference(a, op, b) < 0 else ''}" + spaced(
                abs(reference(a, op, b))
            ), call
            assert (reward, terminated, truncated) == (0.0, False, False)


def test_reset_is_deterministic_in_the_seed():
    for seed in SEEDS:
        assert make_env().reset(seed=seed) == make_env().reset(seed=seed)
    texts = {make_env().reset(seed=s)[0] for s in SEEDS}
    assert len(texts) == len(SEEDS)  # 4-digit operands: a repeat would be a seeding bug
    env_a, env_b = make_env(seed=3), make_env(seed=3)
    first = [env_a.reset()[0] for _ in range(20)]
    assert first == [env_b.reset()[0] for _ in range(20)]
    assert len(set(first)) == 20
    assert first != [make_env(seed=4).reset()[0] for _ in range(20)]


@pytest.mark.parametrize("digits", [2, 4])
def test_train_and_eval_seeds_never_share_a_question(digits):
    # 2 digits: ~12,000 questions, so 3000 seeds a side would collide if the split were by seed.
    env = make_env(digits=digits)
    train = {env.reset(seed=s)[0] for s in train_seeds(3000, seed=1)}
    held = set()
    for s in eval_seeds(3000):
        text, info = env.reset(seed=s)
        assert info["split"] == "eval"
        held.add(text)
    assert not train & held
    assert (
        min(eval_seeds(5)) == EVAL_SEED_START and max(train_seeds(3000, seed=1)) < EVAL_SEED_START
    )
    if digits == 2:  # both sides cover their share of the small space
        assert len(train) > 1500 and len(held) > 300


def test_without_the_tool_a_call_is_refused():
    env = make_env(tool=False)
    for seed in SEEDS[:40]:
        text, _ = env.reset(seed=seed)
        a, op, b = parse_question(text)
        output, reward, terminated, truncated, info = env.step(f"calc {spaced(a)} {op} {spaced(b)}")
        assert output == NO_TOOL
        assert str(reference(a, op, b)) not in output.replace(" ", "")
        assert (reward, terminated, truncated) == (0.0, False, False)
        assert info["tool_calls"] == 1 and info["invalid_tool_calls"] == 0
        _, reward, terminated, _, info = env.step(f"It is {spaced(reference(a, op, b))}.")
        assert (reward, terminated, info["correct"], info["tool_calls"]) == (1.0, True, True, 1)


@pytest.mark.parametrize("max_turns", [1, 2, 3, 5])
def test_max_turns_truncates_a_conversation_of_tool_calls(max_turns):
    env = make_env(max_turns=max_turns)
    text, _ = env.reset(seed=11)
    call = "calc " + text.removeprefix("What is ").removesuffix("?")
    for turn in range(1, max_turns + 1):
        _, reward, terminated, truncated, info = env.step(call)
        assert (reward, terminated, truncated) == (0.0, False, turn == max_turns)
    assert (info["correct"], info["turns"], info["tool_calls"]) == (False, max_turns, max_turns)
    with pytest.raises(RuntimeError, match="reset"):
        env.step("It is 1.")
    # One turn fewer of calls leaves room for the answer.
    expert = expert_messages(11)
    env.reset(seed=11)
    for _ in range(max_turns - 1):
        env.step(call)
    _, reward, terminated, truncated, info = env.step(expert[-1]["content"])
    assert (reward, terminated, truncated, info["turns"]) == (1.0, True, False, max_turns)


def test_a_malformed_call_gets_an_error_and_is_counted():
    malformed = [
        "calc",
        "calc 1 2 times 3",
        "calc plus 3",
        "calc 1 2 plus",
        "CALC 5 + x",
        "calc 1  2 plus 3",  # two spaces inside a number
        "calc " + "9" * 19 + " plus 1",
        "calc 1 plus 2 plus 3",
        "calc " + "x" * 200,
    ]
    env = make_env(max_turns=len(malformed) + 1)
    env.reset(seed=2)
    for i, call in enumerate(malformed, 1):
        output, reward, terminated, truncated, info = env.step(call)
        assert output.startswith("calc: cannot parse") and len(output) < 120, output
        assert (reward, terminated, truncated) == (0.0, False, False)
        assert (info["tool_calls"], info["invalid_tool_calls"]) == (i, i)
    *_, info = env.step(expert_messages(2)[-1]["content"])
    assert (info["correct"], info["invalid_tool_calls"]) == (True, len(malformed))
    # A message whose first word is not "calc" is an answer, not a call.
    env.reset(seed=2)
    assert env.step("calculator 1 plus 2")[2] is True


def test_expert_transcripts_load_as_sft_data_and_hold_no_eval_question(tmp_path):
    path = tmp_path / "calc.jsonl"
    assert write_expert_transcripts(path, 40, seed=5) == 40
    conversations = load_sft(path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [c for c in conversations] == [r["messages"] for r in rows]
    assert [r["seed"] for r in rows] == train_seeds(40, seed=5)
    held = {make_env().reset(seed=s)[0] for s in eval_seeds(2000)}
    for row in rows:
        assert row["messages"] == expert_messages(row["seed"])
        assert row["messages"][0]["content"] not in held
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calc.jsonl"]  # no temporary left
    with pytest.raises(UserError, match="episodes"):
        write_expert_transcripts(tmp_path / "none.jsonl", 0)


@pytest.mark.parametrize("digits", [3, 4])
def test_balanced_seeds_give_each_answer_length_a_third_and_stay_training_seeds(tmp_path, digits):
    def lengths(seeds):
        counts: dict[int, int] = {}
        for s in seeds:
            text = make_env(digits=digits).reset(seed=s)[0]
            length = max(len(str(reference(*parse_question(text)))), digits - 1)
            counts[length] = counts.get(length, 0) + 1
        return counts

    # Uniform operands: short answers are rare, the skew the balanced draw removes.
    assert lengths(train_seeds(300, seed=3))[digits - 1] < 60
    seeds = balanced_train_seeds(300, seed=3, digits=digits)
    assert len(set(seeds)) == 300 and all(0 <= s < EVAL_SEED_START for s in seeds)
    assert lengths(seeds) == {digits - 1: 100, digits: 100, digits + 1: 100}
    assert balanced_train_seeds(300, seed=3, digits=digits) == seeds
    assert balanced_train_seeds(300, seed=4, digits=digits) != seeds
    held = {make_env(digits=digits).reset(seed=s)[0] for s in eval_seeds(3000)}
    assert not held & {make_env(digits=digits).reset(seed=s)[0] for s in seeds}
    path = tmp_path / "balanced.jsonl"
    write_expert_transcripts(path, 300, seed=3, digits=digits, balanced=True)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["seed"] for r in rows] == seeds


def test_every_digit_of_the_env_texts_is_one_token():
    from rlalign.lm.tokenizer import train_tokenizer

    # A corpus full of whole numbers, so that the BPE learns multi-digit merges.
    rng = random.Random(0)
    corpus = [" ".join(str(rng.randrange(10, 10_000)) for _ in range(40)) for _ in range(200)]
    tok = train_tokenizer(corpus, vocab_size=400)
    assert any(re.fullmatch(r"Ġ?\d{2,}", t) for t in tok.get_vocab())  # merges exist
    for seed in SEEDS[:30]:
        for message in expert_messages(seed):
            tokens = tok.convert_ids_to_tokens(
                tok(message["content"], add_special_tokens=False)["input_ids"]
            )
            digits = [t for t in tokens if any(ch.isdigit() for ch in t)]
            assert all(re.fullmatch(r"Ġ?\d", t) for t in digits), (message, tokens)
            assert len(digits) == sum(ch.isdigit() for ch in message["content"])


def test_bad_options_are_one_line_user_errors():
    with pytest.raises(UserError, match="did you mean 'max_turns'"):
        make_env(max_turn=3)
    with pytest.raises(UserError, match="max_turns"):
        make_env(max_turns=0)
    with pytest.raises(UserError, match="digits"):
        make_env(digits=1)
    with pytest.raises(UserError, match="ops"):
        make_env(ops=["times"])
