"""Fixtures of the delivery tests (outbox, sessions, export): a real store with records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from delivery_support import FtpPeer, ftp_peer, make_tree


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
