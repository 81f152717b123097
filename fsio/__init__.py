"""Durable file writes, for every room: the store, the exporters' outbox and sessions, the
drivers' SunSpec model cache, the offline card writers. A leaf: imports nothing of ours, so any
room may import it (docs/architecture.md §2).

A rename is only durable once the directory holding the entry is fsynced, and a file's bytes only
once the file is; without both, a power cut can leave an empty or missing file behind a rename
that already looked done. Blocking: call through `asyncio.to_thread` from the loop.

It is also the one place where the store changes files on disk: every write, truncate, create,
rename, unlink, mkdir and fsync the store does goes through the
`FileOps` installed here (`install`): the real system calls by default, a recorder in the
power-loss tests (tests/test_store/powerloss.py), which rebuilds the states a power cut may leave from
the recorded operations. Code that changes store files with `os.*` directly escapes those tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "FileOps",
    "close",
    "fsync",
    "fsync_dir",
    "ftruncate",
    "install",
    "mkdir",
    "open_append",
    "open_new",
    "pwrite_all",
    "rename",
    "truncate",
    "unlink",
    "write_file_durably",
    "write_synced",
]


class FileOps:
    """The file operations the store performs, as system calls. Subclassed to observe them."""

    def open_new(self, path: Path, *, exclusive: bool) -> int:
        """Create `path` for writing (`exclusive`: it must not exist; else it is truncated)."""
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
        return os.open(path, flags, 0o644)

    def open_append(self, path: Path) -> int:
        """Open an existing file for writing at chosen offsets."""
        return os.open(path, os.O_WRONLY)

    def pwrite(self, fd: int, data: memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def truncate(self, path: Path, length: int) -> None:
        os.truncate(path, length)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def rename(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_ops = FileOps()


@contextmanager
def install(ops: FileOps) -> Iterator[FileOps]:
    """Route the store's file operations through `ops` while the block runs (tests)."""
    global _ops
    saved = _ops
    _ops = ops
    try:
        yield ops
    finally:
        _ops = saved


def open_new(path: Path, *, exclusive: bool = False) -> int:
    return _ops.open_new(path, exclusive=exclusive)


def open_append(path: Path) -> int:
    return _ops.open_append(path)


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    done = 0
    while done < len(view):
        done += _ops.pwrite(fd, view[done:], offset + done)


def ftruncate(fd: int, length: int) -> None:
    _ops.ftruncate(fd, length)


def truncate(path: Path, length: int) -> None:
    _ops.truncate(path, length)


def fsync(fd: int) -> None:
    _ops.fsync(fd)


def close(fd: int) -> None:
    _ops.close(fd)


def rename(src: Path, dst: Path) -> None:
    """Rename `src` over `dst` (replacing it); durable once the directory is fsynced."""
    _ops.rename(src, dst)


def unlink(path: Path) -> None:
    _ops.unlink(path)


def mkdir(path: Path, *, parents: bool = False) -> None:
    """Create a directory (and missing parents); an existing one is fine."""
    if path.is_dir():
        return
    if parents and not path.parent.is_dir():
        mkdir(path.parent, parents=True)
    try:
        _ops.mkdir(path)
    except FileExistsError:
        if not path.is_dir():
            raise


def fsync_dir(path: Path) -> None:
    """Make the entries of directory `path` (creations, renames, deletions) durable."""
    _ops.fsync_dir(path)


def write_synced(path: Path, data: bytes) -> None:
    """Create or truncate `path`, write all of `data` and fsync it (the entry itself is not)."""
    fd = open_new(path)
    try:
        pwrite_all(fd, data, 0)
        fsync(fd)
    finally:
        close(fd)


def write_file_durably(path: Path, data: bytes, *, tmp: Path | None = None) -> None:
    """Replace `path` with `data` all or nothing: written under `tmp` (default `<name>.tmp`
    beside it), fsynced, renamed over `path`, then the folder fsynced."""
    staging = tmp if tmp is not None else path.with_name(path.name + ".tmp")
    write_synced(staging, data)
    rename(staging, path)
    fsync_dir(path.parent)
