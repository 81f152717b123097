"""`dir`: a local folder holding the server tree (docs/formats.md §3, a sunpm **Decision**).

For demos, tests and air-gapped sites (a USB disk, an NFS mount). Quirks and choices:
- Always two-step, whatever `TwoStepsSendingDisabled` says: the bytes go to `<name>.tmp`, which is
  fsynced, renamed over `<name>` (POSIX `rename` replaces atomically), then the folder is fsynced so
  the rename survives a power cut. A reader of the folder never sees a partial final name.
- Nothing is created: a missing tree directory is refused like a server would refuse it.
- Running as root ignores permission bits; a read-only mount (EROFS) is refused all the same.
- Blocking file I/O runs off the event loop (`asyncio.to_thread`).
- Never follows a symbolic link under the root (docs/behaviour.md §4.5, hostile server): each
  folder is opened relative to its parent with `O_NOFOLLOW | O_DIRECTORY`, files with
  `O_NOFOLLOW`, sizes and listings use `lstat`, and a stale `.tmp` is unlinked (never opened) before
  a new one is created with `O_EXCL`. A symlinked folder or file is refused (`ELOOP`), so a planted
  link can neither read, write nor delete outside the tree. `DIR_Path` itself may be a link: the
  operator chose it.
"""

from __future__ import annotations

import asyncio
import builtins
import errno
import io
import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Final, TypeVar

from config.model import ServerSettings

from ._base import (
    DEFAULT_TIMEOUTS,
    DOWNLOAD_MAX_BYTES,
    LISTING_MAX_ENTRIES,
    TMP_SUFFIX,
    Failure,
    RemoteFile,
    Timeouts,
    TransportError,
    capped_listing,
    check_size,
    check_tree_path,
)

T = TypeVar("T")

_REFUSED = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EROFS,
                      errno.EISDIR, errno.ELOOP, errno.ENAMETOOLONG, errno.EINVAL, errno.EEXIST})
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_BLOCK_BYTES: Final = 64 * 1024
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class DirTransport:
    """A folder as a file server: `DIR_Path` is the tree root."""

    def __init__(self, settings: ServerSettings, *, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> None:
        self.server = settings.slot
        self._root = Path(settings.dir_path)
        self._timeouts = timeouts
        # A cancelled or timed-out call leaves its thread running; the next write waits for it
        # here, so two writers never share a `.tmp`.
        self._writing = threading.Lock()

    def _parts(self, op: str, path: str) -> list[str]:
        check_tree_path(self.server, op, path)
        return [p for p in path.split("/") if p]

    @contextmanager
    def _folder(self, parts: list[str]) -> Iterator[int]:
        """A descriptor of the tree folder `parts`, each step opened without following links."""
        fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts:
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except NotADirectoryError:
                    # O_DIRECTORY answers ENOTDIR for a link too: say which it was.
                    if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
                    raise
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

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
        except ValueError as err:  # a name the OS cannot take (check_tree_path refuses most)
            raise TransportError(self.server, op, str(err), failure=Failure.PROTOCOL,
                                 path=path, retriable=False) from err

    async def connect(self) -> None:
        def check() -> None:
            if not self._root.is_absolute():
                raise FileNotFoundError(errno.ENOENT, "DIR_Path is not absolute")
            if not self._root.is_dir():
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        await self._run("connect", "/", check)

    async def list(self, directory: str) -> builtins.list[RemoteFile]:
        parts = self._parts("list", directory)

        def scan() -> builtins.list[RemoteFile]:
            files: builtins.list[RemoteFile] = []
            more = False
            with self._folder(parts) as fd, os.scandir(fd) as entries:
                for seen, entry in enumerate(entries):
                    if seen == LISTING_MAX_ENTRIES:  # folders and links count too
                        more = True
                        break
                    if entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        files.append(RemoteFile(name=entry.name, size=st.st_size,
                                                mtime_s=st.st_mtime))
            return capped_listing(self.server, directory, files, more=more)
        return await self._run("list", directory, scan)

    async def download(self, path: str, *, max_bytes: int = DOWNLOAD_MAX_BYTES) -> bytes:
        out = io.BytesIO()
        await self.download_to(path, out, max_bytes=max_bytes)
        return out.getvalue()

    async def download_to(self, path: str, out: BinaryIO, *,
                          max_bytes: int = DOWNLOAD_MAX_BYTES) -> int:
        *folder, name = self._parts("download", path)

        def read() -> int:
            with self._folder(folder) as dir_fd:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            with os.fdopen(fd, "rb", buffering=0) as f:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise IsADirectoryError(errno.EISDIR, "not a regular file")
                received = 0
                while block := f.read(_BLOCK_BYTES):
                    received += len(block)
                    check_size(self.server, path, received, max_bytes)
                    out.write(block)
                return received
        return await self._run("download", path, read)

    async def size(self, path: str) -> int | None:
        *folder, name = self._parts("size", path)

        def lookup() -> int | None:
            try:
                with self._folder(folder) as dir_fd:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                return None
            except OSError as err:
                if err.errno == errno.ELOOP:
                    return None  # a symlinked folder: refused lookups count as absent
                raise
            # A symlink or a folder is no file of the tree.
            return st.st_size if stat.S_ISREG(st.st_mode) else None
        return await self._run("size", path, lookup)

    async def upload(self, path: str, data: bytes, *, two_step: bool,
                     after_cut: bool = False) -> None:
        del two_step, after_cut  # always two-step, a stale `.tmp` always unlinked (module docstring)
        *folder, name = self._parts("upload", path)

        def write() -> None:
            with self._writing, self._folder(folder) as dir_fd:
                _write_renamed(dir_fd, name, data)
        await self._run("upload", path, write)

    async def delete(self, path: str) -> None:
        *folder, name = self._parts("delete", path)

        def remove() -> None:
            with self._writing, self._folder(folder) as dir_fd:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    raise OSError(errno.ELOOP, "a symbolic link; not followed")
                os.unlink(name, dir_fd=dir_fd)
                os.fsync(dir_fd)
        await self._run("delete", path, remove)

    async def close(self) -> None:
        return None


def _write_renamed(dir_fd: int, name: str, data: bytes) -> None:
    """`<name>.tmp` created afresh (a planted link there is removed, never followed), fsynced,
    renamed over `name` (which replaces a link rather than writing through it), folder fsynced."""
    tmp = name + TMP_SUFFIX
    with suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)


def _map_os_error(server: int, op: str, path: str, err: OSError) -> TransportError:
    detail = err.strerror or str(err)
    if err.errno == errno.ELOOP:
        detail = "a symbolic link; not followed"
    if err.errno in _FULL:
        return TransportError(server, op, detail, failure=Failure.SERVER_FULL, path=path)
    if err.errno in _REFUSED:
        return TransportError(server, op, detail, failure=Failure.REFUSED, path=path)
    # EIO and the like: a flaky disk or mount may come back; let the outbox retry later.
    return TransportError(server, op, detail, failure=Failure.SERVER_BUSY, path=path)
