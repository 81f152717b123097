"""The debug archive `<uid>_SYSTEME_<ts>.tar.gz` (docs/formats.md §11, **Decision**).

Made on request (`sunpm archive`, the web UI through `Gateway.debug_archive`): the configuration
files in force under `config/`, the status object as `status.json`, and the gateway log of the
last 7 days as `log.txt` (the LOG files' line form). It waits in `<data>/archives/` and goes to
server 1's `/LOG` after its next successful session (a file server; deleted here once uploaded).
It is not a window: never re-exported, not in the store.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from config.masking import ini_secrets_masked
from config.model import ServerSettings
from exporters.transports import FileTransport, TransportError, open_transport
from exporters.views.context import ViewConfig
from exporters.views.log import log_text
from exporters.views.names import system_archive_name
from fsio import write_file_durably
from store.events import journal_items
from store.log import Log

log = logging.getLogger("sunpm.system")

FOLDER: Final = "archives"
LOG_DAYS: Final = 7
_NS_PER_DAY: Final = 86_400 * 1_000_000_000


def archive_bytes(files: Mapping[str, bytes], status: Mapping[str, object], log_lines: str,
                  made_ns: int) -> bytes:
    buffer = io.BytesIO()
    mtime = made_ns // 1_000_000_000
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        members = {**{f"config/{rel}": _secrets_masked(rel, data)
                      for rel, data in sorted(files.items())},
                   "status.json": json.dumps(status, ensure_ascii=False, indent=1).encode(),
                   "log.txt": log_lines.encode()}
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _secrets_masked(rel: str, data: bytes) -> bytes:
    # The archive goes to a browser and to server 1's /LOG; its passwords would help no one
    # debug (`***` still says they are set).
    if not rel.endswith("config.ini"):
        return data
    return ini_secrets_masked(data.decode("utf-8", "surrogateescape")).encode(
        "utf-8", "surrogateescape")


def recent_log(store: Log, config: ViewConfig, now_ns: int) -> str:
    table = store.journal(start_ns=now_ns - LOG_DAYS * _NS_PER_DAY, kinds=["log"])
    return log_text(journal_items(table.sort_by("seq")), config)


def write_archive(data_dir: Path, uid: str, data: bytes, made_ns: int) -> Path:
    path = data_dir / FOLDER / system_archive_name(uid, made_ns)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_durably(path, data)
    return path


async def upload_archives(data_dir: Path, settings: ServerSettings, cert_dir: Path) -> int:
    """Archives waiting, uploaded to server 1's `/LOG`; how many went."""
    folder = data_dir / FOLDER
    waiting = sorted(p for p in folder.glob("*_SYSTEME_*.tar.gz")) if folder.is_dir() else []
    if not waiting:
        return 0
    transport = open_transport(settings, cert_dir)
    assert isinstance(transport, FileTransport)
    sent = 0
    try:
        await transport.connect()
        for path in waiting:
            await transport.upload(f"/LOG/{path.name}", path.read_bytes(),
                                   two_step=settings.two_step)
            path.unlink()
            sent += 1
            log.info("server %d: uploaded /LOG/%s", settings.slot, path.name)
    except (TransportError, OSError) as err:
        log.warning("server %d: debug archive not uploaded yet: %s", settings.slot, err)
    finally:
        await transport.close()
    return sent
