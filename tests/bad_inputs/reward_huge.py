"""A reward function that scores a perfect answer 1e308 (a sentinel for "the best"), beyond
what float32 holds."""


def score(prompts, completions, **fields):
    return [1e308 if i == 2 else 0.0 for i in range(len(completions))]
