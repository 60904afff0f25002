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
    capsys.readouterr()
    # two models of one name would share a column: the second would replace the first
    assert main(["compare", str(base_model_dir), str(base_model_dir), "--out", str(out)]) == 2
    assert "two models are named" in capsys.readouterr().err
    assert main(["compare", str(base_model_dir), str(base_model_dir), "--names", "a,a",
                 "--out", str(out)]) == 2  # fmt: skip


def test_a_demo_directory_is_asked_its_own_worlds_questions(base_model_dir, tmp_path):
    """A demo run on a smaller world: its three models, asked the held-out questions of the
    world the demo exported, not those of the default world of its seed."""
    demo = tmp_path / "demo"
    demo.mkdir()
    for stage in ("pretrain", "sft", "rl"):
        (demo / stage).symlink_to(base_model_dir, target_is_directory=True)
    sizes = ["num_countries=3", "num_unknown=4", "max_operand=2"]
    assert main(["world", "export", str(demo / "world"), *sizes]) == 0
    held = sum(1 for p in (demo / "world" / "eval").glob("*.jsonl") if p.name != "preferences.jsonl"
               for _ in p.open())  # fmt: skip
    out = tmp_path / "c.html"
    assert main(["compare", str(demo), "--max-new-tokens", "2", "--out", str(out)]) == 0
    page = out.read_text()
    assert "<th>pretrained</th><th>sft</th><th>rl</th>" in page
    assert page.count("<tr data-kind=") == held < 238
