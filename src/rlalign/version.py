"""The installed rlalign's version (one place; ``rlalign.__version__`` reads it)."""

__version__ = "0.1.0"
