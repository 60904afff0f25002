"""``rlalign chat MODEL_DIR``: talk to a model in the terminal, its replies streamed.

Each line typed is a user turn; the reply appears token by token. ``/reset`` starts over,
``/temperature T`` changes the sampling (0: greedy), ``/help`` lists the commands, ``/quit``
or Ctrl-D ends. Lines are edited with ``readline`` where Python has it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from rlalign.commands import seed_type

HELP = "talk to a model in the terminal (chat template, replies streamed; /reset, /temperature)"
COMMANDS = {
    "/reset": "forget the conversation so far",
    "/temperature T": "sample at temperature T from the next reply on (0: greedy)",
    "/help": "this list",
    "/quit": "end (Ctrl-D too)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model_dir", metavar="MODEL_DIR", help="a run's final/ directory or any local HF causal LM"
    )
    parser.add_argument(
        "--temperature", type=float, default=0.7, help="sampling temperature; 0 = greedy (0.7)"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=128, help="the longest reply, in tokens (128)"
    )
    parser.add_argument("--system", default=None, help="a system message opening the chat")
    parser.add_argument("--seed", type=seed_type, default=0, help="random seed (0)")
    parser.epilog = "in the chat: " + "; ".join(f"{k}: {v}" for k, v in COMMANDS.items())


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from rlalign.errors import UserError
    from rlalign.lm.conversation import Conversation
    from rlalign.lm.loading import load_model_and_tokenizer

    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # generate()'s notes on its own defaults are not for users
    model, tokenizer = load_model_and_tokenizer(args.model_dir)
    chat = Conversation(model, tokenizer, system=args.system, temperature=args.temperature,
                        max_new_tokens=args.max_new_tokens, seed=args.seed)  # fmt: skip
    with contextlib.suppress(ImportError):  # line editing and history for input(); not Windows
        import readline  # noqa: F401
    print(f"chatting with {args.model_dir} (temperature {chat.temperature:g}); /help for commands")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if not line:
            continue
        if line.startswith("/"):
            if command(chat, line):
                return 0
            continue
        print("model> ", end="", flush=True)
        dropped = chat.dropped_turns
        try:
            chat.reply(line, on_text=lambda text: print(text, end="", flush=True))
        except UserError as exc:
            print(f"\n(not sent: {exc})")
            continue
        print()
        if chat.dropped_turns > dropped:
            print(f"(the oldest {chat.dropped_turns - dropped} turn(s) no longer fit the context)")


def command(chat, line: str) -> bool:
    """Carry out a ``/command``; ``True`` when the chat ends."""
    from rlalign.errors import UserError

    name, _, rest = line.partition(" ")
    if name in ("/quit", "/exit"):
        return True
    if name == "/reset":
        chat.reset()
        print("(conversation cleared)")
    elif name == "/temperature":
        if rest.strip():
            try:
                chat.temperature = float(rest)
            except (ValueError, UserError):
                print(f"(not a temperature: {rest.strip()!r}; give a number >= 0)")
                return False
        print(f"(temperature {chat.temperature:g})")
    elif name == "/help":
        for key, text in COMMANDS.items():
            print(f"  {key:<16} {text}")
    else:
        print(f"(unknown command {name}; /help lists them)", file=sys.stdout)
    return False
