"""Frame trace captures: the `log` command's semantics, a Modbus TCP poll traced into the store,
and a file-server session delivering `<uid>_ethernet_<ts>.log.gz` (docs/formats.md §11)."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import os
import re
import time
import tty
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus_peer import pymodbus_tcp

from config import load_site, parse_config_ini, render_config_ini
from config.defaults import default_files
from config.model import (
    Action,
    ByteOrder,
    DataType,
    DefinitionFile,
    Device,
    ModbusPoint,
    Protocol,
    Quality,
    RegisterKind,
    SerialPort,
    Variable,
)
from exporters.outbox import Outbox
from exporters.rendering.source import store_source
from exporters.retention import traces_delivered
from exporters.session import FileServerSession, Trigger
from exporters.transports import FileTransport, open_transport
from exporters.views.context import Dates
from exporters.views.traces import trace_lines
from pipeline.drivers.modbus.frames import crc16
from pipeline.drivers.modbus.planner import plan_reads
from pipeline.drivers.modbus.rtu import ModbusRtuDriver, RtuBus
from pipeline.drivers.modbus.simulator import RtuResponder, SimulatedDevice
from pipeline.drivers.modbus.tcp import ModbusTcpDriver
from pipeline.drivers.modbus.trace import Direction, FrameTrace, TraceError, format_trace_line
from pipeline.traces import TraceCapture, TraceCaptureError
from store import Log, StoreOptions
from store.delivery import FILE_SERVER_STREAMS, DeliveryState, Stream
from store.traces import TraceEntry, TraceOptions, TraceStore

UID = "WPMTEST01"
ZONE = "Europe/Paris"
MIN = 60 * 1_000_000_000
LINE = re.compile(r"^\d\d/\d\d/\d{4} \d\d:\d\d:\d\d\.\d{3};(\*\*\* [A-Z ]+ \*\*\* )?(=>|<=) "
                  r"127\.0\.0\.1:\d+ ([0-9A-F]{2} )*[0-9A-F]{2}$")


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def frame(ts_ns: int, interface: str = "ethernet") -> FrameTrace:
    return FrameTrace(ts_ns=ts_ns, interface=interface, direction=Direction.SENT,
                      data=b"\x00\x01", peer="127.0.0.1:502")


# --------------------------------------------------------------------------- capture semantics


def test_a_capture_takes_its_interface_only_and_ends_after_its_duration(tmp_path: Path) -> None:
    clock = Clock(10**18)
    with TraceStore.open(tmp_path) as traces:
        capture = TraceCapture(traces, clock_ns=clock)
        capture.hook(frame(clock.now))                       # nothing running: dropped
        run = capture.start("ethernet", 2)
        assert run is not None and run.end_ns == clock.now + 2 * MIN
        capture.hook(frame(clock.now))
        capture.hook(frame(clock.now, "serial1"))            # another interface: dropped
        clock.now += 2 * MIN - 1
        capture.hook(frame(clock.now))
        assert capture.active() == ["ethernet"]
        clock.now += 1
        capture.hook(frame(clock.now))                       # at the end: over
        assert capture.active() == []
        traces.flush()
        assert [e.ts_ns for e in traces.entries("ethernet")] == [10**18, 10**18 + 2 * MIN - 1]
        assert traces.entries("serial1") == []


def test_a_new_log_resets_the_end_and_duration_zero_stops(tmp_path: Path) -> None:
    clock = Clock(10**18)
    with TraceStore.open(tmp_path) as traces:
        capture = TraceCapture(traces, clock_ns=clock)
        capture.start("io", 10)
        clock.now += 9 * MIN
        run = capture.start("io", 10)
        assert run is not None and run.end_ns == clock.now + 10 * MIN
        capture.io_poll(clock.now, [("AI1", "12.25"), ("RELAY", "0")])
        assert capture.start("io", 0) is None
        capture.io_poll(clock.now + 1, [("AI1", "1")])
        traces.flush()
        assert traces.entries("io") == [TraceEntry(ts_ns=clock.now, interface="io",
                                                   channels=(("AI1", "12.25"), ("RELAY", "0")))]


@pytest.mark.parametrize(("interface", "duration", "message"), [
    ("ethernet1", 10, "log: unknown interface 'ethernet1'"),
    ("tic", 1441, "log: duration must be 0..1440 minutes, got 1441"),
    ("tic", -1, "log: duration must be 0..1440 minutes, got -1"),
    ("tic", True, "log: duration must be 0..1440 minutes, got True"),
])
def test_a_bad_log_command_is_refused_in_one_line(tmp_path: Path, interface: str,
                                                  duration: int, message: str) -> None:
    with TraceStore.open(tmp_path) as traces:
        with pytest.raises(TraceCaptureError) as err:
            TraceCapture(traces).start(interface, duration)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_run_stops_at_its_byte_cap(tmp_path: Path) -> None:
    with TraceStore.open(tmp_path) as traces:
        capture = TraceCapture(traces, run_cap_bytes=5_000)
        run = capture.start("tic", 10)
        assert run is not None
        for k in range(1000):
            capture.hook(FrameTrace(ts_ns=10**18 + k, interface="tic",
                                    direction=Direction.RECEIVED, data=bytes(20)))
        assert run.stopped_at_cap and capture.active() == []
        assert 5_000 <= run.written_bytes < 5_200
        traces.flush()
        assert len(traces.entries("tic")) == run.entries < 1000


# --------------------------------------------------------------------------- real peers


@pytest.fixture
async def modbus_port() -> AsyncIterator[int]:
    context = ModbusServerContext(devices={
        126: ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, [0x07F9, 0, 42, 7] * 25))},
        single=False)
    async with pymodbus_tcp(context) as port:
        yield port


def u16(index: int, address: int) -> Variable:
    point = ModbusPoint(kind=RegisterKind.HOLDING_REGISTER, address=address, data_type=DataType.U16,
                        byte_order=ByteOrder.BIG_ENDIAN)
    return Variable(line=index + 1, index=index, info1="3", info2=str(address), info3="U16",
                    info4="", name=f"v{index}", tag="", coef_a=Decimal(1), coef_b=Decimal(0),
                    unit="", action=Action.INSTANT, coef_a_text="1", coef_b_text="0",
                    modbus=point, key=f"v{index}")


def meter_definition() -> DefinitionFile:
    # Registers 0 and 1: one request of 2 registers per poll.
    return DefinitionFile(file_name="meter.csv", protocol=Protocol.MODBUS_TCP, category="Meter",
                          manufacturer="Test", model="M1", variables=(u16(1, 0), u16(2, 1)),
                          sha256="0" * 64)


def modbus_device(port: int) -> Device:
    return Device(line=1, index="1", interface=f"127.0.0.1:{port}", name="meter", address=126,
                  timeout_ms=500)


async def poll_traced(port: int, capture: TraceCapture, polls: int) -> list[FrameTrace]:
    """Polls with the capture's hook on the driver; also returns the frames the driver reported."""
    seen: list[FrameTrace] = []

    def hook(trace: FrameTrace) -> None:
        seen.append(trace)
        capture.hook(trace)

    plan = plan_reads(meter_definition())
    driver = ModbusTcpDriver(trace=hook)
    try:
        for _ in range(polls):
            await driver.read(modbus_device(port), plan)
    finally:
        await driver.close()
    return seen


