"""The single-writer lock of a store directory: a `lock` file flock'ed for as long as the writer
runs, holding its pid so that a refused second writer can name the holder. Used by `Log` and by
`TraceStore` (each has its own lock file)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from store.errors import StoreLockedError


def take_lock(lock_path: Path, store_path: Path) -> int:
    """Lock `lock_path` for this process; returns the descriptor to close on release.

    Raises `StoreLockedError` naming `store_path` and the holder's pid when another writer has it.
    """
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreLockedError(store_path, f"pid {holder}") from None
    os.ftruncate(fd, 0)
    # A full disk: the lock holds without its pid (a refused writer says "unknown").
    with contextlib.suppress(OSError):
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
