"""Update packages offered in server 1's `/BIN` (docs/behaviour.md §4.2 step 6, **Decision**).

After each successful session of server 1 (a file server) the service lists `/BIN` over a
connection of its own. A `wgapp_<version>.spm` whose version (dotted numbers) is newer than the
running one and whose content (SHA-256) was never tried is downloaded (256 MiB at most) to
`<data>/update/`, checked against `<name>.md5` beside it when there is one, and handed to
`SYSTEM_UpdateCommand` as `updateFirmware` does; without that key it is only logged. Tried hashes
are kept in `<data>/update/tried.json`, so a package that failed is not fetched again and again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from importlib import metadata
from pathlib import Path
from typing import Final

from config.model import ServerSettings
from exporters.transports import FileTransport, TransportError, open_transport
from fsio import write_file_durably
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
    try:
        await transport.connect()
        listing = [f.name for f in await transport.list("/BIN")]
        offer = newest_offer(listing, running or running_version())
        if offer is None:
            return None
        name, version = offer
        data = await transport.download(f"/BIN/{name}", max_bytes=PACKAGE_CAP_BYTES)
        digest = hashlib.sha256(data).hexdigest()
        tried = _tried(folder)
        if digest in tried:
            return None
        folder.mkdir(parents=True, exist_ok=True)
        write_file_durably(folder / TRIED_FILE, json.dumps(sorted(tried | {digest})).encode())
        if f"{name}.md5" in listing:
            words = (await transport.download(f"/BIN/{name}.md5", max_bytes=4096)).decode(
                "ascii", errors="replace").split()
            expected = words[0].lower() if words else "(empty file)"
            got = hashlib.md5(data, usedforsecurity=False).hexdigest()
            if got != expected:
                log.error("server %d: /BIN/%s: checksum mismatch (expected %s, got %s); not "
                          "installed", settings.slot, name, expected, got)
                return None
        path = folder / name
        write_file_durably(path, data)
        log.info("server %d: update %s staged from /BIN (running %s). package=%s",
                 settings.slot, version, running or running_version(), path)
        return path
    except (TransportError, OSError) as err:
        log.warning("server %d: /BIN not checked: %s", settings.slot, err)
        return None
    finally:
        await transport.close()
