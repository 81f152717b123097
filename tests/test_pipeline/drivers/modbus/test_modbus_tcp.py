"""Modbus TCP driver against real peers on 127.0.0.1 (docs/behaviour.md §2.3, §2.5, §2.7)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from _modbus_defs import definition, var
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus_peer import pymodbus_tcp
from waiting import wait_until

from config.model import DataType, Device, Quality
from pipeline.clock import ManualClock
from pipeline.drivers._base import DeviceError, ModbusRequestError, Reading, Readings, ReadPlan
from pipeline.drivers.modbus.frames import mbap, parse_mbap, read_request
from pipeline.drivers.modbus.planner import plan_reads
from pipeline.drivers.modbus.simulator import SimulatedDevice, TcpSimulator
from pipeline.drivers.modbus.tcp import ModbusTcpDriver, TcpConnection
from pipeline.drivers.modbus.trace import Direction, FrameTrace, TraceError

T0_NS = 1_767_225_600 * 10**9               # 2026-01-01 00:00 UTC


def device(port: int, unit: int, index: str = "1", timeout_ms: int = 200,
           parameters: str = "") -> Device:
    return Device(line=1, index=index, interface=f"127.0.0.1:{port}", name=f"dev{index}",
                  address=unit, timeout_ms=timeout_ms, parameters=parameters)


@pytest.fixture
async def pymodbus_server() -> AsyncIterator[int]:
    image = [0] * 300
    image[10:14] = [1234, 0xFFFE, 0x3F8C, 0xCCCD]
    image[20:24] = [0x534D, 0x4100, 0, 0]
    context = ModbusServerContext(devices={
        3: ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, image),
                               ir=ModbusSequentialDataBlock(1, list(range(300))),
                               co=ModbusSequentialDataBlock(1, [1, 0, 1, 1] * 10))},
        single=False)
    async with pymodbus_tcp(context) as port:
        yield port


async def test_reads_every_type_from_a_pymodbus_server(pymodbus_server: int) -> None:
    d = definition(var(1, 3, 10, sf=2), var(2, 3, 11, DataType.I16), var(3, 3, 12, DataType.F32),
                   var(4, 3, 20, DataType.STRING, string_bytes=8), var(5, 4, 200),
                   var(6, 1, 2, None), var(7, 1, 1, None))
    driver = ModbusTcpDriver()
    try:
        readings = await driver.read(device(pymodbus_server, 3), plan_reads(d))
    finally:
        await driver.close()
    assert dict(readings.values) == {
        1: Reading(Decimal("12.34"), Quality.GOOD), 2: Reading(-2, Quality.GOOD),
        3: Reading(1.1, Quality.GOOD), 4: Reading("SMA", Quality.GOOD),
        5: Reading(200, Quality.GOOD), 6: Reading(1, Quality.GOOD), 7: Reading(0, Quality.GOOD)}
    assert readings.requests == 4 and readings.reconnected


async def test_write_then_read_back_on_a_pymodbus_server(pymodbus_server: int) -> None:
    d = definition(var(1, 3, 30, DataType.U32), var(2, 1, 5, None), var(3, 3, 40))
    driver = ModbusTcpDriver()
    dev = device(pymodbus_server, 3)
    try:
        await driver.write(dev, d.variable(1), 123456)
        await driver.write(dev, d.variable(2), 1)
        await driver.write(dev, d.variable(3), 7)
        readings = await driver.read(dev, plan_reads(d))
    finally:
        await driver.close()
    assert [readings.values[i].value for i in (1, 2, 3)] == [123456, 1, 7]


async def test_late_answer_is_discarded_and_never_taken_for_the_next_request() -> None:
    sim_dev = SimulatedDevice()
    sim_dev.set_words(0, [111, 222])
    traces: list[FrameTrace] = []
    async with TcpSimulator({1: sim_dev}) as sim:
        conn = TcpConnection("127.0.0.1", sim.port, trace=traces.append)
        try:
            sim_dev.delay_s = 0.15                    # 1.5 x the 100 ms timeout
            with pytest.raises(ModbusRequestError) as err:
                await conn.read_registers(1, 3, 0, 1, 100)
            assert err.value.quality is Quality.TIMEOUT
            sim_dev.delay_s = 0.0
            # The device answers in order: first the late reply (address 0), then this one.
            assert await conn.read_registers(1, 3, 1, 1, 300) == [222]
            assert conn.late_frames == 1
            assert [t.error for t in traces].count(TraceError.DISCARDED) == 1
            assert [t.error for t in traces].count(TraceError.TIMEOUT) == 1
        finally:
            await conn.close()


async def test_answer_for_the_wrong_unit_is_discarded_and_times_out() -> None:
    sim_dev = SimulatedDevice(answer_unit=9)
    async with TcpSimulator({4: sim_dev}) as sim:
        conn = TcpConnection("127.0.0.1", sim.port)
        try:
            with pytest.raises(ModbusRequestError) as err:
                await conn.read_registers(4, 3, 0, 1, 100)
            assert err.value.quality is Quality.TIMEOUT and conn.late_frames == 1
        finally:
            await conn.close()


async def test_a_late_answer_on_a_shared_connection_counts_for_the_device_it_answers() -> None:
    units = {1: SimulatedDevice(holding={0: 10}), 2: SimulatedDevice(holding={0: 20})}
    d = definition(var(1, 3, 0))
    async with TcpSimulator(units) as sim:
        driver = ModbusTcpDriver()
        slow, other = device(sim.port, 1, "1", timeout_ms=100), device(sim.port, 2, "2", 2000)
        try:
            assert (await driver.read(slow, plan_reads(d))).values[1] == Reading(10, Quality.GOOD)
            units[1].delay_s = 0.15                       # 1.5 x its timeout
            late = await driver.read(slow, plan_reads(d))
            assert late.values[1].quality is Quality.TIMEOUT
            units[1].delay_s = 0.0
            # The peer answers in order: unit 1's late reply comes while unit 2 is polled.
            assert (await driver.read(other, plan_reads(d))).values[1] == Reading(20, Quality.GOOD)
            conn = driver.connection("127.0.0.1", sim.port)
            assert conn.late_frames == 1
            # The defect counted it for unit 2, the device polled when it arrived.
            assert (driver.counters("1").late_frames, driver.counters("2").late_frames) == (1, 0)
        finally:
            await driver.close()


async def test_a_late_answer_to_a_discovery_probe_counts_for_no_device() -> None:
    units = {1: SimulatedDevice(holding={0: 10}, delay_s=0.15), 2: SimulatedDevice(holding={0: 20})}
    async with TcpSimulator(units) as sim:
        driver = ModbusTcpDriver()
        polled = device(sim.port, 2, "2", 2000)
        try:
            conn = driver.connection("127.0.0.1", sim.port)
            # A probe of the discovery (or a tunnel's request) goes through the same connection.
            with pytest.raises(ModbusRequestError):
                await conn.read_registers(1, 3, 0, 1, 100)
            readings = await driver.read(polled, plan_reads(definition(var(1, 3, 0))))
            assert readings.values[1] == Reading(20, Quality.GOOD)
            assert conn.late_frames == 1 and driver.counters("2").late_frames == 0
        finally:
            await driver.close()


async def test_units_share_one_connection() -> None:
    units = {u: SimulatedDevice() for u in (1, 2, 3)}
    for u, dev in units.items():
        dev.set_words(0, [u * 10])
    d = definition(var(1, 3, 0))
    async with TcpSimulator(units) as sim:
        driver = ModbusTcpDriver()
        try:
            results = await asyncio.gather(*(driver.read(device(sim.port, u, str(u)), plan_reads(d))
                                             for u in units))
            assert [r.values[1].value for r in results] == [10, 20, 30]
            assert len(driver._connections) == 1
        finally:
            await driver.close()


async def _polled_twice(sim_dev: SimulatedDevice, plan: ReadPlan) -> tuple[Readings, Readings]:
    """Two polls of unit 1 of a simulator serving `sim_dev`: the first meets a refused read,
    the second shows what the driver kept of it."""
    async with TcpSimulator({1: sim_dev}) as sim:
        driver = ModbusTcpDriver()
        try:
            first = await driver.read(device(sim.port, 1), plan)
            second = await driver.read(device(sim.port, 1), plan)
        finally:
            await driver.close()
    return first, second


async def test_exception_on_a_merged_read_splits_per_variable_for_that_device() -> None:
    sim_dev = SimulatedDevice(strict_holes=True)
    sim_dev.set_words(0, [1, 2])
    sim_dev.set_words(3, [4])            # address 2 is a hole the device refuses
    d = definition(var(1, 3, 0), var(2, 3, 1), var(3, 3, 3))
    plan = plan_reads(d, max_gap=5)
    assert len(plan.requests) == 1
    first, second = await _polled_twice(sim_dev, plan)
    assert {i: r.value for i, r in first.values.items()} == {1: 1, 2: 2, 3: 4}
    assert first.requests == 4 and second.requests == 3
    assert all(r.quality is Quality.GOOD for r in second.values.values())


async def test_exception_on_a_merged_read_splits_that_read_only() -> None:
    # An inverter with a hole in one model: its other models' reads stay whole, or a poll of
    # some hundred variables becomes some hundred requests (on a bus, seconds per poll).
    sim_dev = SimulatedDevice(strict_holes=True)
    sim_dev.set_words(0, [1, 2])
    sim_dev.set_words(3, [4])            # address 2 is a hole the device refuses
    sim_dev.set_words(200, [5, 6, 7])
    d = definition(var(1, 3, 0), var(2, 3, 1), var(3, 3, 3), var(4, 3, 200), var(5, 3, 201),
                   var(6, 3, 202))
    plan = plan_reads(d, max_gap=5)
    assert [(r.address, r.count) for r in plan.requests] == [(0, 4), (200, 3)]
    first, second = await _polled_twice(sim_dev, plan)
    expected = {1: 1, 2: 2, 3: 4, 4: 5, 5: 6, 6: 7}
    assert {i: r.value for i, r in first.values.items()} == expected
    assert {i: r.value for i, r in second.values.items()} == expected
    assert (first.requests, second.requests) == (5, 4)


async def test_other_exceptions_fail_the_poll_with_quality_2_and_keep_the_plan() -> None:
    sim_dev = SimulatedDevice(exception=6)
    d = definition(var(1, 3, 0), var(2, 3, 1))
    plan = plan_reads(d)
    async with TcpSimulator({1: sim_dev}) as sim:
        driver = ModbusTcpDriver()
        try:
            busy = await driver.read(device(sim.port, 1), plan)
            sim_dev.exception = None
            ok = await driver.read(device(sim.port, 1), plan)
        finally:
            await driver.close()
    assert {r.quality for r in busy.values.values()} == {Quality.EXCEPTION}
    assert ok.requests == 1 and {r.quality for r in ok.values.values()} == {Quality.GOOD}
    assert driver.counters("1").qualities[Quality.EXCEPTION] == 2


async def test_three_timeouts_close_and_polls_fail_with_quality_5_during_backoff() -> None:
    clock = ManualClock(wall_ns=T0_NS)
    sim_dev = SimulatedDevice(holding={0: 7})
    plan = plan_reads(definition(var(1, 3, 0)))
    sim = TcpSimulator({1: sim_dev})
    port = await sim.start()
    driver = ModbusTcpDriver(clock=clock)
    dev = device(port, 1, timeout_ms=50)
    try:
        assert (await driver.read(dev, plan)).values[1].quality is Quality.GOOD
        sim_dev.delay_s = 3600.0              # the unit that answered stops answering
        for sent in (2, 3, 4):
            read = asyncio.create_task(driver.read(dev, plan))
            await wait_until(lambda: sim_dev.requests == sent)     # noqa: B023 - awaited here
            await clock.advance(0.049)
            assert not read.done()
            await clock.advance(0.001)        # the 50 ms timeout
            assert (await read).values[1].quality is Quality.TIMEOUT
        conn = driver.connection("127.0.0.1", port)
        assert not conn.connected
        await sim.stop()
        # Reconnection is tried at once (refused), then after 1 s ±10 %: polls fail with quality 5
        # meanwhile without trying, even once the device is back.
        assert (await driver.read(dev, plan)).values[1].quality is Quality.DISCONNECTED
        sim = TcpSimulator({1: sim_dev}, port=port)
        await sim.start()
        sim_dev.delay_s = 0.0
        await clock.advance(0.89)
        assert (await driver.read(dev, plan)).values[1].quality is Quality.DISCONNECTED
        assert not conn.connected
        await clock.advance(0.22)
        back = await driver.read(dev, plan)
        assert back.values[1] == Reading(7, Quality.GOOD) and back.reconnected
    finally:
        await driver.close()
        await sim.stop()


async def test_timeouts_of_a_unit_that_never_answered_keep_the_shared_connection() -> None:
    d = definition(var(1, 3, 0))
    async with TcpSimulator({1: SimulatedDevice(holding={0: 7})}) as sim:
        driver = ModbusTcpDriver()
        present, absent = device(sim.port, 1), device(sim.port, 2, index="2", timeout_ms=30)
        try:
            assert (await driver.read(present, plan_reads(d))).values[1] == Reading(7, Quality.GOOD)
            conn = driver.connection("127.0.0.1", sim.port)
            generation = conn.generation
            for _ in range(6):                # a discovery sweep over empty unit ids
                missing = await driver.read(absent, plan_reads(d))
                assert missing.values[1].quality is Quality.TIMEOUT
            assert conn.connected and conn.generation == generation
            back = await driver.read(present, plan_reads(d))
            assert back.values[1] == Reading(7, Quality.GOOD) and not back.reconnected
        finally:
            await driver.close()


async def test_discovery_probes_a_polled_unit_ignores_never_close_the_shared_connection() -> None:
    # Discovery shares the polls' connection; a polled unit that ignores reads of registers it
    # lacks (40000, 50000, past its map) times out those probes, which say nothing of the peer.

    async def answer_address_0_only(reader: asyncio.StreamReader,
                                    writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):     # the client closing
            while header := await reader.readexactly(7):
                tid, _, length, unit = parse_mbap(header)
                pdu = await reader.readexactly(length - 1)
                if pdu[1:3] == b"\x00\x00":
                    writer.write(mbap(tid, unit, b"\x03\x02\x00\x07"))

    server = await asyncio.start_server(answer_address_0_only, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    driver = ModbusTcpDriver()
    polled = device(port, 1)
    try:
        assert (await driver.read(polled, plan_reads(definition(var(1, 3, 0))))).values[1] == \
            Reading(7, Quality.GOOD)
        conn = driver.connection("127.0.0.1", port)
        generation = conn.generation
        for address in (40000, 50000, 40002, 40070):
            with pytest.raises(ModbusRequestError) as err:
                await conn.read_registers(1, 3, address, 2, 30)
            assert err.value.quality is Quality.TIMEOUT
        assert conn.connected and conn.generation == generation
        back = await driver.read(polled, plan_reads(definition(var(1, 3, 0))))
        assert back.values[1] == Reading(7, Quality.GOOD) and not back.reconnected
    finally:
        await driver.close()
        server.close()


async def test_reconnects_after_the_peer_drops_the_connection() -> None:
    sim_dev = SimulatedDevice()
    sim_dev.set_words(0, [5])
    d = definition(var(1, 3, 0))
    async with TcpSimulator({1: sim_dev}) as sim:
        driver = ModbusTcpDriver()
        dev = device(sim.port, 1)
        try:
            first = await driver.read(dev, plan_reads(d))
            steady = await driver.read(dev, plan_reads(d))
            conn = driver.connection("127.0.0.1", sim.port)
            sim.drop_clients()                       # the device drops its idle client
            await wait_until(lambda: not conn.connected)
            back = await driver.read(dev, plan_reads(d))
            sim_dev.delay_s = 0.3                    # now it dies in the middle of a request
            read = asyncio.create_task(driver.read(dev, plan_reads(d)))
            await wait_until(lambda: sim_dev.requests == 4)    # the request is on the wire
            sim.drop_clients()
            lost = await read
        finally:
            await driver.close()
    assert first.reconnected and first.values[1].value == 5 and not steady.reconnected
    # Reconnected at once: the poll after an idle drop is good, and marked as a return.
    assert back.values[1] == Reading(5, Quality.GOOD) and back.reconnected
    assert lost.values[1] == Reading(None, Quality.DISCONNECTED)


async def test_keep_alive_0_closes_after_each_poll_without_counting_a_return() -> None:
    sim_dev = SimulatedDevice()
    d = definition(var(1, 3, 0))
    async with TcpSimulator({1: sim_dev}) as sim:
        driver = ModbusTcpDriver()
        dev = device(sim.port, 1, parameters="0")
        try:
            first = await driver.read(dev, plan_reads(d))
            assert not driver.connection("127.0.0.1", sim.port).connected
            second = await driver.read(dev, plan_reads(d))
        finally:
            await driver.close()
    assert first.reconnected and not second.reconnected
    assert second.values[1].quality is Quality.GOOD


async def test_inter_frame_silence_spaces_requests() -> None:
    clock = ManualClock(wall_ns=T0_NS)
    traces: list[FrameTrace] = []
    async with TcpSimulator({1: SimulatedDevice()}) as sim:
        conn = TcpConnection("127.0.0.1", sim.port, inter_frame_ms=50, trace=traces.append,
                             clock=clock)
        try:
            await conn.read_registers(1, 3, 0, 1, 500)
            second = asyncio.create_task(conn.read_registers(1, 3, 0, 1, 500))
            await clock.advance(0.049)
            assert [t.direction for t in traces] == [Direction.SENT, Direction.RECEIVED]
            await clock.advance(0.001)        # 50 ms after the answer
            assert await second == [0]
            assert [t.direction for t in traces].count(Direction.SENT) == 2
        finally:
            await conn.close()


async def test_write_refusals_name_the_device() -> None:
    sim_dev = SimulatedDevice()
    d = definition(var(1, 3, 0), var(2, 3, 1, sf=3, info4="SF"), var(3, 3, 2, DataType.I16))
    async with TcpSimulator({1: sim_dev}) as sim:
        driver = ModbusTcpDriver()
        dev = device(sim.port, 1)
        try:
            with pytest.raises(DeviceError, match=r"^writeVariable: dev1: 150000 is out of range "
                                                  r"for U16$"):
                await driver.write(dev, d.variable(1), 150000)
            with pytest.raises(DeviceError, match=r"^writeVariable: dev1: scale factor SF not "
                                                  r"read yet$"):
                await driver.write(dev, d.variable(2), Decimal("1.5"))
            sim_dev.set_words(2, [0xFFFF])          # sf = -1
            await driver.read(dev, plan_reads(d))
            await driver.write(dev, d.variable(2), Decimal("12.3"))
            assert sim_dev.holding[1] == 123
        finally:
            await driver.close()


async def test_a_write_answers_the_value_the_registers_were_sent() -> None:
    # `writeVariable`'s answer names what was written: a value the register's type and scale
    # factor round is answered rounded (55.55 at sf -1 sends 556: 55.6), never as asked.
    sim_dev = SimulatedDevice()
    d = definition(var(1, 3, 0, sf=3, info4="SF"), var(2, 3, 1), var(3, 3, 2, DataType.I16),
                   var(4, 3, 10, DataType.F32))
    async with TcpSimulator({1: sim_dev}) as sim:
        driver = ModbusTcpDriver()
        dev = device(sim.port, 1)
        try:
            sim_dev.set_words(2, [0xFFFF])          # sf = -1
            await driver.read(dev, plan_reads(d))
            assert await driver.write(dev, d.variable(1), Decimal("55.55")) == Decimal("55.6")
            assert sim_dev.holding[0] == 556
            assert await driver.write(dev, d.variable(2), Decimal("7.5")) == 8
            assert await driver.write(dev, d.variable(4), 1.1) == 1.1
        finally:
            await driver.close()


async def test_request_pdu_is_framed_with_mbap() -> None:
    traces: list[FrameTrace] = []
    async with TcpSimulator({0x7E: SimulatedDevice()}) as sim:
        conn = TcpConnection("127.0.0.1", sim.port, trace=traces.append)
        try:
            await conn.transact(0x7E, read_request(3, 40084, 2), 500)
        finally:
            await conn.close()
    assert traces[0].data[2:] == bytes.fromhex("0000 0006 7E 03 9C94 0002")
    assert traces[1].data[7:9] == bytes.fromhex("03 04")


async def test_newer_write_replaces_one_still_queued_and_writes_go_before_polls() -> None:
    sim_dev = SimulatedDevice(delay_s=0.05)
    d = definition(var(1, 3, 0), var(2, 3, 1))
    traces: list[FrameTrace] = []
    async with TcpSimulator({1: sim_dev}) as sim:
        driver = ModbusTcpDriver(trace=traces.append)
        dev = device(sim.port, 1, timeout_ms=1000)
        try:
            busy = asyncio.create_task(driver.read(dev, plan_reads(d, max_gap=0)))
            await wait_until(lambda: sim_dev.requests > 0)  # the poll's request is on the wire
            poll = asyncio.create_task(driver.read(dev, plan_reads(definition(var(1, 3, 0)))))
            await asyncio.sleep(0)
            older = asyncio.create_task(driver.write(dev, d.variable(2), 11))
            await asyncio.sleep(0)
            newer = asyncio.create_task(driver.write(dev, d.variable(2), 22))
            results = await asyncio.gather(busy, poll, older, newer, return_exceptions=True)
        finally:
            await driver.close()
    assert isinstance(results[2], DeviceError)
    assert str(results[2]) == "writeVariable: dev1: v2: replaced by a newer write"
    assert results[3] == 22
    assert sim_dev.holding[1] == 22
    sent = [t.data[7] for t in traces if t.direction == "=>"]
    assert sent[:2] == [3, 6] and sent.count(6) == 1      # the write overtook the queued poll
    # The queued poll read address 0 after the write had been sent and read back.
    poll_readings = results[1]
    assert not isinstance(poll_readings, BaseException)
    assert poll_readings.values[1].quality is Quality.GOOD


async def test_closing_the_link_fails_the_request_on_the_wire_instead_of_leaving_it_waiting(
        ) -> None:
    sim_dev = SimulatedDevice()
    sim_dev.delay_s = 3.0                          # answers long after the close
    async with TcpSimulator({1: sim_dev}) as sim:
        conn = TcpConnection("127.0.0.1", sim.port)
        request = asyncio.create_task(conn.read_registers(1, 3, 0, 1, 5000))
        try:
            await wait_until(lambda: not conn.idle)    # the request is on the wire
            await conn.close()
            async with asyncio.timeout(1):
                with pytest.raises(ModbusRequestError) as err:
                    await request
            assert err.value.quality is Quality.DISCONNECTED
        finally:
            request.cancel()
            await asyncio.gather(request, return_exceptions=True)
            await conn.close()


async def test_a_peer_dropping_every_connection_is_paced_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    # A device whose client slots are taken accepts and closes at once: that is one outage,
    # retried 1, 2, 4 … s apart, not a recovery and a loss at every request.
    clock = ManualClock(wall_ns=T0_NS)
    accepted = 0

    async def accept_and_close(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()

    server = await asyncio.start_server(accept_and_close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    plan = plan_reads(definition(var(1, 3, 0), var(2, 3, 50)))
    driver = ModbusTcpDriver(clock=clock)
    dev = device(port, 1)
    sim_dev = SimulatedDevice(holding={0: 7, 50: 8})
    sim = TcpSimulator({1: sim_dev}, port=port)
    caplog.set_level("INFO", logger="sunpm.modbus")
    try:
        for _ in range(3):
            polled = await driver.read(dev, plan)
            assert {r.quality for r in polled.values.values()} == {Quality.DISCONNECTED}
        assert accepted == 1
        await clock.advance(1.2)
        assert (await driver.read(dev, plan)).values[1].quality is Quality.DISCONNECTED
        assert accepted == 2
        server.close()
        await server.wait_closed()
        await sim.start()
        await clock.advance(2.3)
        back = await driver.read(dev, plan)
        assert back.values[1] == Reading(7, Quality.GOOD) and back.reconnected
    finally:
        await driver.close()
        await sim.stop()
        server.close()
    lines = [(r.levelname, r.getMessage().split(" (")[0]) for r in caplog.records]
    assert lines == [("WARNING", f"127.0.0.1:{port}: connection lost"),
                     ("INFO", f"127.0.0.1:{port}: connection restored")]


async def test_a_unit_silent_from_its_first_read_costs_one_timeout_per_poll() -> None:
    # A switched-off inverter behind a gateway: its other reads would each cost a timeout too,
    # overrunning the connection for the units that answer.
    plan = plan_reads(definition(var(1, 3, 0), var(2, 3, 50), var(3, 4, 7)))
    assert len(plan.requests) == 3
    async with TcpSimulator({1: SimulatedDevice(holding={0: 1, 50: 2}, input={7: 3})}) as sim:
        driver = ModbusTcpDriver()
        try:
            off = await driver.read(device(sim.port, 2, index="2", timeout_ms=50), plan)
            on = await driver.read(device(sim.port, 1), plan)
        finally:
            await driver.close()
    assert off.requests == 1
    assert [r.quality for r in off.values.values()] == [Quality.TIMEOUT] * 3
    assert on.requests == 3 and [r.value for r in on.values.values()] == [1, 2, 3]


@pytest.mark.parametrize("code", [0x0A, 0x0B])
async def test_a_gateway_reporting_its_unit_silent_costs_one_request_per_poll(code: int) -> None:
    # A Modbus TCP gateway answers 0x0B (target failed to respond) after its own serial
    # timeout, 0x0A when it has no path to the unit: the unit is silent, like one that times
    # out. Each further read would cost that wait again.
    plan = plan_reads(definition(var(1, 3, 0), var(2, 3, 50), var(3, 4, 7)))
    assert len(plan.requests) == 3
    gateway_says_off = SimulatedDevice(exception=code, delay_s=0.05)
    async with TcpSimulator({1: SimulatedDevice(holding={0: 1, 50: 2}, input={7: 3}),
                             2: gateway_says_off}) as sim:
        driver = ModbusTcpDriver()
        try:
            off = await driver.read(device(sim.port, 2, index="2"), plan)
            on = await driver.read(device(sim.port, 1), plan)
        finally:
            await driver.close()
    assert (off.requests, gateway_says_off.requests) == (1, 1)
    assert [r.quality for r in off.values.values()] == [Quality.EXCEPTION] * 3
    assert on.requests == 3 and [r.value for r in on.values.values()] == [1, 2, 3]


async def test_a_unit_that_answered_in_the_poll_keeps_being_read_after_a_timeout() -> None:
    # Some devices ignore reads of registers they lack instead of answering an exception.

    async def answer_address_0_only(reader: asyncio.StreamReader,
                                    writer: asyncio.StreamWriter) -> None:
        while header := await reader.readexactly(7):
            tid, _, length, unit = parse_mbap(header)
            pdu = await reader.readexactly(length - 1)
            if pdu[1:3] != b"\x00\x00":
                continue
            count = int.from_bytes(pdu[3:5], "big")
            writer.write(mbap(tid, unit, bytes((pdu[0], 2 * count)) + b"\x00\x09" * count))

    server = await asyncio.start_server(answer_address_0_only, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    plan = plan_reads(definition(var(1, 3, 0), var(2, 3, 50), var(3, 4, 0)))
    driver = ModbusTcpDriver()
    try:
        polled = await driver.read(device(port, 1, timeout_ms=50), plan)
    finally:
        await driver.close()
        server.close()
    assert polled.requests == 3
    assert polled.values[1] == Reading(9, Quality.GOOD)
    assert polled.values[2] == Reading(None, Quality.TIMEOUT)
    assert polled.values[3] == Reading(9, Quality.GOOD)


async def test_a_peer_dropping_its_idle_client_logs_nothing_when_it_takes_it_back(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="sunpm.modbus")
    plan = plan_reads(definition(var(1, 3, 0)))
    sim_dev = SimulatedDevice(holding={0: 5})
    sim = TcpSimulator({1: sim_dev})
    port = await sim.start()
    driver = ModbusTcpDriver()
    dev = device(port, 1)
    try:
        await driver.read(dev, plan)
        conn = driver.connection("127.0.0.1", port)
        for _ in range(3):                    # at every poll cycle
            sim.drop_clients()
            await wait_until(lambda: not conn.connected)
            back = await driver.read(dev, plan)
            assert back.values[1] == Reading(5, Quality.GOOD) and back.reconnected
        assert [r.levelname for r in caplog.records] == ["DEBUG"] * 3
        sim.drop_clients()
        await wait_until(lambda: not conn.connected)
        await sim.stop()                      # this time it is gone
        assert (await driver.read(dev, plan)).values[1].quality is Quality.DISCONNECTED
    finally:
        await driver.close()
        await sim.stop()
    assert [r.levelname for r in caplog.records] == ["DEBUG"] * 4 + ["WARNING"]
    assert caplog.records[-1].getMessage().startswith(f"127.0.0.1:{port}: connection lost (")