async def test_a_modbus_tcp_poll_is_traced_in_the_formats_11_form(tmp_path: Path,
                                                                  modbus_port: int) -> None:
    traces = await asyncio.to_thread(TraceStore.open, tmp_path / "store")
    try:
        capture = TraceCapture(traces)
        capture.start("ethernet", 10)
        seen = await poll_traced(modbus_port, capture, 3)
        await asyncio.to_thread(traces.flush)
        entries = await asyncio.to_thread(traces.entries, "ethernet")
    finally:
        await traces.aclose()
    assert len(seen) == 6 and [t.direction for t in seen] == [Direction.SENT, Direction.RECEIVED] * 3
    assert all(t.error is TraceError.NONE for t in seen)
    lines = list(trace_lines(entries, Dates(ZONE)))
    assert len(lines) == 6 and all(LINE.match(line) for line in lines), lines
    # The view's lines from the store equal the driver's own formatter on the live frames.
    from zoneinfo import ZoneInfo
    assert lines == [format_trace_line(t, ZoneInfo(ZONE)) for t in seen]
    sent = lines[0].split(";", 1)[1].split()
    assert sent[:2] == ["=>", f"127.0.0.1:{modbus_port}"]
    # As docs/formats.md §11's example: MBAP (protocol 0, length 6, unit 126), function 3, address
    # 0, 2 registers; the reply's MBAP then 4 data bytes.
    assert sent[4:] == ["00", "00", "00", "06", "7E", "03", "00", "00", "00", "02"]
    received = lines[1].split(";", 1)[1].split()
    assert received[:2] == ["<=", f"127.0.0.1:{modbus_port}"]
    assert received[4:] == ["00", "00", "00", "07", "7E", "03", "04", "07", "F9", "00", "00"]
    assert sent[2:4] == received[2:4]                     # same transaction id


