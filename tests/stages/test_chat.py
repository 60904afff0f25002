"""``rlalign chat``: the conversation against transformers' generate, and the terminal as a
person sees it (tmux: type, read the screen)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid

import pytest
import torch

from rlalign.errors import UserError
from rlalign.lm.conversation import Conversation
from rlalign.lm.loading import load_model_and_tokenizer


def reference_reply(model, tokenizer, messages, max_new_tokens):
    """Greedy generate() on the chat template's rendering, by hand."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def test_replies_are_generate_on_the_whole_conversation(base_model_dir):
    model, tok = load_model_and_tokenizer(base_model_dir)
    chat = Conversation(model, tok, system="Be brief.", temperature=0, max_new_tokens=12)
    pieces: list[str] = []
    first = chat.reply("What is 2 + 3?", on_text=pieces.append)
    assert first == reference_reply(
        model, tok, [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "What is 2 + 3?"}], 12
    )  # fmt: skip
    assert "".join(pieces).strip() == first and len(pieces) >= 1  # streamed, then whole
    second = chat.reply("And 4 + 4?")
    assert second == reference_reply(model, tok, chat.messages[:-1], 12)
    assert [m["role"] for m in chat.messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    chat.reset()
    assert chat.messages == [{"role": "system", "content": "Be brief."}]


def test_sampling_is_seeded_and_the_context_is_kept_within_bounds(base_model_dir):
    model, tok = load_model_and_tokenizer(base_model_dir)
    a = Conversation(model, tok, temperature=1.0, max_new_tokens=8, seed=5)
    b = Conversation(model, tok, temperature=1.0, max_new_tokens=8, seed=5)
    assert [a.reply("hi"), a.reply("again")] == [b.reply("hi"), b.reply("again")]
    with pytest.raises(UserError, match="temperature must be a number >= 0"):
        a.temperature = -1
    # a long conversation: the oldest turns go, the newest stays
    small = Conversation(model, tok, temperature=0, max_new_tokens=200)
    for i in range(6):
        small.reply(f"turn {i}: what is the capital of Valdoria?")
    assert small.dropped_turns > 0
    assert small.messages[-2]["content"] == "turn 5: what is the capital of Valdoria?"
    assert len(small.prompt_ids()) + 200 <= model.config.max_position_embeddings
    with pytest.raises(UserError, match="does not fit the model's"):
        small.reply("word " * 400)
    assert small.messages[-1]["role"] == "assistant"  # the refused message was not kept


def test_chat_in_a_real_terminal(base_model_dir):
    if shutil.which("tmux") is None:  # never skipped silently: `make test-browser` installs it
        pytest.fail("no tmux to run the chat in: `make test-browser` installs it")
    session = f"rlalign-chat-{uuid.uuid4().hex[:8]}"
    command = (
        f"{sys.executable} -m rlalign chat {base_model_dir} --temperature 0 --max-new-tokens 8"
    )
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", command],
                   check=True)  # fmt: skip

    def screen() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                              capture_output=True, text=True).stdout  # fmt: skip

    def wait_for(text: str, count: int = 1, timeout: float = 60.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            shown = screen()
            if shown.count(text) >= count:
                return shown
            time.sleep(0.2)
        raise AssertionError(f"{text!r} x{count} never appeared; the screen:\n{screen()}")

    def type_line(text: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", session, text, "Enter"], check=True)

    try:
        wait_for("you>")
        type_line("What is 2 + 3?")
        shown = wait_for("you>", count=2)
        lines = shown.splitlines()
        assert "you> What is 2 + 3?" in lines  # what was typed, echoed by the terminal
        # the reply: from "model>" to the next prompt (a reply may hold line breaks)
        start = next(i for i, line in enumerate(lines) if line.startswith("model>"))
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("you>"))
        shown_reply = " ".join(" ".join(lines[start:end]).removeprefix("model>").split())
        model, tok = load_model_and_tokenizer(base_model_dir)
        want = reference_reply(model, tok, [{"role": "user", "content": "What is 2 + 3?"}], 8)
        assert shown_reply == " ".join(want.split())
        type_line("/temperature 0.5")
        wait_for("(temperature 0.5)")
        type_line("/reset")
        wait_for("(conversation cleared)")
        type_line("/nonsense")
        wait_for("(unknown command /nonsense; /help lists them)")
        type_line("/quit")
        end = time.monotonic() + 30
        while time.monotonic() < end:  # the program ends, and its session with it
            alive = subprocess.run(["tmux", "has-session", "-t", session], capture_output=True)
            if alive.returncode != 0:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("rlalign chat did not end on /quit")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
