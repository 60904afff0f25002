class Buggy:
    """Its reset() fails for a seed it cannot handle."""

    actions = None

    def reset(self, *, seed=None):
        raise ValueError(f"no level for seed {seed}")

    def step(self, action):
        return "say a word", 0.0, True, False, {}


def make_env(**kwargs):
    return Buggy()
