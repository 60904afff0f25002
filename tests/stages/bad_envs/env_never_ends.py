class Endless:
    """Pays 1 for every word and never ends: only max_turns stops an episode."""

    actions = None

    def reset(self, *, seed=None):
        return "say a word", {}

    def step(self, action):
        return "say a word", 1.0, False, False, {}

    def close(self):
        pass


def make_env(**kwargs):
    return Endless()
