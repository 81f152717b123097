"""The check of an uploaded update package before `updateFirmware` `{package}` installs it: a
plain `.spm` name inside `<data>/update/`, a regular file, its MD5 read again."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline.service.maintenance import UPDATE_FOLDER, MaintenanceError, staged_upload


def test_a_staged_package_is_checked_again(tmp_path: Path) -> None:
    folder = tmp_path / UPDATE_FOLDER
    folder.mkdir()
    package = folder / "wgapp_2.0.spm"
    package.write_bytes(b"package bytes")
    md5 = hashlib.md5(b"package bytes", usedforsecurity=False).hexdigest()
    assert staged_upload(tmp_path, "wgapp_2.0.spm", md5.upper()) == package
    (folder / "outside.spm").symlink_to(tmp_path / "elsewhere.spm")
    (tmp_path / "elsewhere.spm").write_bytes(b"package bytes")
    refusals = {
        ("../wgapp_2.0.spm", md5): "package must be a plain file name ending .spm, got "
                                   "'../wgapp_2.0.spm'",
        ("wgapp_2.0.spm", "abc"): "checksum must be 32 hex digits (MD5), got 'abc'",
        ("wgapp_3.0.spm", md5): "wgapp_3.0.spm is not staged",
        ("outside.spm", md5): "outside.spm is not staged",
        ("wgapp_2.0.spm", "0" * 32): f"checksum mismatch (expected {'0' * 32}, got {md5})",
    }
    for (name, checksum), message in refusals.items():
        with pytest.raises(MaintenanceError) as caught:
            staged_upload(tmp_path, name, checksum)
        assert str(caught.value) == message
