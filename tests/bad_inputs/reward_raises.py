"""A reward function that raises on every call (its scoring server is down)."""


def score(prompts, completions, **fields):
    raise ConnectionError("reward server at localhost:9000 refused the connection")
