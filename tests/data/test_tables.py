"""Rows from every format (JSONL, JSON, Parquet, CSV, save_to_disk, in memory), each with where
it came from; the same rows whatever the format; clear errors for what cannot be read."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from rlalign.data.formats import load_preferences, load_prompts, load_sft
from rlalign.data.tables import read_rows
from rlalign.errors import UserError

PAIRS = [
    {"prompt": "What is 2 + 3?", "completion": "5"},
    {"prompt": 'Say "hi", then a comma, please', "completion": "hi,\nthere"},
    {"prompt": "Ünïcode?", "completion": "Ja."},
]


@pytest.fixture(autouse=True)
def _no_bars():
    datasets.disable_progress_bars()


def write_all(rows: list[dict], tmp: Path, formats=("jsonl", "json", "parquet", "csv", "disk")):
    """The same rows in each format, written by ``datasets`` (CSV/JSON/Parquet) and by hand
    (JSONL); returns {format: path}."""
    ds = datasets.Dataset.from_list(rows)
    paths = {}
    for fmt in formats:
        path = tmp / ("dataset" if fmt == "disk" else f"data.{fmt}")
        if fmt == "jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        elif fmt == "json":  # a JSON array, as json.dump writes it
            path.write_text(json.dumps(rows), encoding="utf-8")
        elif fmt == "parquet":
            ds.to_parquet(str(path))
        elif fmt == "csv":
            ds.to_csv(str(path), index=False)
        else:
            ds.save_to_disk(str(path))
        paths[fmt] = path
    return paths


def test_every_format_gives_the_same_rows(tmp_path):
    paths = write_all(PAIRS, tmp_path)
    for fmt, path in paths.items():
        rows = read_rows(path)
        assert [row for _, row in rows] == PAIRS, fmt
    assert [row for _, row in read_rows(datasets.Dataset.from_list(PAIRS))] == PAIRS
    assert [row for _, row in read_rows(PAIRS)] == PAIRS


def test_where_names_the_line_or_the_row(tmp_path):
    paths = write_all(PAIRS, tmp_path)
    assert [w for w, _ in read_rows(paths["jsonl"])][1] == f"{paths['jsonl']}:2"
    assert [w for w, _ in read_rows(paths["parquet"])][1] == f"{paths['parquet']}: row 1"
    # the header is line 1; the second row's quoted comma and newline do not shift the first
    assert [w for w, _ in read_rows(paths["csv"])][:2] == [
        f"{paths['csv']}: row 0 (line 2)",
        f"{paths['csv']}: row 1 (line 3)",
    ]
    # every row's line, against a count of the file's own lines: a quoted line break moves
    # the rows after it, and a blank line is skipped
    csv = tmp_path / "lines.csv"
    csv.write_text('prompt,completion\n"two\nlines",a\nb,c\n\nd,e\n')
    assert [w for w, _ in read_rows(csv)] == [
        f"{csv}: row 0 (line 2)",
        f"{csv}: row 1 (line 4)",
        f"{csv}: row 2 (line 6)",
    ]
    assert read_rows(PAIRS, what="SFT data")[2][0] == "the SFT data rows, row 2"


def test_conversations_survive_the_nested_formats(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "2+2?"},
                      {"role": "assistant", "content": "4"}]},
    ]  # fmt: skip
    paths = write_all(rows, tmp_path, formats=("jsonl", "json", "parquet", "disk"))
    want = load_sft(paths["jsonl"])
    for fmt in ("json", "parquet", "disk"):
        assert load_sft(paths[fmt]) == want, fmt
    assert load_sft(rows) == want


def test_text_that_reads_like_a_missing_value_is_kept_as_text(tmp_path):
    """pandas takes "NA", "None" or "N/A" for missing values; in a prompt or an answer they
    are text. Only an empty cell is missing."""
    csv = tmp_path / "answers.csv"
    csv.write_text("prompt,completion\nIs it known?,N/A\nWho?,None\nCode?,NA\nEmpty?,\n")
    rows = [row for _, row in read_rows(csv)]
    assert [row.get("completion") for row in rows] == ["N/A", "None", "NA", None]


def test_null_is_a_missing_field_in_every_format(tmp_path):
    """Dataset.to_json writes the column a row lacks as null: read back, the row lacks it, as
    the same rows from Parquet and from Python do."""
    rows = [{"prompt": "a", "completion": "b", "margin": 1.0}, {"prompt": "c", "completion": "d"}]
    ds = datasets.Dataset.from_list(rows)
    ds.to_json(tmp_path / "rows.jsonl")
    ds.to_parquet(tmp_path / "rows.parquet")
    assert '"margin":null' in (tmp_path / "rows.jsonl").read_text()
    for source in (tmp_path / "rows.jsonl", tmp_path / "rows.parquet", ds, ds.to_list()):
        assert [row for _, row in read_rows(source)] == rows, source


def test_a_missing_table_value_is_a_missing_field(tmp_path):
    """An empty CSV cell / a Parquet null is a field the row does not have: optional fields take
    their default, required ones say "missing field" with the row."""
    prefs = tmp_path / "prefs.csv"
    prefs.write_text("prompt,chosen,rejected,margin\np,c,r,\np2,c2,r2,1.5\n", encoding="utf-8")
    pairs = load_preferences(prefs)
    assert [p["margin"] for p in pairs] == [0.0, 1.5]
    datasets.Dataset.from_dict({"prompt": ["a", None]}).to_parquet(str(tmp_path / "p.parquet"))
    with pytest.raises(UserError, match=r"p\.parquet: row 1: missing field 'prompt'"):
        load_prompts(tmp_path / "p.parquet")


def test_rl_prompts_keep_their_fields_and_where(tmp_path):
    rows = [{"prompt": "2+3?", "answer": 5, "kind": "arithmetic"}]
    path = write_all(rows, tmp_path, formats=("parquet",))["parquet"]
    (loaded,) = load_prompts(path)
    assert loaded == {**rows[0], "_where": f"{path}: row 0"}


@pytest.mark.parametrize(
    ("name", "make", "fragment"),
    [
        ("none.parquet", None, r"none\.parquet: data file not found"),
        ("plain_dir", lambda p: p.mkdir(), r"plain_dir: is a directory, expected a data file or a "
         r"dataset saved with save_to_disk \(give \.jsonl, \.json, \.parquet"),
        ("data.xlsx", lambda p: p.write_bytes(b"x"), r"data\.xlsx: not a data format rlalign "
         r"reads; give \.jsonl"),
        ("broken.parquet", lambda p: p.write_bytes(b"PAR1 not really"),
         r"broken\.parquet: cannot read this data file as parquet: "),
        ("broken.json", lambda p: p.write_text("[{\"a\": 1},"), r"broken\.json: cannot read "
         r"this data file as json"),
        # the parser's own words, which datasets keeps behind "An error occurred while ..."
        ("comma.json", lambda p: p.write_text('[{"prompt": "a", "completion": "b"},]'),
         r"comma\.json: cannot read this data file as json: .*: Unexpected character .* at "
         r"position"),
        ("empty.csv", lambda p: p.write_text("prompt,completion\n"), r"empty\.csv: data file is "
         r"empty"),
        ("splits", lambda p: datasets.DatasetDict(
            {"train": datasets.Dataset.from_list(PAIRS), "test": datasets.Dataset.from_list(PAIRS)}
        ).save_to_disk(str(p)), r"splits: holds several splits \(train, test\); give one of "
         r"them, e\.g\. .*splits/train"),
    ],
)  # fmt: skip
def test_what_cannot_be_read_is_one_clear_line(tmp_path, name, make, fragment):
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(UserError, match=fragment) as err:
        read_rows(path)
    assert "\n" not in str(err.value)


def test_in_memory_mistakes():
    with pytest.raises(UserError, match="the data rows are empty"):
        read_rows([])
    with pytest.raises(UserError, match="the data rows, row 1: expected a dict, got str"):
        read_rows([{"a": 1}, "b"])
    with pytest.raises(UserError, match="the data Dataset is empty"):
        read_rows(datasets.Dataset.from_dict({"a": []}))


def test_reading_leaves_no_cache_behind(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    paths = write_all(PAIRS, tmp_path / "data" if (tmp_path / "data").mkdir() is None else None)
    for path in paths.values():
        read_rows(path)
    assert not cache.exists() or not any(cache.rglob("*"))
