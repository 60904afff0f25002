"""Atomic writes: a full disk leaves the old version and no partial copy; files get the
permissions a plain open()/mkdir() would give them. Reading a user's files: bytes that are not
UTF-8 are found at their line and offset, a byte-order mark is accepted, binary formats named."""

from __future__ import annotations

import codecs
import errno
import gzip
import os
import re
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlalign.config import load_config
from rlalign.errors import DiskFullError, UserError
from rlalign.io import (
    atomic_directory,
    atomic_write_text,
    read_jsonl,
    read_lines,
    remove_temporaries,
)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain"
        plain.write_text("x")
        (tmp_path / "plain_dir").mkdir()
        atomic_write_text(tmp_path / "file.txt", "x")
        with atomic_directory(tmp_path / "dir") as tmp:
            (tmp / "inside").write_text("x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "file.txt") == _mode(plain) == 0o644  # mkstemp alone gives 0o600
    assert _mode(tmp_path / "dir") == _mode(tmp_path / "plain_dir") == 0o755  # mkdtemp: 0o700


def test_a_full_disk_keeps_the_old_file_and_leaves_no_partial_copy(tmp_path, monkeypatch):
    target = tmp_path / "config.yaml"
    target.write_text("old: 1\n")
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError, match=r"config\.yaml: No space left on device while"):
        atomic_write_text(target, "new: 2\n")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert target.read_text() == "old: 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]

    final = tmp_path / "final"
    final.mkdir()
    (final / "weights").write_text("old")
    with (
        pytest.raises(DiskFullError, match="final: Disk quota exceeded while"),
        atomic_directory(final) as tmp,
    ):
        (tmp / "weights").write_text("ne")
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    assert (final / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "final"]


def test_a_failed_fsync_of_a_directorys_file_never_replaces_the_old_version(tmp_path, monkeypatch):
    """A network file system reports a full quota or an I/O error only at fsync: the tree may
    not be on disk, so it must not replace the good one."""
    final = tmp_path / "step_2"
    final.mkdir()
    (final / "weights").write_text("old")
    real_fsync = os.fsync

    def failing(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError, match="Input/output error"), atomic_directory(final) as tmp:
        (tmp / "weights").write_text("new")
    assert (final / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_2"]


def test_an_interruption_between_the_renames_puts_the_old_directory_back(tmp_path, monkeypatch):
    final = tmp_path / "final"
    final.mkdir()
    (final / "weights").write_text("old")
    real_replace, calls = os.replace, []

    def interrupted(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the new tree into place: Ctrl-C arrives
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt), atomic_directory(final) as tmp:
        (tmp / "weights").write_text("new")
    monkeypatch.setattr(os, "replace", real_replace)
    assert (final / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]

    # killed there instead (no exception handler runs): the next start renames it back
    final.rename(tmp_path / ".final.old")
    remove_temporaries(tmp_path, "final")
    assert (final / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    # a leftover .old beside a complete final is only removed
    (tmp_path / ".final.old").mkdir()
    remove_temporaries(tmp_path, "final")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


# --- reading a user's text files -----------------------------------------------------------

LINE_ENDS = ["\n", "\r\n", "\r"]
# text without characters that end a line (str.splitlines would split on them)
PLAIN = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x85"),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(st.tuples(PLAIN, st.sampled_from(LINE_ENDS)), min_size=1, max_size=6),
    where=st.data(),
    bad=st.sampled_from([0xFF, 0xC0, 0x80, 0xE9]),
    bom=st.booleans(),
)
def test_a_byte_that_is_not_utf8_is_found_at_its_line_and_offset(
    tmp_path_factory, lines, where, bad, bom
):
    """Reference: the byte's index in the file, and the line breaks of the text before it."""
    row = where.draw(st.integers(0, len(lines) - 1))
    text, end = lines[row]
    col = where.draw(st.integers(0, len(text)))
    before = "".join(t + e for t, e in lines[:row]) + text[:col]
    head = (codecs.BOM_UTF8 if bom else b"") + before.encode("utf-8")
    data = head + bytes([bad]) + (text[col:] + end).encode("utf-8")
    path = tmp_path_factory.mktemp("utf8") / "data.jsonl"
    path.write_bytes(data)
    line = before.count("\n") + before.count("\r") - before.count("\r\n") + 1
    with pytest.raises(UserError) as info:
        list(read_lines(path))
    assert str(info.value).startswith(
        f"{path}:{line}: not UTF-8 text: byte 0x{bad:02x} at byte offset {len(head)} "
    )


def test_lines_are_split_as_python_text_files_split_them(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes(codecs.BOM_UTF8 + "a\r\nb\rc\n\u2028d\ncafé".encode())
    want = [line for line in path.open(encoding="utf-8-sig", newline="")]
    assert (
        [line for _, line in read_lines(path)]
        == want
        == ["a\r\n", "b\r", "c\n", "\u2028d\n", "café"]
    )


def test_a_byte_order_mark_is_accepted_by_every_reader(tmp_path):
    from rlalign.data.formats import load_preferences, load_prompts, load_sft
    from rlalign.train.config import TrainingConfig
    from rlalign.train.data import read_corpus

    def with_bom(name: str, text: str):
        path = tmp_path / name
        path.write_bytes(codecs.BOM_UTF8 + text.encode("utf-8"))
        return path

    assert read_corpus(with_bom("c.jsonl", '{"text": "café"}\n')) == ["café"]
    assert read_corpus(with_bom("c.txt", "one\ntwo\n")) == ["one", "two"]
    assert load_sft(with_bom("s.jsonl", '{"prompt": "p", "completion": "c"}\n'))[0][1] == {
        "role": "assistant",
        "content": "c",
    }
    assert load_preferences(with_bom("p.jsonl", '{"prompt": "p", "chosen": "a", "rejected": "b"}'))
    assert load_prompts(with_bom("r.jsonl", '{"prompt": "p"}'))[0]["prompt"] == "p"
    cfg = load_config(TrainingConfig, with_bom("c.yaml", "data: x.jsonl\nseed: 3\n"))
    assert (cfg.data, cfg.seed) == ("x.jsonl", 3)


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"PAR1\x15\x04", "a Parquet file, not text; give it the .parquet suffix"),
        (gzip.compress(b'{"text": "a"}\n'), "a gzip-compressed file, not text; decompress it"),
        ("{}".encode("utf-16"), "UTF-16 text, not text; save it as UTF-8"),
    ],
    ids=["parquet", "gzip", "utf16"],
)
def test_a_binary_file_is_named_for_what_it_is(tmp_path, head, kind):
    path = tmp_path / "data.jsonl"
    path.write_bytes(head)
    with pytest.raises(UserError, match=f"^{re.escape(f'{path}: this is {kind}')}"):
        read_jsonl(path)