async def test_a_modbus_rtu_bus_is_traced_with_crc_and_timeout_markers(tmp_path: Path) -> None:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    unit = SimulatedDevice()
    unit.set_words(0, [0x0901, 0])
    responder = RtuResponder(master, {3: unit})
    responder.start()
    traces = await asyncio.to_thread(TraceStore.open, tmp_path / "store")
    capture = TraceCapture(traces)
    capture.start("serial2", 10)
    bus = RtuBus(SerialPort(line=1, port="SERIAL2", speed=115200), path=os.ttyname(slave),
                 trace=capture.hook)
    driver = ModbusRtuDriver()
    driver.attach(bus)
    plan = plan_reads(meter_definition())
    serial = Device(line=1, index="1", interface="SERIAL2", name="m", address=3, timeout_ms=100)
    try:
        good = await driver.read(serial, plan)
        unit.bad_crc = True
        bad = await driver.read(serial, plan)
        unit.bad_crc = False
        absent = await driver.read(dataclasses.replace(serial, address=9), plan)
        await asyncio.to_thread(traces.flush)
        entries = await asyncio.to_thread(traces.entries, "serial2")
    finally:
        await driver.close()
        await responder.stop()
        await traces.aclose()
        os.close(master)
        os.close(slave)
    assert good.values[1].quality is Quality.GOOD
    assert bad.values[1].quality is Quality.BAD_FRAME
    assert absent.values[1].quality is Quality.TIMEOUT
    texts = [line.split(";", 1)[1] for line in trace_lines(entries, Dates(ZONE))]
    request = "03 03 00 00 00 02 " + " ".join(f"{b:02X}" for b in
                                            crc16(bytes.fromhex("030300000002")).to_bytes(2, "little"))
    reply = bytes.fromhex("0303040901 0000")
    assert texts[0] == f"=> {request}"
    assert texts[1] == "<= " + (reply + crc16(reply).to_bytes(2, "little")).hex(" ").upper()
    assert texts[2] == f"=> {request}"
    assert texts[3].startswith("*** CRC *** <= 03 03 04 09 01 00 00 ")
    assert texts[4].startswith("=> 09 03 00 00 00 02 ")
    assert texts[5:] == ["*** TIMEOUT *** <="]


