"""`sunpm export`'s job: the store opened read-only, the window source, a transport.

The window source itself is `exporters.rendering.source`, shared with the offline re-export.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import load_site
from config.model import ServerType
from exporters.rendering.source import SourceError, StoreSource, store_source
from exporters.transports import open_transport
from store.log import Log

__all__ = ["ExportJob", "PathRefused", "open_export"]


class PathRefused(SourceError):
    """The store path given (or `STORE_Path`) cannot be used: none, missing, not a directory
    or not a store. `sunpm export` exits 2 for it, as every command for a path it cannot use."""


@dataclass(slots=True)
class ExportJob:
    """What `sunpm export` works with: the store, the source and, for `--upload`, a transport."""

    log: Any
    source: StoreSource
    file_server: bool
    transport: Any = None
    two_step: bool = True
    topic: str = ""

    async def upload(self, path: str, data: bytes) -> None:
        if self.transport is None:
            raise SourceError("no transport for this server")
        if self.file_server:
            await self.transport.upload(path, data, two_step=self.two_step)
        else:
            await self.transport.publish(self.topic, data)


@asynccontextmanager
async def open_export(*, config_dir: Path, store_dir: Path | None, server: int,
                      upload: bool = False) -> AsyncIterator[ExportJob]:
    """Open the running configuration and the store (read-only) for a backfill of `server`;
    with `upload`, a connected transport to that server too."""
    site = await asyncio.to_thread(load_site, config_dir)
    settings = site.settings.servers[server - 1]
    if settings.type is ServerType.NONE:
        raise SourceError(f"server {server} is not configured (SERVER_Type=none)")
    path = store_dir or (Path(site.settings.store_path) if site.settings.store_path else None)
    if path is None:
        raise PathRefused("no store: give --store or set STORE_Path")
    if not path.is_dir():
        raise PathRefused(f"{path}: {'not a directory' if path.exists() else 'no such directory'}")
    if not (path / "devices").is_dir() and not (path / "journal").is_dir():
        # A path typed one level off (or an empty folder) is said, never exported as nothing.
        raise PathRefused(f"{path}: not a sunpm store (no devices/ or journal/ folder)")
    log = await Log.open(path, read_only=True)
    transport: Any = None
    try:
        job = ExportJob(log=log, source=store_source(log, site, server),
                        file_server=settings.type.is_file_server, two_step=settings.two_step,
                        topic=settings.topic_data)
        if upload:
            transport = open_transport(settings, config_dir / "CERT")
            await transport.connect()
            job.transport = transport
        yield job
    finally:
        if transport is not None:
            await transport.close()
        await log.close()
