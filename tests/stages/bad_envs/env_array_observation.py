import numpy as np


class ArrayEnv:
    actions = None

    def reset(self, *, seed=None):
        return np.zeros(3), {}

    def step(self, action):
        return np.zeros(3), 0.0, True, False, {}

    def close(self):
        pass


def make_env(**kwargs):
    return ArrayEnv()
