"""Fixtures of the delivery tests (outbox, sessions, export): a real store with records."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from delivery_support import FtpPeer, ftp_peer, make_tree

from store import Log, StoreOptions


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Log]:
    # A short group commit keeps the many acknowledged journal events of a session quick.
    log = await Log.open(tmp_path / "store", StoreOptions(flush_s=0.05))
    try:
        yield log
    finally:
        await log.close()


@pytest.fixture
def ftp(tmp_path: Path) -> Iterator[FtpPeer]:
    root = make_tree(tmp_path / "ftp")
    with ftp_peer(root, tmp_path / "ftp-events.log") as peer:
        yield peer


@pytest.fixture
def ftp_throttled(tmp_path: Path) -> Iterator[FtpPeer]:
    """An FTP peer that takes uploads slowly, so a kill can land in the middle of one."""
    root = make_tree(tmp_path / "ftp")
    with ftp_peer(root, tmp_path / "ftp-events.log", "--chunk-delay-ms", "8") as peer:
        yield peer