def make_site(tmp_path: Path) -> Path:
    cfg = tmp_path / "cfg"
    for rel, data in default_files(UID).items():
        (cfg / rel).parent.mkdir(parents=True, exist_ok=True)
        (cfg / rel).write_bytes(data)
    server = tmp_path / "server"
    for name in ("CONFIG", "DEF", "SCRIPT", "CERT", "DATA", "CMD", "ALARM", "LOG", "BIN"):
        (server / name).mkdir(parents=True, exist_ok=True)
    path = cfg / "CONFIG" / f"{UID}_config.ini"
    ini = parse_config_ini(path.read_bytes(), path.name).value
    for key, value in {"SERVER_Type": "dir", "DIR_Path": str(server),
                       "STORE_Path": str(tmp_path / "store"), "NTP_TimeZone": ZONE}.items():
        ini = ini.with_value(key, value)
    path.write_bytes(render_config_ini(ini))
    return cfg


async def test_a_session_delivers_the_ethernet_trace_file_then_traces_are_deleted(
        tmp_path: Path, modbus_port: int) -> None:
    site = load_site(make_site(tmp_path))
    store = Path(site.settings.store_path)
    log = await Log.open(store, StoreOptions(flush_s=0.05))
    traces = await asyncio.to_thread(TraceStore.open, store, TraceOptions(flush_s=0.05))
    flusher = asyncio.create_task(traces.run())
    try:
        capture = TraceCapture(traces)
        capture.start("ethernet", 10)
        await poll_traced(modbus_port, capture, 4)
        # A serial bus and the TIC traced in the same window, to see the files' order.
        for interface in ("tic", "serial1"):
            capture.start(interface, 1)
            capture.hook(FrameTrace(ts_ns=time.time_ns(), interface=interface,
                                    direction=Direction.RECEIVED, data=b"\x03\x04"))
        await asyncio.to_thread(traces.flush)
        entries = await asyncio.to_thread(traces.entries, "ethernet")
        assert len(entries) == 8
        settings = site.settings.servers[0]
        transport = open_transport(settings, tmp_path / "cfg" / "CERT")
        assert isinstance(transport, FileTransport)
        outbox = Outbox(server=1, log=log, source=store_source(log, site, 1, traces=traces),
                        directory=store / "outbox" / "1", streams=FILE_SERVER_STREAMS)
        session = FileServerSession(settings=settings, uid=UID, transport=transport,
                                    outbox=outbox, log=log)
        result = await session.run(Trigger.SCHEDULE,
                                   started=datetime.now(UTC) + timedelta(seconds=1))
        assert result.ok, result.reason
        state: DeliveryState = outbox.state()
        [window] = state.stream(1, Stream.LOG).windows
        names = [f.name for f in window.files]
        traced = [n for n in names if not n.startswith((f"{UID}_LOG_", f"{UID}_SUNSPEC_"))]
        assert names[-3:] == traced and [n.split("_")[1] for n in traced] == [
            "serial1", "ethernet", "tic"]
        assert state.stream(1, Stream.LOG).cursor_ns is not None
        removed = await asyncio.to_thread(traces.delete_delivered, traces_delivered(state, [1]))
        left = await asyncio.to_thread(traces.entries, "ethernet")
        untouched = await asyncio.to_thread(traces.delete_delivered, traces_delivered(state, []))
    finally:
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        await traces.aclose()
        await log.close()

    files = sorted((tmp_path / "server" / "LOG").glob(f"{UID}_ethernet_*.log.gz"))
    assert len(files) == 1 and re.fullmatch(rf"{UID}_ethernet_\d{{6}}_\d{{6}}\.log\.gz",
                                            files[0].name)
    lines = gzip.decompress(files[0].read_bytes()).decode().splitlines()
    assert lines == list(trace_lines(entries, Dates(ZONE)))
    assert all(LINE.match(line) for line in lines)
    [serial] = (tmp_path / "server" / "LOG").glob(f"{UID}_serial1_*.log.gz")
    assert re.fullmatch(r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d\.\d{3};<= 03 04\n",
                        gzip.decompress(serial.read_bytes()).decode())
    assert not list((tmp_path / "server" / "LOG").glob(f"{UID}_serial2*"))
    assert removed == 10 and left == [] and untouched == 0
