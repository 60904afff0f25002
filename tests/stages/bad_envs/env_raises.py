def make_env(**kwargs):
    raise RuntimeError("the simulator's licence server is down")
