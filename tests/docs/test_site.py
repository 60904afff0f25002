"""The documentation site builds in strict mode; its references cover every public function
of the RL core and every CLI command; broken links and missing images fail the build.

The notebooks are rendered without running them here (test_notebooks.py runs them);
`make docs` runs them too.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RLALIGN_DOCS_EXECUTE": "false", "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = build(ROOT / "mkdocs.yml", out)
    assert result.returncode == 0, result.stderr[-5000:]
    return out


def commands(parser: argparse.ArgumentParser, path=()):
    """(path, help) of every subcommand, walking argparse's subparsers."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), helps.get(name)
                yield from commands(sub, (*path, name))


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.mark.slow
def test_every_page_is_built(site):
    for page in (
        "index.html",
        "getting-started/index.html",
        "concepts/index.html",
        "tutorials/index.html",
        "how-to/multi-node/index.html",
        "benchmarks/index.html",
        "reference/cli/index.html",
        "reference/api/rl/index.html",
    ):
        assert (site / page).is_file(), page
    for nb in sorted((ROOT / "examples").glob("[0-9][0-9]_*.py")):
        page = (site / "examples" / nb.stem / "index.html").read_text()
        assert "jupyter-wrapper" in page  # rendered as a notebook, not copied as a script
        # links between notebooks point at the notebooks' pages
        assert not re.search(r'href="\d\d_\w+\.py"', page)


@pytest.mark.slow
def test_every_public_function_of_the_rl_core_is_documented(site):
    import rlalign.rl

    page = (site / "reference" / "api" / "rl" / "index.html").read_text()
    assert rlalign.rl.__all__
    for name in rlalign.rl.__all__:
        obj = getattr(rlalign.rl, name)
        doc = inspect.getdoc(obj)
        assert doc and len(doc.split()) >= 5, f"rlalign.rl.{name} has no real docstring"
        assert f'id="rlalign.rl.{name}"' in page, f"rlalign.rl.{name} is not in the API reference"
        # the docstring's text is rendered under that heading
        section = page.split(f'id="rlalign.rl.{name}"', 1)[1]
        first_word = doc.split()[0]
        assert f" {first_word} " in text_of(section)[:3000], (name, first_word)
    # reST math in docstrings is rendered as math, not shown as a role
    assert ":math:" not in page and '<span class="arithmatex">' in page


@pytest.mark.slow
def test_every_cli_command_has_help_and_is_in_the_cli_reference(site):
    from rlalign.cli import COMMANDS, build_parser

    found = list(commands(build_parser()))
    paths = {" ".join(p) for p, _ in found}
    assert set(COMMANDS) <= paths
    assert {"control train", "control eval", "control render", "world export"} <= paths
    page = (site / "reference" / "cli" / "index.html").read_text()
    for path, help_text in found:
        name = " ".join(path)
        assert help_text and help_text.strip(), f"`rlalign {name}` has no help text"
        assert f'id="rlalign-{"-".join(path)}"' in page, f"`rlalign {name}` is not in the reference"
        assert f"usage: rlalign {name}" in text_of(page)
    # the config keys of the stages come from their config classes
    from rlalign.train.rl_config import RLConfig

    for key in RLConfig.model_fields:
        assert f"<code>{key}</code>" in page, key


@pytest.mark.slow
def test_broken_links_and_missing_images_fail_the_build(tmp_path):
    for name in ("mkdocs.yml",):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    (tmp_path / "src").symlink_to(ROOT / "src")
    guide = tmp_path / "docs" / "how-to" / "configs.md"
    guide.write_text(
        guide.read_text()
        + "\nSee [the missing guide](no-such-page.md).\n\n![a plot](../images/no-such-plot.png)\n"
    )
    nb = tmp_path / "examples" / "01_returns_and_policy_gradient.py"
    nb.write_text(nb.read_text() + "\n# %% [markdown]\n# [Next](06_no_such_notebook.py)\n")
    # The other notebooks keep only a title: rendering them is a third of this build's time
    for other in sorted((tmp_path / "examples").glob("0[2-9]_*.py")):
        other.write_text(f"# %% [markdown]\n# # {other.stem}\n")

    result = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    # the build fails on these three warnings and on nothing else
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    planted = ("no-such-page.md", "no-such-plot.png", "06_no_such_notebook.py")
    assert all(any(name in line for line in warnings) for name in planted), warnings
    assert all(any(name in line for name in planted) for line in warnings), warnings
