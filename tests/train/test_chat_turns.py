"""An episode's tokens, turn by turn, are exactly the chat template's rendering of the
conversation: the tokens RL trains on are the tokens SFT taught."""

from __future__ import annotations

import pytest

from rlalign.lm.tokenizer import train_tokenizer
from rlalign.train.episodes import ChatTurns


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["What is 1 2 plus 3 4?", "calc 1 2 plus 3 4", "= 4 6", "It is 4 6."] * 20
    return train_tokenizer(texts, vocab_size=300)


CONVERSATION = [
    ("user", "What is 1 2 plus 3 4?"),
    ("assistant", "calc 1 2 plus 3 4"),
    ("user", "= 4 6"),
    ("assistant", "It is 4 6."),
    ("user", "= 9"),
]


@pytest.mark.parametrize("wrote_eos", [True, False])
def test_turns_laid_end_to_end_are_the_templates_rendering(tokenizer, wrote_eos):
    chat = ChatTurns(tokenizer)
    ids = chat.first(CONVERSATION[0][1])
    for role, text in CONVERSATION[1:]:
        if role == "assistant":
            action = tokenizer(text, add_special_tokens=False)["input_ids"]
            # an action cut at max_new_tokens has no <|eos|>: the env's turn closes it
            action += [tokenizer.eos_token_id] if wrote_eos else []
            ids += action
        else:
            ids += chat.after_action(text, action)
    reference = tokenizer.apply_chat_template(
        [{"role": r, "content": c} for r, c in CONVERSATION],
        tokenize=False,
        add_generation_prompt=True,
    )
    expected = tokenizer(reference, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == tokenizer.convert_ids_to_tokens(expected)
