"""Data files: valid rows load; each kind of malformed line gives `file:line: what is wrong`."""

from __future__ import annotations

import json
import re

import pytest

from rlalign.data.formats import load_preferences, load_prompts, load_sft
from rlalign.data.world import World
from rlalign.errors import UserError


def write(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_world_exports_load(tmp_path):
    World().export(tmp_path)
    assert len(load_sft(tmp_path / "sft.jsonl")) > 100
    pairs = load_preferences(tmp_path / "preferences.jsonl")
    assert all(p["margin"] == 0.0 for p in pairs)
    assert {p["kind"] for p in pairs} >= {"fact", "arithmetic", "harmful"}
    held = load_preferences(tmp_path / "eval" / "preferences.jsonl")
    assert not {p["prompt"] for p in pairs} & {p["prompt"] for p in held}
    rows = load_prompts(tmp_path / "rl_prompts.jsonl")
    assert {"prompt", "kind", "answer"} <= set(rows[0])


def test_prompt_completion_becomes_two_turns(tmp_path):
    path = write(tmp_path, [{"prompt": "Hi?", "completion": "Hello."}])
    assert load_sft(path) == [
        [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    ]


GOOD_SFT = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


@pytest.mark.parametrize(
    ("loader", "bad", "fragment"),
    [
        (
            load_sft,
            {"messages": [{"role": "user", "content": "q"}]},
            ":2: conversation has no assistant turn",
        ),
        (
            load_sft,
            {"messages": [{"role": "bot", "content": "q"}]},
            ":2: messages[0].role must be one of",
        ),
        (load_sft, {"messages": []}, ":2: 'messages' must be a non-empty list"),
        (load_sft, {"prompt": "q"}, ":2: missing field 'completion'"),
        (load_sft, {"text": "q"}, ":2: expected 'messages' or 'prompt'/'completion'"),
        (load_sft, '{"messages": [', ":2: invalid JSON"),
        (load_sft, "[1, 2]", ":2: expected a JSON object, got list"),
        (load_preferences, {"prompt": "q", "chosen": "a"}, ":2: missing field 'rejected'"),
        (
            load_preferences,
            {"prompt": "q", "chosen": "a", "rejected": 3},
            ":2: field 'rejected' must be a string",
        ),
        (
            load_preferences,
            {"prompt": "q", "chosen": "a", "rejected": "b", "kind": 1},
            ":2: field 'kind' must be a string",
        ),
        (load_prompts, {"question": "q"}, ":2: missing field 'prompt'"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, loader, bad, fragment):
    good = {
        load_sft: GOOD_SFT,
        load_preferences: {"prompt": "q", "chosen": "a", "rejected": "b"},
        load_prompts: {"prompt": "q"},
    }[loader]
    path = write(tmp_path, [good, bad])
    with pytest.raises(UserError) as info:
        loader(path)
    assert str(info.value).startswith(str(path))
    assert fragment in str(info.value)


@pytest.mark.parametrize("loader", [load_sft, load_preferences, load_prompts])
def test_empty_and_missing_files(tmp_path, loader):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(UserError, match="file is empty"):
        loader(empty)
    with pytest.raises(UserError, match="file not found"):
        loader(tmp_path / "nope.jsonl")


def test_trl_conversational_forms_read_as_the_standard_ones():
    """TRL documents a standard and a conversational form of each dataset; rlalign reads both
    into the same rows."""
    user = [{"role": "user", "content": "What is 2 + 3?"}]
    answer = [{"role": "assistant", "content": "5"}]
    assert load_sft([{"prompt": user, "completion": answer}]) == load_sft(
        [{"messages": user + answer}]
    ) == load_sft([{"prompt": "What is 2 + 3?", "completion": "5"}])  # fmt: skip
    standard = load_preferences([{"prompt": "What is 2 + 3?", "chosen": "5", "rejected": "6"}])
    wrong = [{"role": "assistant", "content": "6"}]
    assert load_preferences([{"prompt": user, "chosen": answer, "rejected": wrong}]) == standard
    assert load_preferences([{"chosen": user + answer, "rejected": user + wrong}]) == standard
    rows = load_prompts([{"prompt": user, "answer": 5}])
    assert rows[0]["prompt"] == "What is 2 + 3?" and rows[0]["answer"] == 5


@pytest.mark.parametrize(
    ("loader", "row", "fragment"),
    [
        ("load_prompts", {"prompt": [{"role": "system", "content": "x"},
                                     {"role": "user", "content": "y"}]},
         "row 0: field 'prompt' is a conversation of 2 message"),
        ("load_preferences", {"chosen": [{"role": "user", "content": "a"}],
                              "rejected": [{"role": "user", "content": "a"}]},
         "without 'prompt', 'chosen' must be one user and one assistant message"),
        ("load_preferences", {"chosen": [{"role": "user", "content": "a"},
                                         {"role": "assistant", "content": "b"}],
                              "rejected": [{"role": "user", "content": "c"},
                                           {"role": "assistant", "content": "d"}]},
         "'chosen' and 'rejected' answer different user messages"),
        ("load_sft", {"prompt": [{"role": "user", "content": "a"}], "completion": "b"},
         "conversational 'prompt' and 'completion' must both be lists"),
    ],
)  # fmt: skip
def test_conversational_forms_that_do_not_fit_are_one_line(loader, row, fragment):
    from rlalign.data import formats

    with pytest.raises(UserError, match=re.escape(fragment)):
        getattr(formats, loader)([row])
