"""Update packages offered in server 1's `/BIN` (docs/behaviour.md §4.2 step 6, **Decision**).

After each successful session of server 1 (a file server) the service lists `/BIN` over a
connection of its own. A `wgapp_<version>.spm` whose version (dotted numbers) is newer than the
running one and whose content (SHA-256) was never tried is downloaded (256 MiB at most) to
`<data>/update/` (streamed to disk, never held in memory), checked against `<name>.md5` beside it
when there is one, and handed to `SYSTEM_UpdateCommand` as `updateFirmware` does; without that
key it is only logged. Tried packages are kept in `<data>/update/tried.json` by hash and by
listing entry (name, size, time), so a package that failed is not fetched again and again: one
larger than the cap is tried once, one whose download fails (cut, disk full) `MAX_ATTEMPTS` times
(counted in `<data>/update/attempts.json`) until the listing shows it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
from importlib import metadata
from pathlib import Path
from typing import BinaryIO, Final, cast

from config.decimal_text import read_integer
from config.model import ServerSettings
from exporters.transports import (
    DownloadTooLarge,
    Failure,
    FileTransport,
    RemoteFile,
    TransportError,
    open_transport,
)
from fsio import fsync_dir, rename, write_file_durably
from pipeline.service.maintenance import DOWNLOAD_LIMIT_S, PACKAGE_CAP_BYTES, UPDATE_FOLDER

log = logging.getLogger("sunpm.system")

#: A version of at most 9 digits a part: `wgapp_1.<5,000 digits>.spm` from a hostile server is
#: no offer (`int()` of it raised past Python's 4,300 digits and failed every session).
_PACKAGE: Final = re.compile(r"wgapp_([0-9]{1,9}(?:\.[0-9]{1,9}){0,15})\.spm")
TRIED_FILE: Final = "tried.json"
ATTEMPTS_FILE: Final = "attempts.json"
#: Downloads of one listing entry that may fail before it is left alone until it changes.
MAX_ATTEMPTS: Final = 3
_HEX_MD5: Final = re.compile(r"[0-9a-f]{32}")


def running_version() -> str:
    try:
        return metadata.version("sunpm")
    except metadata.PackageNotFoundError:
        return "0"


def version_key(text: str) -> tuple[int, ...]:
    """`1.10.2` -> (1, 10, 2); a part that is no number of at most 9 ASCII digits counts as 0
    (`1.0.0.dev3` -> (1, 0, 0, 0))."""
    return tuple(number if part.isdigit() and (number := read_integer(part, max_digits=9))
                 is not None else 0 for part in text.split("."))


def newest_offer(names: list[str], running: str) -> tuple[str, str] | None:
    """(file name, version) of the newest package above `running`, if any."""
    offers = [(version_key(m.group(1)), m.group(0), m.group(1))
              for m in map(_PACKAGE.fullmatch, names) if m is not None]
    newer = [o for o in offers if o[0] > version_key(running)]
    if not newer:
        return None
    _, name, version = max(newer)
    return name, version


def _tried(folder: Path) -> set[str]:
    try:
        return set(json.loads((folder / TRIED_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return set()


def _attempts(folder: Path) -> dict[str, int]:
    try:
        counts = json.loads((folder / ATTEMPTS_FILE).read_text())
        return {str(k): int(v) for k, v in counts.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


async def stage_offered_package(data_dir: Path, settings: ServerSettings, cert_dir: Path, *,
                                running: str | None = None) -> Path | None:
    """The package staged from `/BIN` this time, or None (nothing new, or a failure logged)."""
    folder = data_dir / UPDATE_FOLDER
    transport = open_transport(settings, cert_dir)
    assert isinstance(transport, FileTransport)
    partial: Path | None = None
    try:
        await transport.connect()
        try:
            listing = {f.name: f for f in await transport.list("/BIN")}
        except TransportError as err:
            if err.failure is not Failure.REFUSED:
                raise
            # No /BIN on this server (or not ours to read): nothing is offered, which is no
            # reason for a WARNING at every session.
            log.debug("server %d: no /BIN to check: %s", settings.slot, err)
            return None
        offer = newest_offer(list(listing), running or running_version())
        if offer is None:
            return None
        name, version = offer
        tried = _tried(folder)
        # The listing tells a package already tried without fetching its 256 MiB again at
        # every session: same name, size and time.
        seen = _listed(listing[name])
        if seen in tried:
            return None
        attempts = _attempts(folder)
        if attempts.get(seen, 0) >= MAX_ATTEMPTS:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        if listing[name].size > PACKAGE_CAP_BYTES:
            # The listing says so already: 256 MiB over a metered link for nothing, not even once.
            attempts[seen] = MAX_ATTEMPTS
            write_file_durably(folder / ATTEMPTS_FILE, json.dumps(attempts).encode())
            log.warning("server %d: /BIN/%s not downloaded: %d bytes, more than 256 MiB; not "
                        "fetched again until the server offers it changed", settings.slot, name,
                        listing[name].size)
            return None
        partial = folder / f".{name}.part"
        try:
            # Streamed to disk (docs/behaviour.md §4.5): a package is never held in memory.
            # Bounded as `updateFirmware`'s download: this runs at the end of server 1's
            # session, and a slow link (a modem) fetching 256 MiB would hold every later
            # session (alarms, data) for hours.
            async with asyncio.timeout(DOWNLOAD_LIMIT_S):
                with partial.open("wb", buffering=0) as out:
                    await transport.download_to(f"/BIN/{name}", cast(BinaryIO, _Staging(out)),
                                                max_bytes=PACKAGE_CAP_BYTES)
                    os.fsync(out.fileno())
        except (TransportError, OSError, StagingError, TimeoutError) as err:
            partial.unlink(missing_ok=True)
            if isinstance(err, TimeoutError):
                err = StagingError(f"not done within {DOWNLOAD_LIMIT_S:.0f} s")
            elif isinstance(err, OSError):        # opening or syncing the staging file
                err = StagingError(err)
            _failed_attempt(folder, seen, settings.slot, f"/BIN/{name}", err,
                            final=isinstance(err, DownloadTooLarge))
            return None
        digest, md5 = await asyncio.to_thread(_hashes, partial)
        if digest in tried:
            write_file_durably(folder / TRIED_FILE, json.dumps(sorted(tried | {seen})).encode())
            return None
        words: list[str] = []
        if f"{name}.md5" in listing:
            try:
                words = (await transport.download(f"/BIN/{name}.md5", max_bytes=4096)).decode(
                    "ascii", errors="replace").split()
            except TransportError as err:
                # Before the package counts as tried: a checksum that could not be read this
                # time is no verdict on the package.
                _failed_attempt(folder, seen, settings.slot, f"/BIN/{name}.md5", err,
                                final=False)
                return None
        tried |= {digest, seen}
        try:
            write_file_durably(folder / TRIED_FILE, json.dumps(sorted(tried)).encode())
        except OSError as err:
            # The package took the last of the disk: dropped so that the count can be
            # written, else it came again at every session.
            partial.unlink(missing_ok=True)
            _failed_attempt(folder, seen, settings.slot, f"/BIN/{name}", StagingError(err),
                            final=False)
            return None
        if f"{name}.md5" in listing:
            expected = words[0].lower() if words else "(empty file)"
            if not _HEX_MD5.fullmatch(expected):
                expected = "(not an MD5)"       # nor anything else of the server's in the log
            if md5 != expected:
                log.error("server %d: /BIN/%s: checksum mismatch (expected %s, got %s); not "
                          "installed", settings.slot, name, expected, md5)
                return None
        path = folder / name
        rename(partial, path)
        fsync_dir(folder)
        log.info("server %d: update %s staged from /BIN (running %s). package=%s",
                 settings.slot, version, running or running_version(), path)
        return path
    except (TransportError, OSError) as err:
        log.warning("server %d: /BIN not checked: %s", settings.slot, err)
        return None
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)
        await transport.close()


def _failed_attempt(folder: Path, seen: str, slot: int, path: str, err: Exception, *,
                    final: bool) -> None:
    """One failed download of listing entry `seen` counted (all of them when `final`), so that
    a package the box cannot take (too large, a disk too small, a link that always breaks) is
    not fetched at every session."""
    attempts = _attempts(folder)
    attempts[seen] = MAX_ATTEMPTS if final else attempts.get(seen, 0) + 1
    left = MAX_ATTEMPTS - attempts[seen]
    with contextlib.suppress(OSError):      # a full disk: the next session tries again
        write_file_durably(folder / ATTEMPTS_FILE, json.dumps(attempts).encode())
    log.warning("server %d: %s not downloaded: %s; %s", slot, path, err,
                f"{left} more attempt(s) while the server offers it unchanged" if left
                else "not fetched again until the server offers it changed")


class StagingError(Exception):
    """The gateway's own disk refused a block of a download (full, read-only), or the download
    ran out of time. Not an `OSError`: the transports take those for the server's or the
    network's fault."""

    def __init__(self, err: OSError | str) -> None:
        super().__init__(err if isinstance(err, str) else
                         f"the gateway's disk: {err.strerror or err}")


class _Staging:
    """The staging file as a download's sink: its write errors are the gateway's."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def write(self, block: bytes) -> int:
        try:
            return self._out.write(block)
        except OSError as err:
            raise StagingError(err) from err


def _listed(entry: RemoteFile) -> str:
    """A listing entry as a key of the tried set (its size alone when the server gives no
    time)."""
    when = "-" if entry.mtime_s is None else f"{entry.mtime_s:.0f}"
    return f"{entry.name}:{entry.size}:{when}"


def _hashes(path: Path) -> tuple[str, str]:
    """(SHA-256, MD5) of a file, read in blocks."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()
