"""fsio: the durable write helpers the store, exporters and drivers share."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsio import fsync_dir, write_file_durably, write_synced


def test_write_file_durably_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.csv"
    target.write_bytes(b"old content, longer than the new one")
    write_file_durably(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]


def test_write_file_durably_uses_the_given_temporary_name(tmp_path: Path) -> None:
    target = tmp_path / "b.csv"
    staging = tmp_path / ".b.csv.part"
    staging.write_bytes(b"stale leftover of a crash")
    write_file_durably(target, b"x" * 300_000, tmp=staging)
    assert target.read_bytes() == b"x" * 300_000
    assert not staging.exists()


def test_write_synced_truncates(tmp_path: Path) -> None:
    path = tmp_path / "c.new"
    write_synced(path, b"0123456789")
    write_synced(path, b"ab")
    assert path.read_bytes() == b"ab"


def test_fsync_dir_refuses_a_file(tmp_path: Path) -> None:
    fsync_dir(tmp_path)
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fsync_dir(tmp_path / "f")
