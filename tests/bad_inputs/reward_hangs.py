"""A reward function that never returns (it waits on a server that never answers)."""

import time


def score(prompts, completions, **fields):
    time.sleep(3600)
    return [0.0] * len(completions)
