"""Pieces of the end-to-end tests: simulated devices whose registers follow the wall clock, the
`sunpm` command line as a child process, the wiring a service does, and DATA-file parsing.

The expected values are computed here from the register images, by hand-written SunSpec offsets
and a small decoder, never by the code under test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from poller_runs import polling, wait_whole_second

from config import (
    Site,
    check_site_change,
    parse_config_ini,
    parse_daq,
    render_config_ini,
    render_daq,
)
from config.model import Device
from exporters.outbox import Outbox
from exporters.rendering.source import store_source
from exporters.session import FileServerSession, SessionResult, Trigger
from exporters.transports import FileTransport, open_transport
from pipeline.drivers._base import ReadPlan
from pipeline.drivers.io import IoDriver, SimBackend
from pipeline.drivers.modbus.planner import plan_reads, polled_variables
from pipeline.drivers.modbus.simulator import SimulatedDevice
from pipeline.drivers.modbus.tcp import ModbusTcpDriver
from pipeline.poller import Event, PolledDevice, Poller, PollLink, link_name
from pipeline.recorder import ParameterRead, Recorder
from store.delivery import FILE_SERVER_STREAMS
from store.log import Log

NS = 1_000_000_000
UID = "WPMTEST01"
SUNPM = str(Path(sys.executable).with_name("sunpm"))
TREE = ("CONFIG", "DEF", "SCRIPT", "CERT", "DATA", "CMD", "ALARM", "LOG", "BIN")

# ----------------------------------------------------------------------------- devices

SUNS = [0x5375, 0x6E53]
BASE = 40000
M103 = 40072            # data of model 103: after SunS (2), model 1 (2 + 66) and its header (2)
M123 = 40124            # data of model 123: after model 103 (50) and its header


def _text(text: str, registers: int) -> list[int]:
    raw = text.encode().ljust(2 * registers, b"\x00")
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, 2 * registers, 2)]


def sunspec_image() -> dict[int, int]:
    """Models 1, 103 and 123 at 40000, every point 0 but the scale factors set below."""
    common = (_text("ACME", 16) + _text("Solar Inverter", 16) + _text("", 8) + _text("1.0", 8)
              + _text("SN-42", 16) + [1, 0x8000])
    words = (SUNS + [1, 66] + common + [103, 50] + [0] * 50 + [123, 24] + [0] * 24
             + [0xFFFF, 0])
    image = {BASE + k: w for k, w in enumerate(words)}
    # Model 103 scale factors (offsets in the SunSpec model): A_SF -2, V_SF -1, W_SF 1,
    # Hz_SF -2, VA_SF 0, WH_SF 0, Tmp_SF -1.
    for offset, sf in ((4, -2), (11, -1), (13, 1), (15, -2), (17, 0), (24, 0), (35, -1)):
        image[M103 + offset] = sf & 0xFFFF
    image[M103 + 8] = 2305            # PhVphA 230.5 V
    image[M103 + 16] = 0x8000         # VA: int16 "not implemented", so missing
    image[M103 + 31] = (-52) & 0xFFFF  # TmpCab -5.2 °C
    image[M103 + 36] = 4              # St: MPPT
    image[M123 + 3] = 100             # WMaxLimPct 100 %, WMaxLimPct_SF (offset 21) 0
    return image


def inverter_values(second: int) -> dict[int, int]:
    """The registers that move, as the inverter holds them during wall-clock `second`."""
    wh = 1_234_567 + second % 100_000
    return {M103 + 0: 800 + second % 50,            # A, sf -2
            M103 + 12: 200 + second % 30,           # W, sf 1
            M103 + 14: 5000 + second % 5,           # Hz, sf -2
            M103 + 22: wh >> 16, M103 + 23: wh & 0xFFFF}   # WH acc32, sf 0


def inverter_expected(second: int) -> dict[str, str | None]:
    """DATA-file text of the inverter's moving and special points for a poll in `second`;
    any other recorded point reads 0."""
    return {"103_A": plain(Decimal(800 + second % 50).scaleb(-2)),
            "103_W": plain(Decimal(200 + second % 30).scaleb(1)),
            "103_Hz": plain(Decimal(5000 + second % 5).scaleb(-2)),
            "103_WH": str(1_234_567 + second % 100_000),
            "103_PhVphA": "230.5", "103_VA": None, "103_TmpCab": "-5.2", "103_St": "4",
            "123_WMaxLimPct": "100"}


METER_DEF = (b"modbusTCP;Meter;ACME;M3\n"
             b"1;4;0;I32_W;;V_L1;;0.1;0;V;4\n"
             b"2;4;40;I32_W;;P_total;;0.1;0;W;2\n"
             b"3;4;62;U32_W;;E_import;;0.1;0;kWh;4\n"
             b"4;3;4354;U16;;Setup;;1;0;;1\n")
METER_SETUP = 7


def _words_w(value: int) -> list[int]:
    """A 32-bit value, low word first (`_W`)."""
    value &= 0xFFFFFFFF
    return [value & 0xFFFF, value >> 16]


def meter_values(second: int) -> dict[int, int]:
    v, p, e = meter_numbers(second)
    return dict(zip((0, 1, 40, 41, 62, 63), _words_w(v) + _words_w(p) + _words_w(e),
                    strict=True))


def meter_numbers(second: int) -> tuple[int, int, int]:
    return 2300 + second % 10, -(1500 + second % 7), 987_654 + second % 100_000


def meter_expected(second: int) -> list[str]:
    """Fields of a meter row: V_L1, P_total min;max;mean (one poll), E_import."""
    v, p, e = meter_numbers(second)
    return [str(v), str(p), str(p), str(p), str(e)]


def plain(value: Decimal) -> str:
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@dataclass(slots=True)
class ClockedDevice(SimulatedDevice):
    """A simulated device whose moving registers are set from the wall-clock second of each
    request, so a record's expected values follow from its time alone."""

    moving: Callable[[int], Mapping[int, int]] = lambda second: {}
    kind: int = 3
    answered: list[int] = field(default_factory=list)

    def answer(self, pdu: bytes) -> bytes:
        second = int(time.time())
        table = self.table(self.kind)
        table.update(self.moving(second))
        self.answered.append(second)
        return SimulatedDevice.answer(self, pdu)


