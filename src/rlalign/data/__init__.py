"""Data: the built-in world (the embedded default) and its verifiers."""
