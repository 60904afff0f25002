"""A reward file whose import never finishes (it waits for a server at import time)."""

import time

time.sleep(3600)


def score(prompts, completions, **fields):
    return [0.0] * len(completions)
