"""Fixtures of the CUDA checks: fp32 without TF32 for every test, and the stage tests' tiny
world, tokenizer and models (re-exported from ``tests/stages/conftest.py``: the same inputs as
the CPU tests, built on the CPU and moved by each stage)."""

from __future__ import annotations

import pytest

from stages.conftest import (  # noqa: F401  (fixtures, found by name)
    base_model_dir,
    word_model_dir,
    word_task,
    world_dir,
)

from .helpers import exact_fp32


@pytest.fixture(autouse=True)
def _exact_fp32():
    with exact_fp32():
        yield
