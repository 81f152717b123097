"""A month of a simulated plant, delivered and dumped once per module (read-only for tests)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from plant import Plant, build_plant


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Plant:
    return asyncio.run(build_plant(tmp_path_factory.mktemp("plant"), days=31))


@pytest.fixture
def dump_copy(month: Plant, tmp_path: Path) -> Path:
    """A private copy of the month's dump, for a test that damages it."""
    target = tmp_path / "dump"
    shutil.copytree(month.dump, target)
    return target
