"""Fixtures of the hostile-server suite (hostile_support.py has the harness)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_support import Site, fill_store, record_counts


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A site whose store holds a day of records; after the test, the canary folder is untouched
    and every record is still in the store, whatever the case did."""
    s = Site(tmp_path)
    asyncio.run(fill_store(s.store))
    before = asyncio.run(record_counts(s.store))
    canary = s.snapshot(s.canary)
    assert sum(before.values()) > 0
    yield s
    assert s.snapshot(s.canary) == canary, "the canary folder outside the tree changed"
    assert asyncio.run(record_counts(s.store)) == before, "recorded data lost"