# ----------------------------------------------------------------------------- command line


@dataclass(frozen=True, slots=True)
class Run:
    code: int
    out: str
    err: str


async def sunpm(*args: str, timeout_s: float = 60.0) -> Run:
    """`sunpm ARGS` as a child process (the event loop keeps serving the simulators)."""
    proc = await asyncio.create_subprocess_exec(SUNPM, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def init_and_discover(cfg: Path, port: int) -> tuple[Run, Any]:
    """The commissioning's first steps: `sunpm config init` of a site at `cfg`, then `sunpm
    discover --import` of units 1-3 at 127.0.0.1:`port` into it; the discover run and its JSON
    answer."""
    run = await sunpm("config", "init", str(cfg), "--uid", UID)
    assert run.code == 0, run.err
    run = await sunpm("discover", "--ip", "127.0.0.1", "--port", str(port), "--first", "1",
                      "--last", "3", "--timeout", "300", "--config", str(cfg), "--import",
                      "--json")
    assert run.code == 0, run.err
    return run, json.loads(run.out)


def edit_config(cfg: Path, values: Mapping[str, str]) -> None:
    path = cfg / "CONFIG" / f"{UID}_config.ini"
    ini = parse_config_ini(path.read_bytes(), path.name).value
    for key, value in values.items():
        ini = ini.with_value(key, value)
    path.write_bytes(render_config_ini(ini))


def edit_daq(cfg: Path, edit: Callable[[tuple[Device, ...]], Sequence[Device]]) -> None:
    path = cfg / "CONFIG" / f"{UID}_daq.csv"
    daq = parse_daq(path.read_bytes(), path.name).value
    path.write_bytes(render_daq(dataclasses.replace(daq, devices=tuple(edit(daq.devices)))))


def make_tree(root: Path) -> Path:
    for name in TREE:
        (root / name).mkdir(parents=True, exist_ok=True)
    return root


# ----------------------------------------------------------------------------- wiring


def poll_links(site: Site, log: Log, driver_for: Callable[[Device], object]) -> list[PollLink]:
    """The links a service polls, as it builds them from a site: definitions stored in the log
    (content-addressed, the id the recorder stamps), plans built once per definition."""
    grouped: dict[str, list[PolledDevice]] = {}
    drivers: dict[str, object] = {}
    for device in site.polled_devices:
        definition = site.definition_of(device)
        assert definition is not None
        data = site.files()[f"DEF/{definition.file_name}"]
        assert log.put_definition(definition.file_name, data) == definition.snapshot_id
        if definition.protocol.is_modbus:
            max_gap = site.settings.daq_modbus_max_gap
            plan = plan_reads(definition, max_gap)
            params = polled_variables(definition, parameters=True)
            parameter_plan = plan_reads(definition, max_gap, variables=params) if params else None
        else:
            plan = ReadPlan(definition=definition, variables=tuple(
                v for v in definition.variables if v.action.is_polled))
            parameter_plan = None
        name = link_name(device)
        grouped.setdefault(name, []).append(PolledDevice(
            device=device, definition=definition, plan=plan, parameter_plan=parameter_plan))
        drivers.setdefault(name, driver_for(device))
    return [PollLink(name=name, driver=drivers[name], devices=tuple(devices),  # type: ignore[arg-type]
                     category=_category(devices[0].device))
            for name, devices in grouped.items()]


def _category(device: Device) -> str:
    return {"IO": "io", "TIC1": "tic"}.get(device.index, "modbus")


def journal_sink(log: Log) -> Callable[[Event], Awaitable[None]]:
    async def sink(event: Event) -> None:
        if isinstance(event, ParameterRead):
            await log.append_journal("param", event.journal_body(), device=event.device,
                                     def_=event.def_id, ts_ns=event.ts_ns)
    return sink


async def poll_for(site: Site, log: Log, seconds: float,
                   during: list[tuple[float, object]] | None = None) -> None:
    """Poll the site's devices as a service would, for `seconds` from just after a whole second;
    `during` runs callables at offsets from that start."""
    modbus = ModbusTcpDriver()
    io = IoDriver(SimBackend())
    links = poll_links(site, log, lambda d: io if d.index == "IO" else modbus)
    poller = Poller(links, recorder=Recorder(), record_sink=log.append_records,
                    event_sink=journal_sink(log), daq_poll_period_s=site.settings.daq_poll_period_s)
    await wait_whole_second()
    start = time.monotonic()
    async with polling(poller, modbus.close, io.close, log.commit) as stop:
        for offset, action in during or []:
            await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
            action()  # type: ignore[operator]
        await asyncio.sleep(max(0.0, start + seconds - time.monotonic()))
        await stop()
    assert poller.counters().records_dropped == 0


async def deliver(site: Site, log: Log, cfg: Path, started: datetime,
                  slots: Sequence[int] = (1, 2)) -> list[SessionResult]:
    """One scheduled session per file server in `slots`, as the service would run them."""
    results = []
    for slot in slots:
        settings = site.settings.servers[slot - 1]
        transport = open_transport(settings, cfg / "CERT")
        assert isinstance(transport, FileTransport)
        outbox = Outbox(server=slot, log=log, source=store_source(log, site, slot),
                        directory=Path(site.settings.store_path) / "outbox" / str(slot),
                        streams=FILE_SERVER_STREAMS)
        session = FileServerSession(settings=settings, uid=UID, transport=transport,
                                    outbox=outbox, log=log, config_dir=cfg, validate=check_site_change)
        async with asyncio.timeout(30):
            results.append(await session.run(Trigger.SCHEDULE, started=started))
    return results


# ----------------------------------------------------------------------------- DATA files


@dataclass(frozen=True, slots=True)
class Block:
    header: tuple[str, ...]
    columns: list[int]
    rows: list[tuple[int, list[str]]]      # (record time, UTC seconds; fields)


def parse_data(text: str, zone: str, *, euro: bool = False) -> list[Block]:
    """Blocks of a DATA text (docs/formats.md §9.2), row dates read back in the server's zone and
    date format (docs/formats.md §2)."""
    date_format = "%d/%m/%y-%H:%M:%S" if euro else "%y/%m/%d-%H:%M:%S"
    tz = ZoneInfo(zone)
    blocks: list[Block] = []
    lines = text.split("\n")
    assert lines[-1] == "", "a DATA text ends with a line end"
    for line in lines[:-1]:
        first = line.split(";", 1)[0]
        if first in ("DEVICEINDEX", "TypeIO", "SNTIC"):
            blocks.append(Block((line,), [], []))
        elif first in ("modbusTCP", "modbusRTU", "TypeTIC"):
            blocks[-1] = Block((*blocks[-1].header, line), [], [])
        elif "/" not in first:
            count, *indexes = line.split(";")
            assert int(count) == len(indexes), line
            assert not blocks[-1].columns and not blocks[-1].rows, line
            blocks[-1].columns.extend(int(i) for i in indexes)
        else:
            stamp, *fields = line.split(";")
            moment = datetime.strptime(stamp, date_format).replace(tzinfo=tz)
            blocks[-1].rows.append((int(moment.timestamp()), fields))
    return blocks


def data_files(root: Path, interface: str = "MODBUS") -> dict[str, bytes]:
    return {p.name: p.read_bytes()
            for p in sorted((root / "DATA").glob(f"{UID}_{interface}_[0-9]*.csv.gz"))}


def gunzip_all(files: Mapping[str, bytes]) -> list[str]:
    return [gzip.decompress(data).decode() for _, data in sorted(files.items())]
