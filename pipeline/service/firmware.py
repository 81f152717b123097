"""Update packages offered in server 1's `/BIN` (docs/behaviour.md §4.2 step 6, **Decision**).

After each successful session of server 1 (a file server) the service lists `/BIN` over a
connection of its own. A `wgapp_<version>.spm` whose version (dotted numbers) is newer than the
running one and whose content (SHA-256) was never tried is downloaded (256 MiB at most) to
`<data>/update/` (streamed to disk, never held in memory), checked against `<name>.md5` beside it
when there is one, and handed to `SYSTEM_UpdateCommand` as `updateFirmware` does; without that
key it is only logged. Tried packages are kept in `<data>/update/tried.json` by hash and by
listing entry (name, size, time), so a package that failed is not fetched again and again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
from importlib import metadata
from pathlib import Path
from typing import Final

from config.model import ServerSettings
from exporters.transports import FileTransport, RemoteFile, TransportError, open_transport
from fsio import fsync_dir, rename, write_file_durably
from pipeline.service.maintenance import PACKAGE_CAP_BYTES, UPDATE_FOLDER

log = logging.getLogger("sunpm.system")

_PACKAGE: Final = re.compile(r"^wgapp_(\d+(?:\.\d+)*)\.spm$")
TRIED_FILE: Final = "tried.json"


def running_version() -> str:
    try:
        return metadata.version("sunpm")
    except metadata.PackageNotFoundError:
        return "0"


def version_key(text: str) -> tuple[int, ...]:
    """`1.10.2` -> (1, 10, 2); a non-numeric part counts as 0 (`1.0.0.dev3` -> (1, 0, 0, 0))."""
    return tuple(int(part) if part.isdigit() else 0 for part in text.split("."))


def newest_offer(names: list[str], running: str) -> tuple[str, str] | None:
    """(file name, version) of the newest package above `running`, if any."""
    offers = [(version_key(m.group(1)), m.group(0), m.group(1))
              for m in map(_PACKAGE.match, names) if m is not None]
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


async def stage_offered_package(data_dir: Path, settings: ServerSettings, cert_dir: Path, *,
                                running: str | None = None) -> Path | None:
    """The package staged from `/BIN` this time, or None (nothing new, or a failure logged)."""
    folder = data_dir / UPDATE_FOLDER
    transport = open_transport(settings, cert_dir)
    assert isinstance(transport, FileTransport)
    partial: Path | None = None
    try:
        await transport.connect()
        listing = {f.name: f for f in await transport.list("/BIN")}
        offer = newest_offer(list(listing), running or running_version())
        if offer is None:
            return None
        name, version = offer
        tried = _tried(folder)
        # The listing tells a package already tried without fetching its 256 MiB again at
        # every session: same name, size and time.
        seen = _listed(listing[name])
        if seen is not None and seen in tried:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{name}.part"
        # Streamed to disk (docs/behaviour.md §4.5): a package is never held in memory.
        with partial.open("wb") as out:
            await transport.download_to(f"/BIN/{name}", out, max_bytes=PACKAGE_CAP_BYTES)
            out.flush()
            os.fsync(out.fileno())
        digest, md5 = await asyncio.to_thread(_hashes, partial)
        known = digest in tried
        tried |= {digest} | ({seen} if seen is not None else set())
        write_file_durably(folder / TRIED_FILE, json.dumps(sorted(tried)).encode())
        if known:
            return None
        if f"{name}.md5" in listing:
            words = (await transport.download(f"/BIN/{name}.md5", max_bytes=4096)).decode(
                "ascii", errors="replace").split()
            expected = words[0].lower() if words else "(empty file)"
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


def _listed(entry: RemoteFile) -> str | None:
    """A listing entry as a key of the tried set; None when the server gives no time."""
    if entry.mtime_s is None:
        return None
    return f"{entry.name}:{entry.size}:{entry.mtime_s:.0f}"


def _hashes(path: Path) -> tuple[str, str]:
    """(SHA-256, MD5) of a file, read in blocks."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()
