"""`dir`: a local folder holding the server tree (spec/formats.md §3, a sunpm **Decision**).

For demos, tests and air-gapped sites (a USB disk, an NFS mount). Quirks and choices:
- Always two-step, whatever `TwoStepsSendingDisabled` says: the bytes go to `<name>.tmp`, which is
  fsynced, renamed over `<name>` (POSIX `rename` replaces atomically), then the folder is fsynced so
  the rename survives a power cut. A reader of the folder never sees a partial final name.
- Nothing is created: a missing tree directory is refused like a server would refuse it.
- Running as root ignores permission bits; a read-only mount (EROFS) is refused all the same.
- Blocking file I/O runs off the event loop (`asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
import builtins
import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from config.model import ServerSettings
from store.fsio import fsync_dir, write_file_durably

from ._base import (
    DEFAULT_TIMEOUTS,
    TMP_SUFFIX,
    Failure,
    RemoteFile,
    Timeouts,
    TransportError,
    check_tree_path,
)

T = TypeVar("T")

_REFUSED = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EROFS,
                      errno.EISDIR})
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class DirTransport:
    """A folder as a file server: `DIR_Path` is the tree root."""

    def __init__(self, settings: ServerSettings, *, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> None:
        self.server = settings.slot
        self._root = Path(settings.dir_path)
        self._timeouts = timeouts
        # A cancelled or timed-out call leaves its thread running; the next write waits for it
        # here, so two writers never share a `.tmp`.
        self._writing = threading.Lock()

    def _local(self, op: str, path: str) -> Path:
        check_tree_path(self.server, op, path)
        return self._root / path.lstrip("/")

    async def _run(self, op: str, path: str, fn: Callable[[], T]) -> T:
        try:
            # A hung mount (NFS, a dying USB disk) must not hang the session forever.
            async with asyncio.timeout(self._timeouts.operation_s):
                return await asyncio.to_thread(fn)
        except TimeoutError as err:
            raise TransportError(self.server, op, f"no answer from the folder after "
                                 f"{self._timeouts.operation_s:g} s", failure=Failure.TIMEOUT,
                                 path=path) from err
        except OSError as err:
            raise _map_os_error(self.server, op, path, err) from err

    async def connect(self) -> None:
        def check() -> None:
            if not self._root.is_absolute():
                raise FileNotFoundError(errno.ENOENT, "DIR_Path is not absolute")
            if not self._root.is_dir():
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        await self._run("connect", "/", check)

    async def list(self, directory: str) -> builtins.list[RemoteFile]:
        folder = self._local("list", directory)

        def scan() -> builtins.list[RemoteFile]:
            files = []
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        files.append(RemoteFile(name=entry.name, size=st.st_size,
                                                mtime_s=st.st_mtime))
            return sorted(files, key=lambda f: f.name)
        return await self._run("list", directory, scan)

    async def download(self, path: str) -> bytes:
        return await self._run("download", path, self._local("download", path).read_bytes)

    async def size(self, path: str) -> int | None:
        local = self._local("size", path)

        def stat() -> int | None:
            try:
                st = local.stat()
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                return None
            return st.st_size
        return await self._run("size", path, stat)

    async def upload(self, path: str, data: bytes, *, two_step: bool) -> None:
        del two_step  # always two-step (module docstring)
        final = self._local("upload", path)
        def write() -> None:
            with self._writing:
                _write_renamed(final, data)
        await self._run("upload", path, write)

    async def delete(self, path: str) -> None:
        local = self._local("delete", path)

        def remove() -> None:
            with self._writing:
                local.unlink()
                fsync_dir(local.parent)
        await self._run("delete", path, remove)

    async def close(self) -> None:
        return None


def _write_renamed(final: Path, data: bytes) -> None:
    write_file_durably(final, data, tmp=final.with_name(final.name + TMP_SUFFIX))


def _map_os_error(server: int, op: str, path: str, err: OSError) -> TransportError:
    detail = err.strerror or str(err)
    if err.errno in _FULL:
        return TransportError(server, op, detail, failure=Failure.SERVER_FULL, path=path)
    if err.errno in _REFUSED:
        return TransportError(server, op, detail, failure=Failure.REFUSED, path=path)
    # EIO and the like: a flaky disk or mount may come back; let the outbox retry later.
    return TransportError(server, op, detail, failure=Failure.SERVER_BUSY, path=path)
