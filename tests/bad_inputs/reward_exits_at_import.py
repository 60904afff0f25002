"""A reward file that ends the interpreter when imported (a script's guard forgotten)."""

import sys

sys.exit(5)


def score(prompts, completions, **fields):
    return [0.0] * len(completions)
