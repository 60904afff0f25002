"""The docs build's griffe extension turns the docstrings' reST into Markdown (hand-written
expectations, one construct at a time)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load():
    spec = importlib.util.spec_from_file_location("griffe_rst", ROOT / "docs/_hooks/griffe_rst.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.rest_to_markdown


def test_math_roles_and_directives():
    convert = load()
    assert (
        convert(r"Return :math:`G_t = \sum_k \gamma^k r`.") == r"Return $G_t = \sum_k \gamma^k r$."
    )
    text = "Loss:\n\n.. math:: L = -\\log p\n\nDone."
    out = convert(text)
    assert "\n\n$$\nL = -\\log p\n$$\n\n" in out
    assert out.startswith("Loss:") and out.endswith("Done.") and ".. math" not in out
    block = "GAE.\n\n    .. math::\n        a = b\n        c = d\n\n    After."
    assert "    $$\n    a = b\n    c = d\n    $$" in convert(block)
    assert "After." in convert(block)


def test_cross_reference_roles_become_code():
    convert = load()
    assert convert("See :func:`policy_loss` and :class:`~rlalign.rl.Foo`.") == (
        "See `policy_loss` and `Foo`."
    )
    assert convert(":mod:`rlalign.rl`, :meth:`Trainer.fit`") == "`rlalign.rl`, `Trainer.fit`"


def test_literal_block_marker_and_simple_table():
    convert = load()
    assert convert("For example::\n\n    x = 1") == "For example:\n\n    x = 1"
    table = (
        "Actions:\n\n"
        "====  ==========  ===========\n"
        " 0    keep        keep the lane\n"
        " 1    accelerate  +a m/s^2\n"
        "====  ==========  ===========\n"
    )
    out = convert(table)
    assert "| 0 | keep | keep the lane |" in out
    assert "| 1 | accelerate | +a m/s^2 |" in out
    assert "====" not in out


def test_plain_markdown_is_left_alone():
    convert = load()
    text = "A *policy* maps ``states`` to actions.\n\nArgs:\n    x: a tensor."
    assert convert(text) == text
