"""`rlalign tabular --quick` runs end to end and shows RL improving J(theta)."""

from __future__ import annotations

import re

from rlalign.cli import main


def test_tabular_quick_runs_and_improves(capsys):
    assert main(["tabular", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "G = [1.5, 1.0, 2.0]" in out  # the worked example, gamma = 0.5
    uniform = float(re.search(r"uniform random policy\s+J = ([+-][\d.]+)", out).group(1))
    for kind in ("reinforce", "ppo"):
        j = float(re.search(rf"{kind}\s+after \d+ steps: J = ([+-][\d.]+)", out).group(1))
        assert j > uniform + 2.0
