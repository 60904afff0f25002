"""A reward file whose import fails (a misspelt dependency)."""

import numpyy  # noqa: F401


def score(prompts, completions, **fields):
    return [0.0] * len(completions)
