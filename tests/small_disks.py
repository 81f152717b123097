"""Disks that fill up for real: a small tmpfs of its own, mounted for one test (needs root, as
on the CI machines), and a file written until the disk has no room left."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """`mount`, a tmpfs of `size` (`2m`) while the block runs; skipped where mounting is
    refused, failed under CI, where it must work."""
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs here: {done.stderr.decode().strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write `path` until the disk holding it is full.

    Unbuffered: a buffered file keeps the bytes of the write that failed and fails again at its
    close, which a service writing the same disk meanwhile makes happen at random."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        block = b"\0" * 65536
        while True:
            os.write(fd, block)
    except OSError as err:
        assert err.errno == errno.ENOSPC
    finally:
        os.close(fd)


@contextlib.contextmanager
def kept_full(path: Path) -> Iterator[None]:
    """The disk holding `path` filled (`fill`) and kept full while the block runs: a writer that
    fails cuts its file back, and the room it frees is taken again within some 10 ms, before
    its next try."""
    fill(path)
    done = threading.Event()

    def hog() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            while not done.is_set():
                try:
                    os.write(fd, b"\0" * 4096)
                except OSError as err:
                    assert err.errno == errno.ENOSPC
                    time.sleep(0.01)
        finally:
            os.close(fd)

    thread = threading.Thread(target=hog, name="disk-hog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(10)
        path.unlink()
