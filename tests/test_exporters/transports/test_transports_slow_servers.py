"""Slow and hostile answers from real servers (tests/peers.py's, made slow or hostile): whatever a
server sends back is read under the caps and the "60 s without progress" of docs/behaviour.md
§4.5, progress being at least 1 KiB moved."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

from peers import Certs, run_peer
from transport_support import fresh_target

from exporters.transports import Failure, Timeouts, TransportError

MIB = 1 << 20


async def test_webdav_challenge_with_an_endless_body_is_not_read_whole(certs: Certs,
                                                                       tmp_path: Path) -> None:
    # The client answers the 401 from its headers; its body was read whole first, growing the
    # process at the link's rate until the operation timed out (gigabytes over a LAN).
    with run_peer("webdav", tmp_path, certs, endless_challenge=True) as peer:
        target = fresh_target("webdav", peer, tmp_path, certs)
        (target.tree / "CONFIG" / "a_config.ini").write_bytes(b"KEY=1\n")
        transport = target.transport(timeouts=Timeouts(connect_s=5.0, operation_s=5.0))
        tracemalloc.start()
        try:
            started = time.monotonic()
            await transport.connect()
            assert await transport.download("/CONFIG/a_config.ini") == b"KEY=1\n"
            elapsed = time.monotonic() - started
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            await transport.close()
    assert elapsed < 5.0
    assert peak < 16 * MIB


async def test_ftp_listing_without_mlsd_from_a_server_answering_slowly_times_out(
        certs: Certs, tmp_path: Path) -> None:
    # Without MLSD each name costs a SIZE and an MDTM, some 100 bytes: a server answering each
    # within the timeout moved far less than 1 KiB per period, yet every name pushed the deadline
    # back a whole period, so 10,000 names answered at 59 s held a session for 13 days.
    with run_peer("ftp", tmp_path, certs, no_mlsd=True, reply_delay_s=0.25) as peer:
        target = fresh_target("ftp", peer, tmp_path, certs)
        for n in range(100):
            (target.tree / "CONFIG" / f"f{n:03d}.ini").write_bytes(b"x")
        limit = 4.0
        transport = target.transport(timeouts=Timeouts(connect_s=5.0, operation_s=limit))
        await transport.connect()
        try:
            started = time.monotonic()
            try:
                listing = await transport.list("/CONFIG")
            except TransportError as err:
                assert err.failure is Failure.TIMEOUT and err.retriable, err
            else:
                raise AssertionError(f"{len(listing)} names listed at under 1 KiB per {limit} s")
            assert time.monotonic() - started < 2 * limit + 2
        finally:
            await transport.close()
