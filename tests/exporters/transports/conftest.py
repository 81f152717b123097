"""Fixtures of the transport contract suite (peers: tests/peers.py; targets: transport_support)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from peers import Certs, make_certs
from transport_support import FILE_KINDS, NETWORK_KINDS, PeerPool, Target, fresh_target

from exporters.transports import FileTransport


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def peer_pool(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[PeerPool]:
    pool = PeerPool(tmp_path_factory.mktemp("peers"), certs)
    yield pool
    pool.close()


@pytest.fixture(params=FILE_KINDS)
def target(request: pytest.FixtureRequest, peer_pool: PeerPool, certs: Certs,
           tmp_path: Path) -> Target:
    kind: str = request.param
    if kind == "dir":
        return fresh_target(kind, None, tmp_path, certs)
    peer = peer_pool.get(kind)
    return fresh_target(kind, peer, peer.root, certs)


@pytest.fixture(params=NETWORK_KINDS)
def network_target(request: pytest.FixtureRequest, peer_pool: PeerPool, certs: Certs) -> Target:
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
