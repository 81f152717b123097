"""Fixtures of the transport contract suite (peers: tests/peers.py; targets: transport_support)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from peers import Certs, make_certs
from transport_support import (
    FILE_KINDS,
    NETWORK_KINDS,
    REAL_TARGETS,
    PeerPool,
    Target,
    fresh_real_target,
    fresh_target,
)

from exporters.transports import FileTransport


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def broker_certs(certs: Certs) -> Certs:
    """The `broker` fixture (tests/conftest.py) serves TLS with this suite's certificates."""
    return certs


@pytest.fixture(scope="session")
def peer_pool(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[PeerPool]:
    pool = PeerPool(tmp_path_factory.mktemp("peers"), certs)
    yield pool
    pool.close()


def _target(kind: str, peer_pool: PeerPool, certs: Certs, tmp_path: Path) -> Target:
    if kind in REAL_TARGETS:
        return fresh_real_target(peer_pool.get_real(kind), certs)
    if kind == "dir":
        return fresh_target(kind, None, tmp_path, certs)
    peer = peer_pool.get(kind)
    return fresh_target(kind, peer, peer.root, certs)


@pytest.fixture(params=FILE_KINDS + REAL_TARGETS)
def target(request: pytest.FixtureRequest, peer_pool: PeerPool, certs: Certs,
           tmp_path: Path) -> Target:
    """Every transport against its tests/peers.py peer, and every real server."""
    return _target(request.param, peer_pool, certs, tmp_path)


@pytest.fixture(params=FILE_KINDS)
def peer_target(request: pytest.FixtureRequest, peer_pool: PeerPool, certs: Certs,
                tmp_path: Path) -> Target:
    """Every transport against its tests/peers.py peer only (which has test hooks: DISKFULL)."""
    return _target(request.param, peer_pool, certs, tmp_path)


@pytest.fixture(params=NETWORK_KINDS + REAL_TARGETS)
def network_target(request: pytest.FixtureRequest, peer_pool: PeerPool, certs: Certs) -> Target:
    if request.param in REAL_TARGETS:
        return fresh_real_target(peer_pool.get_real(request.param), certs)
    peer = peer_pool.get(request.param)
    return fresh_target(request.param, peer, peer.root, certs)


@pytest.fixture
async def connected(target: Target) -> AsyncIterator[FileTransport]:
    transport = target.transport()
    await transport.connect()
    try:
        yield transport
    finally:
        await transport.close()


def _sockets() -> set[str]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:"):
                found.add(link)
    return found


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a thread or a socket behind (docs/style.md §9). Autouse, so it is set
    up first and torn down last, after the test's event loop is closed."""
    threads = set(threading.enumerate())
    sockets = _sockets()
    yield
    deadline = time.monotonic() + 3.0
    while True:
        extra_threads = [t for t in set(threading.enumerate()) - threads if t.is_alive()]
        extra_sockets = _sockets() - sockets
        if not extra_threads and not extra_sockets:
            return
        if time.monotonic() > deadline:
            break
        gc.collect()
        time.sleep(0.05)
    pytest.fail(f"left behind: threads {[t.name for t in extra_threads]}, "
                f"{len(extra_sockets)} sockets")


@pytest.fixture(autouse=True)
async def no_task_left() -> AsyncIterator[None]:
    """Fail a test that leaves an asyncio task running (docs/style.md §9)."""
    before = asyncio.all_tasks()
    yield
    for _ in range(20):  # let cancelled tasks finish their cleanup
        left = [t for t in asyncio.all_tasks() - before
                if t is not asyncio.current_task() and not t.done()]
        if not left:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"left behind: tasks {[t.get_name() for t in left]}")
