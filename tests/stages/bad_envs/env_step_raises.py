class Buggy:
    """Its step() has a bug of the user's own (a missing key), raised on the first step."""

    actions = None

    def reset(self, *, seed=None):
        self.table = {}
        return "say a word", {}

    def step(self, action):
        return "say a word", self.table["missing"], False, False, {}

    def close(self):
        pass


def make_env(**kwargs):
    return Buggy()
