"""Durable file writes: the one implementation of "fsync the file, rename, fsync the folder".

A rename is only durable once the directory holding the entry is fsynced, and a file's bytes only
once the file is; without both, a power cut can leave an empty or missing file behind a rename
that already looked done. Blocking: call through `asyncio.to_thread` from the loop.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "write_file_durably", "write_synced"]


def fsync_dir(path: Path) -> None:
    """Make the entries of directory `path` (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, data: bytes) -> None:
    """Create or truncate `path`, write all of `data` and fsync it (the entry itself is not)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(path: Path, data: bytes, *, tmp: Path | None = None) -> None:
    """Replace `path` with `data` all or nothing: written under `tmp` (default `<name>.tmp`
    beside it), fsynced, renamed over `path`, then the folder fsynced."""
    staging = tmp if tmp is not None else path.with_name(path.name + ".tmp")
    write_synced(staging, data)
    os.replace(staging, path)
    fsync_dir(path.parent)
