"""The CLI skeleton: --help, --version, python -m rlalign, and user errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rlalign import __version__
from rlalign.cli import COMMANDS, main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlalign", *args], capture_output=True, text=True, timeout=120
    )


def test_version_and_help():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"rlalign {__version__}"
    out = run("--help")
    assert out.returncode == 0
    for name in COMMANDS:
        assert name in out.stdout


def test_every_command_has_help(capsys):
    for name in COMMANDS:
        try:
            main([name, "--help"])
        except SystemExit as exc:
            assert exc.code == 0
        text = capsys.readouterr().out
        assert "usage: rlalign " + name in text


def test_unknown_command_is_an_error():
    out = run("pretrian")
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999"])
@pytest.mark.parametrize("command", [["generate", "model_dir", "a prompt"], ["tabular"]])
def test_a_seed_out_of_range_is_one_line_exit_2(capsys, command, seed):
    """torch and numpy take seeds from 0 to 2**32 - 1: outside it, argparse's one line."""
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--seed", seed])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert (
        f"argument --seed: a seed is a whole number from 0 to 4294967295 (2**32 - 1), got '{seed}'"
        in err
    )
