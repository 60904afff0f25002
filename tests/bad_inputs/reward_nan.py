"""A reward function that returns NaN for the fourth completion (0/0 in its arithmetic)."""


def score(prompts, completions, **fields):
    return [float("nan") if i == 3 else 1.0 for i in range(len(completions))]
