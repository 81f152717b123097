"""Options and fixtures shared by the whole test suite."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from peers import Broker, Certs, have_mosquitto, make_certs, run_broker

# A runner started in the background by a shell without job control (`./.ci/run &`) ignores
# SIGINT, and the commands the tests start would inherit that: the tests stopping one with
# Ctrl-C (discover, modbus read --watch, sd sql) need it delivered, as at a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_addoption(parser: pytest.Parser) -> None:
    # Golden files (tests/golden/) are rewritten only on request; the diff is reviewed like code.
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden files from the current output instead of comparing")


@pytest.fixture(autouse=True)
def sunpm_logger_restored() -> Iterator[None]:
    """Puts the root and `sunpm.*` loggers back as they were after each test.

    A command or script run in-process (`sunpm run`'s stderr set-up stops propagation to the
    root logger; a script's `logging.basicConfig` raises the root level) would otherwise hide
    every later test's log lines from `caplog`."""
    # Only the root's level: pytest itself adds and removes the root's capture handlers. The
    # commands quieten some `sunpm.*` loggers for their own output (`sunpm sd` the store's).
    root, ours = logging.getLogger(), logging.getLogger("sunpm")
    root_level = root.level
    saved = (ours.propagate, list(ours.handlers))
    levels = {name: logging.getLogger(name).level for name in _sunpm_loggers()}
    yield
    root.setLevel(root_level)
    ours.propagate, ours.handlers[:] = saved
    for name in _sunpm_loggers():
        logging.getLogger(name).setLevel(levels.get(name, logging.NOTSET))


def _sunpm_loggers() -> list[str]:
    return ["sunpm", *(name for name in logging.root.manager.loggerDict
                       if name.startswith("sunpm."))]


@pytest.fixture
async def no_task_left_behind() -> AsyncIterator[None]:
    """Fails a test that leaves an asyncio task running (a poll loop, a reader, a server).

    Opt in per module with `pytestmark = pytest.mark.usefixtures("no_task_left_behind")`."""
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not left, f"tasks left running: {[t.get_name() for t in left]}"


@pytest.fixture
def broker_certs(tmp_path: Path) -> Certs:
    """The certificates the `broker` fixture serves TLS with; a suite may override it."""
    return make_certs(tmp_path / "certs")


@pytest.fixture
def broker(tmp_path: Path, broker_certs: Certs) -> Iterator[Broker]:
    """A mosquitto of tests/peers.py for one test: skipped where it is not installed, failed
    under CI, where it must be."""
    if not have_mosquitto():
        if os.environ.get("CI"):
            pytest.fail("mosquitto is not installed (.ci/run installs it)")
        pytest.skip("mosquitto is not installed: apt-get install mosquitto")
    with run_broker(tmp_path / "broker", broker_certs) as running:
        yield running
