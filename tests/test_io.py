"""Atomic writes: a full disk leaves the old version and no partial copy; files get the
permissions a plain open()/mkdir() would give them."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from rlalign.errors import DiskFullError
from rlalign.io import atomic_directory, atomic_write_text


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
