"""A reward function that returns a label instead of a list of numbers."""


def score(prompts, completions, **fields):
    return "good"
