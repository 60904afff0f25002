"""A reward file that is not valid Python."""


def score(prompts, completions, **fields)
    return [0.0] * len(completions)
