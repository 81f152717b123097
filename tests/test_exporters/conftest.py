"""Fixtures shared by the exporters' suites."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from store import Log, StoreOptions


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Log]:
    """An empty store; a short group commit keeps the many acknowledged journal events of a
    session quick."""
    log = await Log.open(tmp_path / "store", StoreOptions(flush_s=0.05))
    try:
        yield log
    finally:
        await log.close()
