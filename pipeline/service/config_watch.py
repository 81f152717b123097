"""The configuration watch's view of the folder: a digest of the files a file server mirrors
(CONFIG's four, DEF, SCRIPT), read only where a file changed.

The watch looks every 5 s; a box with hundreds of definition files on flash must not read them
all each time. A file is known by its stat identity (device, inode, size, mtime_ns, ctime_ns):
while the identity stays, its last content digest is used unread. An edit that keeps the size
and the mtime (a tool restoring it, or two writes in one timestamp tick) still moves the ctime,
which nothing but the kernel sets.

A timestamp is only as fine as the file system's clock tick (2 s for a FAT card's mtime), so a
write just after the file was read could leave its identity as it was. A file whose mtime or
ctime is less than `RACY_NS` before the look (or after it: a clock set back) is therefore read
again at every look until it is older (docs/spec-notes.md, service).

The same recent timestamps say a file may still be being written in place (an SFTP client's
upload, an editor that truncates then writes): `settled` is False until every file is older, so
that the watch never applies a half-written daq.csv that happens to be valid.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from exporters.session.config_sync import local_config_paths

#: How recent a timestamp is too recent to prove a file unchanged: over FAT's 2 s mtime tick.
RACY_NS: Final = 3_000_000_000

Identity = tuple[int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class _Known:
    identity: Identity
    sha256: bytes
    settled: bool       # timestamps old enough for the identity to prove the content


class FolderDigest:
    """The digest of a configuration folder's mirrored files, each read only when its stat
    identity changed (or is too recent to trust). Not thread-safe: one caller at a time (the
    gateway calls it under its folder lock)."""

    def __init__(self, *, read: Callable[[Path], bytes] = Path.read_bytes,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:
        self._read = read
        self._wall_ns = wall_ns
        self._known: dict[Path, _Known] = {}
        self._newest_ns = 0

    def of(self, config_dir: Path, uid: str) -> str:
        """The folder's digest: equal for equal file names and contents. OSError when a file
        cannot be read."""
        settled_before = self._wall_ns() - RACY_NS
        known: dict[Path, _Known] = {}
        digest = hashlib.sha256()
        newest = 0
        for rel, path in sorted(local_config_paths(config_dir, uid).items()):
            st = os.stat(path)
            identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
            entry = self._known.get(path)
            if entry is None or not entry.settled or entry.identity != identity:
                # Stat taken before the read: a write in between shows as a new identity at
                # the next look, never as an old identity with new bytes taken for the old.
                data = self._read(path)
                entry = _Known(identity, hashlib.sha256(data).digest(),
                               max(st.st_mtime_ns, st.st_ctime_ns) < settled_before)
            known[path] = entry
            digest.update(rel.encode() + b"\0" + entry.sha256)
        self._known = known     # files gone are forgotten
        self._newest_ns = newest
        return digest.hexdigest()

    def settled(self) -> bool:
        """Whether no file of the last look was written within `RACY_NS` of now: one may still
        be being written. A timestamp further in the future (a clock set back) is no sign of a
        write going on, else such a folder would never settle."""
        now = self._wall_ns()
        return not now - RACY_NS < self._newest_ns <= now + RACY_NS
