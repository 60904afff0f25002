"""Every tutorial notebook of examples/ runs top to bottom, on its tiny settings, in a real
Jupyter kernel, and ends with a plot or a picture."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "examples").glob("[0-9][0-9]_*.py"))


def test_the_six_tutorials_are_there():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]


def _pictures(cell) -> list[str]:
    """The picture-like outputs of a code cell: PNG plots, <img> (GIFs) and <iframe> pages."""
    found = []
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        if "image/png" in data:
            found.append("png")
        html = data.get("text/html", "")
        if "<img " in html or "<iframe " in html:
            found.append("html")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_tiny_settings(path, tmp_path, monkeypatch):
    import jupytext
    from nbclient import NotebookClient

    # The kernel inherits this process's environment (and OMP_NUM_THREADS=1 from conftest).
    monkeypatch.setenv("RLALIGN_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("RLALIGN_TUTORIAL_OUT", str(tmp_path / "runs"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = jupytext.read(path)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    client = NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and the traceback, on any error

    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert all(c.get("execution_count") for c in code), "a code cell did not run"
    assert _pictures(code[-1]), "the notebook should end with a plot or a picture"
