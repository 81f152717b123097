"""The last configuration in force, kept in the data directory.

A gateway restarted (a power cut, a reboot) with a configuration folder it rejects runs this copy
instead of refusing to start: a hand edit with a typo must not stop the acquisition of a plant
until somebody logs in (docs/behaviour.md §4.2, docs/spec-notes.md). The copy is one tar file,
replaced whole and durably each time another configuration comes in force; it is read into
memory, never extracted.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from config import Site, load_site_files
from config.errors import ConfigError
from fsio import write_file_durably

FILE_NAME: Final = "config-in-force.tar"
#: The two zero blocks that end every tar `archive` writes.
_END_OF_ARCHIVE: Final = 2 * tarfile.BLOCKSIZE

log = logging.getLogger("sunpm.config")


def archive(files: Mapping[str, bytes]) -> bytes:
    """The files as a tar whose bytes depend on their names and contents only."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(files[name]))
    return out.getvalue()


def save(data_dir: Path, files: Mapping[str, bytes]) -> None:
    """Keep `files` as the configuration in force (unchanged: nothing written).

    A copy that cannot be written (a full disk, an I/O error) is logged and the gateway goes
    on: the copy only serves a later start with a rejected folder, and a full disk must not stop
    the acquisition (docs/behaviour.md §6). The earlier copy stays: a configuration once in
    force runs a plant better than an exit."""
    data = archive(files)
    path = data_dir / FILE_NAME
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass    # none yet, or unreadable: written again
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        write_file_durably(path, data)
    except OSError as err:
        log.error("%s: last configuration in force not kept (%s); a start with a rejected "
                  "configuration folder runs the one kept before, if any", path,
                  err.strerror or err)
        with contextlib.suppress(OSError):
            path.with_name(path.name + ".tmp").unlink()


def load(data_dir: Path, directory: Path) -> Site | None:
    """The kept configuration, checked again as it was when it came in force; None when there
    is none or it cannot be used (said why)."""
    path = data_dir / FILE_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        log.error("%s: last configuration in force unreadable (%s)", path, err)
        return None
    try:
        files: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar.getmembers():
                content = tar.extractfile(member) if member.isfile() else None
                if content is not None:
                    files[member.name] = content.read()
            # A copy cut at a file's end reads as a shorter archive (tarfile stops there): its
            # end-of-archive blocks say it is whole, else the rest would read as missing files
            # (no devices, no schedules) and run as a configuration.
            if data[tar.offset:tar.offset + _END_OF_ARCHIVE] != bytes(_END_OF_ARCHIVE):
                raise tarfile.ReadError("cut short")
        return load_site_files(files, directory=directory)
    except tarfile.TarError as err:
        log.error("%s: last configuration in force unreadable (%s)", path, err)
    except ConfigError as err:
        log.error("%s: last configuration in force no longer valid (%d problem(s), first: %s)",
                  path, len(err.problems), err.problems[0] if err.problems else "")
    return None
