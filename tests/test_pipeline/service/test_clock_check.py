"""The clock check against a real SNTP server on loopback (an asyncio UDP responder whose clock
is ours plus a chosen offset, or that stays silent), with a manual clock for the hour rules."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import time
from pathlib import Path

import pytest
from waiting import wait_until

from pipeline.clock import NS_PER_S, ManualClock
from pipeline.service.alarms import Alarms
from pipeline.service.clock_check import ClockCheck, SntpError, sntp_offset
from store import Log, StoreOptions

pytestmark = pytest.mark.usefixtures("no_task_left_behind")

T0 = 1_767_571_200 * NS_PER_S
NTP_EPOCH = 2_208_988_800


def ntp(t: float) -> bytes:
    return struct.pack("!II", int(t) + NTP_EPOCH, int((t % 1) * 2**32))


class SntpServer(asyncio.DatagramProtocol):
    """Answers mode 4, stratum 2, its receive and transmit times shifted by `offset_s`."""

    def __init__(self) -> None:
        self.offset_s = 0.0
        self.silent = False
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.silent or self.transport is None:
            return
        now = time.time() + self.offset_s
        self.transport.sendto(  # type: ignore[attr-defined]
            b"\x24\x02" + bytes(22) + data[40:48] + ntp(now) + ntp(now), addr)


async def serve() -> tuple[SntpServer, int, asyncio.DatagramTransport]:
    transport, server = await asyncio.get_running_loop().create_datagram_endpoint(
        SntpServer, local_addr=("127.0.0.1", 0))
    return server, transport.get_extra_info("sockname")[1], transport


def alarm_names(log: Log) -> list[str]:
    return [json.loads(b)["alarm"] for b in
            log.journal(kinds=["alarm"]).sort_by("seq").column("body").to_pylist()]


async def test_sntp_offset_against_a_loopback_server() -> None:
    server, port, transport = await serve()
    try:
        server.offset_s = 12.5
        assert abs(await sntp_offset("127.0.0.1", port) - 12.5) < 0.2
        server.silent = True
        with pytest.raises(SntpError, match=re.escape("no answer within 0.3 s")):
            await sntp_offset("127.0.0.1", port, timeout_s=0.3)
    finally:
        transport.close()


async def test_a_refused_query_says_why_in_words() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nobody on that port: the ICMP answer is the refusal, logged as the check's failure.
    with pytest.raises(SntpError) as raised:
        await sntp_offset("127.0.0.1", port, timeout_s=5)
    assert str(raised.value) == "127.0.0.1: Connection refused"


async def test_offset_over_2_s_alarms_at_once_and_good_again_clears(tmp_path: Path) -> None:
    server, port, transport = await serve()
    clock = ManualClock(T0)
    states: list[bool] = []
    try:
        async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
            check = ClockCheck(("127.0.0.1",), Alarms(log, clock, lambda: None), clock,
                               states.append, port=port, timeout_s=0.5)
            server.offset_s = 0.4
            await check.check()
            assert check.synchronised and alarm_names(log) == []
            server.offset_s = -3.0
            await check.check()
            assert not check.synchronised
            assert alarm_names(log) == ["Clock unsynchronised"]
            server.offset_s = 0.1
            await check.check()
            assert alarm_names(log) == ["Clock unsynchronised", "Clock synchronised"]
    finally:
        transport.close()
    assert states == [True, False, True]


async def test_no_answer_is_quality_7_at_once_and_an_alarm_after_an_hour(tmp_path: Path) -> None:
    server, port, transport = await serve()
    server.silent = True
    clock = ManualClock(T0)
    states: list[bool] = []
    try:
        async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
            check = ClockCheck(("127.0.0.1", "127.0.0.1"), Alarms(log, clock, lambda: None),
                               clock, states.append, port=port, timeout_s=0.2)
            task = asyncio.create_task(check.run())
            await wait_until(lambda: states, 5)
            assert states == [False]             # not synchronised before a first good answer
            await wait_until(lambda: clock.waiting, 5)     # both servers tried, no answer
            assert alarm_names(log) == []
            await clock.advance(3600)            # the hourly check: an hour without answer
            await wait_until(lambda: alarm_names(log), 5)
            assert alarm_names(log) == ["Clock unsynchronised"]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        transport.close()


async def test_no_server_means_a_trusted_clock(tmp_path: Path) -> None:
    states: list[bool] = []
    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        clock = ManualClock(T0)
        check = ClockCheck((), Alarms(log, clock, lambda: None), clock, states.append)
        await check.run()
        assert check.synchronised and states == [] and alarm_names(log) == []
