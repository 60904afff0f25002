"""A reward function that returns one score for the whole batch instead of one per completion."""


def score(prompts, completions, **fields):
    return [sum(len(c) for c in completions) / len(completions)]
