"""A one-step text environment that writes "open" when made and "close" when closed to the
file ``log``: a run must close every environment it made."""

from pathlib import Path


class Closing:
    actions = None

    def __init__(self, log: str) -> None:
        self.log = Path(log)
        with self.log.open("a") as f:
            f.write("open\n")

    def reset(self, *, seed=None):
        return "say a word", {}

    def step(self, action):
        return "done", 1.0, True, False, {}

    def close(self):
        with self.log.open("a") as f:
            f.write("close\n")


def make_env(log: str):
    return Closing(log)
