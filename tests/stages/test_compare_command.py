"""``rlalign compare``: models given as directories, names, and its mistakes."""

from __future__ import annotations

from rlalign.cli import main


def test_compare_command(base_model_dir, tmp_path, capsys):
    out = tmp_path / "c.html"
    assert main(["compare", str(base_model_dir), str(base_model_dir), "--names", "a,b",
                 "--max-new-tokens", "4", "--out", str(out)]) == 0  # fmt: skip
    page = out.read_text()
    assert "<th>a</th><th>b</th>" in page and page.count("<tr data-kind=") == 238
    assert "world seed 0" in page
    assert main(["compare", str(tmp_path), "--out", str(out)]) == 2
    assert "not a model" in capsys.readouterr().err
    assert main(["compare", str(base_model_dir), "--names", "a,b", "--out", str(out)]) == 2
