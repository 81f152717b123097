"""The forwardTcpPort tunnel: a pymodbus TCP client reaching RTU devices on a pty bus (§2.8)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from _modbus_defs import definition, var
from pymodbus.client import AsyncModbusTcpClient
from waiting import wait_until

from config.model import Device, Quality, SerialPort
from pipeline.drivers.modbus.frames import mbap, parse_mbap
from pipeline.drivers.modbus.planner import plan_reads
from pipeline.drivers.modbus.rtu import ModbusRtuDriver, RtuBus
from pipeline.drivers.modbus.simulator import RtuResponder, SimulatedDevice
from pipeline.drivers.modbus.trace import FrameTrace, ModbusCounters
from pipeline.drivers.modbus.tunnel import RtuTunnel, tunnel_for


@dataclass
class Setup:
    tunnel: RtuTunnel
    bus: RtuBus
    units: dict[int, SimulatedDevice]
    traces: list[FrameTrace]


@pytest.fixture
async def setup(pty_pair: tuple[int, str]) -> AsyncIterator[Setup]:
    master, path = pty_pair
    units = {u: SimulatedDevice() for u in (1, 2)}
    for u, dev in units.items():
        dev.set_words(0, [u * 1000 + i for i in range(10)])
    responder = RtuResponder(master, units)
    responder.start()
    traces: list[FrameTrace] = []
    bus = RtuBus(SerialPort(line=1, port="SERIAL1", speed=115200), path=path,
                 trace=traces.append)
    tunnel = RtuTunnel(bus, 0, timeout_ms=100)
    await tunnel.start()
    try:
        yield Setup(tunnel, bus, units, traces)
    finally:
        await tunnel.stop()
        await bus.close()
        await responder.stop()


async def raw_request(port: int, frames: list[bytes], answers: int,
                      timeout_s: float = 3.0) -> list[tuple[int, int, bytes]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(frames))
        out = []
        async with asyncio.timeout(timeout_s):
            for _ in range(answers):
                tid, _, length, unit = parse_mbap(await reader.readexactly(7))
                out.append((tid, unit, await reader.readexactly(length - 1)))
        return out
    finally:
        writer.close()
        await writer.wait_closed()


async def test_pymodbus_client_reads_and_writes_through_the_tunnel(setup: Setup) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=setup.tunnel.port, timeout=2, retries=0)
    await client.connect()
    try:
        result = await client.read_holding_registers(2, count=3, device_id=2)
        assert not result.isError() and result.registers == [2002, 2003, 2004]
        written = await client.write_register(5, 77, device_id=1)
        assert not written.isError()
    finally:
        client.close()
    assert setup.units[1].holding[5] == 77
    # Tunnel frames appear in the port's trace as RTU frames.
    assert setup.traces[0].interface == "serial1" and setup.traces[0].data[:2] == b"\x02\x03"


async def test_answers_keep_the_clients_transaction_id(setup: Setup) -> None:
    frames = [mbap(0x1234, 1, struct.pack(">BHH", 3, 0, 1)),
              mbap(0x0042, 2, struct.pack(">BHH", 3, 1, 1))]
    answers = await raw_request(setup.tunnel.port, frames, 2)
    assert answers == [(0x1234, 1, bytes.fromhex("03 02") + (1000).to_bytes(2, "big")),
                       (0x0042, 2, bytes.fromhex("03 02") + (2001).to_bytes(2, "big"))]


async def test_silent_unit_gets_exception_0x0b(setup: Setup) -> None:
    answers = await raw_request(setup.tunnel.port, [mbap(7, 9, struct.pack(">BHH", 3, 0, 1))], 1)
    assert answers == [(7, 9, bytes((0x83, 0x0B)))]


class _FailingOnceBus(RtuBus):
    """The real bus, with one fault of ours (not a device's) injected into its next request."""

    fail_next = True

    async def transact(self, unit_id: int, pdu: bytes, timeout_ms: int, *,
                       urgent: bool = False, counters: ModbusCounters | None = None) -> bytes:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("serial driver state lost")
        return await super().transact(unit_id, pdu, timeout_ms, urgent=urgent,
                                      counters=counters)


async def test_an_unexpected_error_is_answered_0x04_and_the_tunnel_stays_up(
        pty_pair: tuple[int, str], caplog: pytest.LogCaptureFixture) -> None:
    master, path = pty_pair
    unit = SimulatedDevice()
    unit.set_words(0, [42])
    responder = RtuResponder(master, {1: unit})
    responder.start()
    bus = _FailingOnceBus(SerialPort(line=1, port="SERIAL1", speed=115200), path=path)
    tunnel = RtuTunnel(bus, 0, timeout_ms=200)
    await tunnel.start()
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    try:
        request = struct.pack(">BHH", 3, 0, 1)
        frames = [mbap(5, 1, request), mbap(6, 1, request)]
        answers = await raw_request(tunnel.port, frames, 2)
        assert answers == [(5, 1, bytes((0x83, 0x04))), (6, 1, bytes.fromhex("03 02 00 2a"))]
        assert tunnel.failures == 1
    finally:
        loop.set_exception_handler(None)
        await tunnel.stop()
        await bus.close()
        await responder.stop()
    assert unhandled == []
    assert any("serial driver state lost" in r.getMessage() for r in caplog.records
               if r.levelname == "ERROR")


async def test_broadcast_gets_no_answer_but_is_executed(setup: Setup) -> None:
    frames = [mbap(1, 0, struct.pack(">BHH", 6, 8, 99)),
              mbap(2, 1, struct.pack(">BHH", 3, 8, 1))]
    answers = await raw_request(setup.tunnel.port, frames, 1)
    assert answers == [(2, 1, bytes.fromhex("03 02 00 63"))]
    assert setup.units[2].holding[8] == 99


async def test_more_than_16_queued_requests_get_exception_0x06(setup: Setup) -> None:
    """The 17th is answered 0x06 at once; the client's next requests are taken once one of the
    16 is done (so the 18th finds room)."""
    setup.units[1].delay_s = 0.01
    frames = [mbap(tid, 1, struct.pack(">BHH", 3, 0, 1)) for tid in range(18)]
    answers = await raw_request(setup.tunnel.port, frames, 18)
    busy = [tid for tid, _, pdu in answers if pdu == bytes((0x83, 0x06))]
    good = [tid for tid, _, pdu in answers if pdu[0] == 3]
    assert busy == [16] and sorted(good) == [*range(16), 17]
    assert answers[0][0] == 16                  # at once, before any relayed answer


async def test_a_flood_answered_0x06_does_not_take_the_event_loop(setup: Setup) -> None:
    """A client sending as fast as it reads had each request past the 16 answered 0x06 at once:
    a million answers in 9 s took the event loop from the bus's timing (polls timed out, replies
    were cut into bad frames). Past one 0x06, its requests wait for room."""
    setup.units[2].delay_s = 0.02
    _, writer = await asyncio.open_connection("127.0.0.1", setup.tunnel.port)
    blob = mbap(1, 2, struct.pack(">BHH", 3, 0, 1)) * 5000
    try:
        writer.write(blob)
        await wait_until(lambda: setup.tunnel.busy_answers >= 1, what="a busy answer")
        reply = await setup.bus.transact(1, struct.pack(">BHH", 3, 0, 1), 500)
        assert reply == bytes.fromhex("03 02 03E8")
        assert setup.tunnel.busy_answers < 100, setup.tunnel.busy_answers
    finally:
        writer.close()


async def test_ninth_client_is_closed_at_once(setup: Setup) -> None:
    streams = [await asyncio.open_connection("127.0.0.1", setup.tunnel.port) for _ in range(9)]
    try:
        async with asyncio.timeout(2):
            assert await streams[8][0].read() == b""        # closed by the tunnel
        answers = await raw_request(setup.tunnel.port, [mbap(1, 1, bytes.fromhex("03 0000 0001"))],
                                    0)
        assert answers == []
        assert setup.tunnel.refused >= 1
        streams[0][1].write(mbap(3, 1, bytes.fromhex("03 0000 0001")))
        async with asyncio.timeout(2):
            header = await streams[0][0].readexactly(7)
        assert parse_mbap(header)[0] == 3
    finally:
        for _, writer in streams:
            writer.close()


async def test_tunnel_and_own_polls_share_the_bus(setup: Setup) -> None:
    driver = ModbusRtuDriver()
    driver.attach(setup.bus)
    dev = Device(line=1, index="1", interface="SERIAL1", name="d1", address=1, timeout_ms=100)
    plan = plan_reads(definition(var(1, 3, 0), var(2, 3, 1)))

    async def polls() -> list[Quality]:
        out = []
        for _ in range(10):
            readings = await driver.read(dev, plan)
            out.extend(r.quality for r in readings.values.values())
        return out

    frames = [mbap(tid, 2, struct.pack(">BHH", 3, 0, 2)) for tid in range(10)]
    own, relayed = await asyncio.gather(polls(), raw_request(setup.tunnel.port, frames, 10))
    assert set(own) == {Quality.GOOD}
    assert all(pdu == bytes.fromhex("03 04 07D0 07D1") for _, _, pdu in relayed)
    units_sent = [t.data[0] for t in setup.traces if t.direction == "=>"]
    # Neither side starved: the tunnel's unit 2 and the polls' unit 1 interleave on the bus.
    first_half = units_sent[:len(units_sent) // 2]
    assert 1 in first_half and 2 in first_half


async def test_function_without_a_known_length_ends_on_silence(setup: Setup) -> None:
    answers = await raw_request(setup.tunnel.port, [mbap(5, 2, b"\x11")], 1)
    assert answers == [(5, 2, b"\x11\x0asunpm-sim\xff")]


async def test_idle_client_is_closed(pty_pair: tuple[int, str]) -> None:
    _, path = pty_pair
    bus = RtuBus(SerialPort(line=1, port="SERIAL2", speed=115200), path=path)
    tunnel = RtuTunnel(bus, 0, idle_s=0.1)
    await tunnel.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.port)
        async with asyncio.timeout(2):
            assert await reader.read() == b""
        writer.close()
    finally:
        await tunnel.stop()
        await bus.close()


def test_tunnel_timeout_is_the_largest_device_timeout_on_its_port() -> None:
    port = SerialPort(line=1, port="SERIAL1", forward_tcp_port=5020)
    devices = [Device(line=2, index="1", interface="SERIAL1", name="a", address=1, timeout_ms=300),
               Device(line=3, index="2", interface="SERIAL1", name="b", address=2, timeout_ms=700),
               Device(line=4, index="3", interface="SERIAL2", name="c", address=1,
                      timeout_ms=5000)]
    tunnel = tunnel_for(RtuBus(port), devices)
    assert tunnel is not None and tunnel.timeout_ms == 700 and tunnel.port == 5020
    assert tunnel_for(RtuBus(SerialPort(line=1, port="SERIAL2")), devices) is None
    lonely = tunnel_for(RtuBus(SerialPort(line=1, port="SERIAL3", forward_tcp_port=1)), devices)
    assert lonely is not None and lonely.timeout_ms == 1000


async def test_a_client_with_16_requests_queued_delays_an_own_poll_by_one_request_at_most(
        setup: Setup) -> None:
    """§2.8: when both wait, tunnel and own requests alternate. A client that pipelines its 16
    requests must not put all of them ahead of the gateway's next poll request (16 device
    timeouts, 16 s with the default, lost from the poll's period)."""
    setup.units[2].delay_s = 0.02
    reader, writer = await asyncio.open_connection("127.0.0.1", setup.tunnel.port)
    try:
        writer.write(b"".join(mbap(tid, 2, struct.pack(">BHH", 3, 0, 1)) for tid in range(16)))
        await wait_until(lambda: setup.tunnel._queued == 16, what="16 tunnel requests queued")
        reply = await setup.bus.transact(1, struct.pack(">BHH", 3, 0, 1), 500)
        assert reply == bytes.fromhex("03 02 03E8")
        async with asyncio.timeout(10):
            for _ in range(16):             # answers or, on a loaded box, 0x0B timeouts
                length = parse_mbap(await reader.readexactly(7))[2]
                await reader.readexactly(length - 1)
    finally:
        writer.close()
    units_sent = [t.data[0] for t in setup.traces if t.direction == "=>"]
    assert units_sent.index(1) <= 1, units_sent


async def test_a_broadcast_past_the_queue_limit_gets_no_answer(setup: Setup) -> None:
    setup.units[1].delay_s = 0.02
    frames = [mbap(tid, 1, struct.pack(">BHH", 3, 0, 1)) for tid in range(16)]
    frames.append(mbap(99, 0, struct.pack(">BHH", 6, 8, 5)))
    frames.append(mbap(100, 1, struct.pack(">BHH", 3, 0, 1)))
    answers = await raw_request(setup.tunnel.port, frames, 17)
    assert [tid for tid, _, _ in answers if tid in (99, 100)] == [100]


async def test_requests_of_a_client_gone_are_not_sent(setup: Setup) -> None:
    """A client that queues 16 requests and leaves must not keep the bus busy for nothing (16
    device timeouts taken from the polls), again at each connection."""
    setup.units[1].delay_s = 0.05
    _, writer = await asyncio.open_connection("127.0.0.1", setup.tunnel.port)
    writer.write(b"".join(mbap(tid, 1, struct.pack(">BHH", 3, 0, 1)) for tid in range(16)))
    await wait_until(lambda: setup.tunnel._queued == 16, what="16 tunnel requests queued")
    writer.close()
    await wait_until(lambda: setup.tunnel._queued == 0, what="the queue emptied")
    sent = [t for t in setup.traces if t.direction == "=>"]
    assert len(sent) <= 4, len(sent)            # the one on the wire, a loaded box's lag: not 16


async def test_a_client_that_sends_without_reading_is_not_buffered_without_end(
        setup: Setup) -> None:
    """Each request past the 16 queued is answered 0x06 at once: a client that never reads
    had its answers kept in the gateway's memory (14 MB in 8 s measured, without bound)."""
    sock = socket.create_connection(("127.0.0.1", setup.tunnel.port))
    sock.setblocking(False)
    blob = mbap(1, 1, struct.pack(">BHH", 3, 0, 1)) * 10000
    sent = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 6
    try:
        while loop.time() < deadline and sent < 32 << 20:
            with contextlib.suppress(BlockingIOError):
                sent += sock.send(blob)
            await asyncio.sleep(0.001)
        client = next(iter(setup.tunnel.clients))
        assert client.transport is not None
        assert client.transport.get_write_buffer_size() < 1 << 20, (
            sent, client.transport.get_write_buffer_size())
    finally:
        sock.close()


async def test_a_poll_right_after_a_relayed_broadcast_waits_the_turnaround_delay(
        setup: Setup) -> None:
    """Modbus serial line: after a broadcast the master waits a turnaround delay so that units
    execute it; a poll sent 2 ms after a power limit broadcast reached a unit still busy with
    it, timed out and cost the device a poll."""
    setup.units[1].delay_s = 0.1
    answers = await raw_request(setup.tunnel.port, [mbap(1, 0, struct.pack(">BHH", 6, 8, 50))], 0)
    assert answers == []
    await wait_until(lambda: any(t.direction == "=>" for t in setup.traces),
                     what="the broadcast sent")
    reply = await setup.bus.transact(1, struct.pack(">BHH", 3, 8, 1), 500)
    assert reply == bytes.fromhex("03 02 0032")
