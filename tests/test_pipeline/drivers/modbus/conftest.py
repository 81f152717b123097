"""Fixtures of the Modbus tests: no task left behind (tests/conftest.py), the pty pair for RTU
(tests/test_pipeline/drivers/conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _no_task_left_behind(no_task_left_behind: None) -> None:
    """Every Modbus test: no reader, responder or connection task outlives it."""
