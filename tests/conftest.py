"""Options and fixtures shared by the whole test suite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    # Golden files (tests/golden/) are rewritten only on request; the diff is reviewed like code.
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden files from the current output instead of comparing")


@pytest.fixture
async def no_task_left_behind() -> AsyncIterator[None]:
    """Fails a test that leaves an asyncio task running (a poll loop, a reader, a server).

    Opt in per module with `pytestmark = pytest.mark.usefixtures("no_task_left_behind")`."""
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not left, f"tasks left running: {[t.get_name() for t in left]}"
