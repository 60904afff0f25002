"""The rows of a dataset, from the formats people have, each with where it came from.

A source is a path or rows already in memory:

- ``.jsonl``: JSON Lines, read line by line (:func:`rlalign.io.read_jsonl`), so an error names
  the file and line (``data.jsonl:12``), and text that is not UTF-8 or JSON is caught there;
- ``.json`` (an array of objects, or JSON Lines), ``.parquet``, ``.csv``, ``.tsv``, and a
  directory written by ``datasets``' ``Dataset.save_to_disk``: read with the ``datasets``
  library (the reader TRL users already feed their trainers with); row ``i`` is
  ``dataset[i]``, and an error names it (``data.parquet: row 12``). A CSV row is also given
  by its line, counting the header as line 1 (``data.csv: row 12 (line 14)``);
- a ``datasets.Dataset`` or a list of dicts, from Python.

A table has a value in every column of every row, so a value that is missing there (``None``:
an empty CSV cell, a Parquet null) counts as a field the row does not have: the format
validators then say "missing field", as they do for a JSONL line without it. A null in JSON
Lines or in rows from Python counts the same way (``Dataset.to_json`` writes a column a row
lacks as null), so the same rows read the same from every format.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rlalign.errors import UserError
from rlalign.io import read_jsonl

# suffix -> the name of its ``datasets`` reader; .jsonl is read by rlalign.io (file:line errors)
TABLE_READERS = {".json": "json", ".parquet": "parquet", ".csv": "csv", ".tsv": "csv"}
FORMATS = ".jsonl, .json, .parquet, .csv, .tsv or a directory saved with Dataset.save_to_disk"

Row = tuple[str, dict[str, Any]]


def read_rows(source: Any, *, what: str = "data") -> list[Row]:
    """``[(where, row), ...]`` of ``source`` (module docstring): ``where`` names the file and
    line or row for error messages. Raises :class:`UserError` for a missing or empty source,
    an unknown format, a file its reader cannot parse, or a row that is not an object."""
    if _is_dataset(source):
        return _in_memory(source.to_list(), f"the {what} Dataset", what)
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        return _in_memory(list(source), f"the {what} rows", what)
    path = Path(source)
    if not path.exists():
        raise UserError(f"{path}: {what} file not found")
    if path.is_dir():
        return _table_rows(path, _load_from_disk(path, what), what)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return [(f"{path}:{lineno}", _present(row)) for lineno, row in read_jsonl(path, what=what)]
    if suffix not in TABLE_READERS:
        raise UserError(f"{path}: not a {what} format rlalign reads; give {FORMATS}")
    return _table_rows(path, _load_file(path, suffix, what), what)


def _is_dataset(source: Any) -> bool:
    # without importing datasets (seconds) when the source is a plain path
    return type(source).__name__ == "Dataset" and hasattr(source, "to_list")


def _in_memory(rows: list[Any], name: str, what: str) -> list[Row]:
    if not rows:
        raise UserError(f"{name} are empty" if name.endswith("rows") else f"{name} is empty")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UserError(f"{name}, row {i}: expected a dict, got {type(row).__name__}")
        out.append((f"{name}, row {i}", _present(row)))
    return out


def _present(row: Any) -> Any:
    """A row without its null fields: ``Dataset.to_json`` and ``to_list`` write a column a
    row lacks as null, so null counts as missing in every format, as in a table."""
    return {k: v for k, v in row.items() if v is not None} if isinstance(row, dict) else row


def _table_rows(path: Path, rows: list[dict[str, Any]], what: str) -> list[Row]:
    if not rows:
        raise UserError(f"{path}: {what} file is empty")
    lines = _csv_row_lines(path, len(rows)) if path.suffix.lower() in (".csv", ".tsv") else None
    return [
        (
            f"{path}: row {i}" + (f" (line {lines[i]})" if lines else ""),
            _present(row),
        )
        for i, row in enumerate(rows)
    ]


def _csv_row_lines(path: Path, count: int) -> list[int] | None:
    """The line each data row of a CSV/TSV file starts on (the header is line 1), found with
    Python's csv module: a quoted cell may hold line breaks and blank lines are skipped, so
    row ``i`` is not line ``i + 2`` in general. None when its count of rows is not
    ``count`` (a dialect the two readers see differently): then rows are named by number."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    seen: list[str] = []

    def numbered() -> Iterator[str]:
        with path.open(encoding="utf-8-sig", newline="") as f:
            for line in f:
                seen.append(line)
                yield line

    try:
        reader = csv.reader(numbered(), delimiter=delimiter)
        next(reader, None)  # the header
        starts = []
        while True:
            before = len(seen)
            row = next(reader, None)
            if row is None:
                break
            if not any(cell.strip() for cell in row):  # a blank line: pandas skips it
                continue
            blank = next(k for k in range(before, len(seen)) if seen[k].strip())
            starts.append(blank + 1)
    except (csv.Error, UnicodeDecodeError, StopIteration):
        return None
    return starts if len(starts) == count else None


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[Any]:
    """``datasets``, with its progress bars off and its cache in a directory removed after
    (the rows are read into memory: nothing is left in ~/.cache)."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - a dependency of rlalign
        raise UserError(f"reading {FORMATS} needs the datasets package") from None
    bars_were_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    log = logging.getLogger("datasets")  # its readers log the error they then raise
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield datasets
    finally:
        log.setLevel(level)
        if not bars_were_off:
            datasets.enable_progress_bars()


def _load_file(path: Path, suffix: str, what: str) -> list[dict[str, Any]]:
    reader = TABLE_READERS[suffix]
    options: dict[str, Any] = {"delimiter": "\t"} if suffix == ".tsv" else {}
    if reader == "csv":  # only an empty cell is missing: "NA", "None" or "N/A" are text
        options |= {"keep_default_na": False, "na_values": [""]}
    with _quiet_datasets() as datasets, tempfile.TemporaryDirectory() as cache:
        try:
            loaded = datasets.load_dataset(
                reader,
                data_files=str(path),
                split="train",
                cache_dir=cache,
                keep_in_memory=True,
                **options,
            )
            return loaded.to_list()
        except Exception as exc:  # the reader's own words, on one line, with the file
            if "corresponds to no data" in str(exc):  # how `datasets` says a file has no rows
                return []
            raise UserError(f"{path}: cannot read this {what} file as {reader}: "
                            f"{_one_line(exc)}") from None  # fmt: skip


def _load_from_disk(path: Path, what: str) -> list[dict[str, Any]]:
    if not (path / "dataset_info.json").is_file() and not (path / "dataset_dict.json").is_file():
        raise UserError(
            f"{path}: is a directory, expected a {what} file or a dataset saved with "
            f"save_to_disk (give {FORMATS})"
        )
    with _quiet_datasets() as datasets:
        try:
            loaded = datasets.load_from_disk(str(path), keep_in_memory=True)
        except Exception as exc:
            raise UserError(
                f"{path}: cannot load this dataset directory: {_one_line(exc)}"
            ) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = ", ".join(loaded)
        raise UserError(
            f"{path}: holds several splits ({splits}); give one of them, e.g. "
            f"{path / next(iter(loaded))}"
        )
    return loaded.to_list()


def _one_line(exc: BaseException) -> str:
    """The error's words on one line, with the cause a wrapper hides: ``datasets`` says only
    "An error occurred while generating the dataset" and keeps the parser's message (a
    trailing comma at line 3, column 5) in ``__cause__``."""
    parts = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = " ".join(str(exc).split()) or type(exc).__name__
        if text not in parts:
            parts.append(text)
        exc = exc.__cause__ or exc.__context__
    text = ": ".join(parts)
    return text if len(text) <= 300 else text[:297] + "..."
