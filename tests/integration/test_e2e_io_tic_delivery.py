"""The gateway's own I/O (simulated backend) and a Linky on a pty (historic mode, the captured
frames then frames following the wall clock), polled into a real store and delivered to a `dir`
server as IO and TIC DATA files whose rows are checked value by value."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from e2e_support import (
    UID,
    Block,
    edit_config,
    edit_daq,
    gunzip_all,
    journal_sink,
    make_tree,
    parse_data,
    poll_links,
    sunpm,
)
from poller_runs import polling, wait_whole_second
from tic_ptys import meter_pty, pty_opener
from waiting import wait_until

from config import load_site
from config.model import Device
from exporters.outbox import Outbox
from exporters.rendering.source import store_source
from exporters.session import FileServerSession, Trigger
from exporters.transports import FileTransport, open_transport
from pipeline.drivers._base import LinkSettings
from pipeline.drivers.io import IoDriver, SimBackend
from pipeline.drivers.tic import TicDriver, TicMode, TicReader
from pipeline.poller import Poller
from pipeline.recorder import Recorder
from store import Log, StoreOptions
from store.delivery import FILE_SERVER_STREAMS

CAPTURE = Path(__file__).parents[1] / "test_pipeline" / "drivers" / "data" / "tic_historic.bin"
ZONE = "UTC"
ADCO = "031664001115"
IO_DEF = (b"io;WebdynSunPM;Webdyn;ioSunPM\n"
          b"1;1;1;1;;AI1;;1;0;mA;2\n"
          b"2;1;2;2;;AI2;;1;0;V;4\n"
          b"5;2;1;1;;DI1;;1;0;;4\n"
          b"6;2;2;2;;DI2;;1;0;;4\n"
          b"9;3;1;;;Relay;;1;0;;8\n")
TIC_DEF = (b"tic;Meter;Enedis;Linky\n"
           b"1;ADCO;;;;ADCO;;1;0;;1\n"
           b"2;BASE;;;;BASE;;1;0;Wh;4\n"
           b"3;PTEC;;;;PTEC;;1;0;;4\n"
           b"4;IINST;;;;IINST;;1;0;A;4\n"
           b"5;PAPP;;;;PAPP;;1;0;VA;2\n")


def _group(label: str, data: str) -> bytes:
    """A historic group, checksum by the Enedis rule (sum of label SP data, & 0x3F, + 0x20)."""
    span = f"{label} {data}".encode()
    return b"\n" + span + b" " + bytes([(sum(span) & 0x3F) + 0x20]) + b"\r"


def tic_numbers(second: int) -> tuple[int, int, int]:
    return 2_080_000 + second % 100_000, second % 60, 100 + 10 * (second % 97)


def tic_frame(second: int) -> bytes:
    base, iinst, papp = tic_numbers(second)
    groups = [("ADCO", ADCO), ("OPTARIF", "BASE"), ("ISOUSC", "30"), ("BASE", f"{base:09d}"),
              ("PTEC", "TH.."), ("IINST", f"{iinst:03d}"), ("IMAX", "090"),
              ("PAPP", f"{papp:05d}"), ("HHPHC", "A"), ("MOTDETAT", "000000")]
    return b"\x02" + b"".join(_group(k, v) for k, v in groups) + b"\x03"


def tic_expected(second: int) -> list[str]:
    """BASE, PTEC, IINST as received; PAPP min;max;mean of its decimal value (one poll)."""
    base, iinst, papp = tic_numbers(second)
    return [f"{base:09d}", "TH..", f"{iinst:03d}", str(papp), str(papp), str(papp)]


def io_expected(t: float) -> list[str]:
    """AI1 (4-20 mA) min;max;mean, AI2 (0-10 V), DI1 (ON/OFF), DI2 (S0), relay: behaviour.md
    §2.10's functions of the sampling time."""
    ai1 = 12.0 + 0.4 * 16.0 * math.sin(2 * math.pi * (t / 3600 + 1 / 4))
    ai2 = 5.0 + 0.4 * 10.0 * math.sin(2 * math.pi * (t / 3600 + 2 / 4))
    di1 = 1 if t % 600 < 300 else 0
    s0 = math.floor((t - 1_577_836_800) * 2 / 10)
    return [repr(ai1), repr(ai1), repr(ai1), repr(ai2), str(di1), str(s0), "0"]


def linky() -> contextlib.AbstractAsyncContextManager[str]:
    """A pty: the captured frames once, then frames every 0.1 s in the middle of each second
    carrying that second's values, so a poll at a whole second (late by up to 0.4 s) has seen
    the previous second's."""
    async def talk(master: int) -> None:
        os.write(master, CAPTURE.read_bytes())
        while True:
            now = time.time()
            if 0.4 <= now % 1 <= 0.8:
                os.write(master, tic_frame(int(now)))
            await asyncio.sleep(0.1)

    return meter_pty(talk)


def blocks(root: Path, interface: str) -> list[Block]:
    files = {p.name: p.read_bytes()
             for p in (root / "DATA").glob(f"{UID}_{interface}_[0-9]*.csv.gz")}
    assert files, f"no {interface} DATA file"
    return [b for text in gunzip_all(files) for b in parse_data(text, ZONE)]


async def test_io_and_tic_polled_recorded_and_delivered(tmp_path: Path) -> None:
    async with linky() as tic_path:
        cfg = tmp_path / "cfg"
        run = await sunpm("config", "init", str(cfg), "--uid", UID)
        assert run.code == 0, run.err
        (cfg / "DEF" / f"{UID}_IO.csv").write_bytes(IO_DEF)
        (cfg / "DEF" / f"{UID}_TIC_LINKY.csv").write_bytes(TIC_DEF)

        def devices(rows: tuple[Device, ...]) -> list[Device]:
            io = [Device(line=d.line, index=d.index, interface="", name=d.name, address=None,
                         acq_period_s=1, category=d.category, model=d.model, def_file=d.def_file)
                  for d in rows]
            return [*io, Device(line=len(rows) + 2, index="TIC1", interface="", name="Linky",
                                address=None, acq_period_s=1, serial_number=ADCO,
                                category="Meter", model="Linky",
                                def_file=f"{UID}_TIC_LINKY.csv")]

        edit_daq(cfg, devices)
        server = make_tree(tmp_path / "server")
        edit_config(cfg, {"SERVER_Type": "dir", "DIR_Path": str(server),
                          "STORE_Path": str(tmp_path / "store"), "STORE_FlushSeconds": "0.05",
                          "DAQ_PollPeriod": "1", "TIC_Port": tic_path})
        run = await sunpm("config", "validate", str(cfg))
        assert run.code == 0, run.out + run.err
        site = load_site(cfg)
        assert [d.index for d in site.polled_devices] == ["IO", "TIC1"]

        sampled: list[float] = []

        def io_clock() -> float:
            sampled.append(time.time())
            return sampled[-1]

        io = IoDriver(SimBackend(clock_s=io_clock))
        reader = TicReader(site.settings.tic_port, opener=pty_opener, detection_slot_s=0.3)
        tic = TicDriver(reader)
        log = await Log.open(Path(site.settings.store_path),
                             StoreOptions(flush_s=site.settings.store_flush_s))
        try:
            for driver in (io, tic):
                await driver.open(LinkSettings())
            await wait_until(lambda: reader.mode is TicMode.HISTORIC, 5)
            links = poll_links(site, log, lambda d: io if d.index == "IO" else tic)
            poller = Poller(links, recorder=Recorder(), record_sink=log.append_records,
                            event_sink=journal_sink(log), daq_poll_period_s=1)
            await wait_whole_second()
            async with polling(poller) as stop:
                await asyncio.sleep(4.5)
                await stop()
            settings = site.settings.servers[0]
            transport = open_transport(settings, cfg / "CERT")
            assert isinstance(transport, FileTransport)
            outbox = Outbox(server=1, log=log, source=store_source(log, site, 1),
                            directory=tmp_path / "store" / "outbox" / "1",
                            streams=FILE_SERVER_STREAMS)
            session = FileServerSession(settings=settings, uid=UID, transport=transport,
                                        outbox=outbox, log=log)
            result = await session.run(Trigger.SCHEDULE,
                                       started=datetime.now(UTC) + timedelta(seconds=1))
            assert result.ok, result.reason
            stored = {dev: log.records(dev).num_rows for dev in ("IO", "TIC1")}
        finally:
            for driver in (io, tic):
                await driver.close()
            await log.close()

    io_blocks = blocks(server, "IO")
    assert all(b.header == ("TypeIO;WPMTEST01_IO.csv",) for b in io_blocks)
    assert all(b.columns == [1, 2, 5, 6, 9] for b in io_blocks)
    by_record = {math.floor(t) + 1: t for t in sampled}
    io_rows = [r for b in io_blocks for r in b.rows]
    assert len(io_rows) >= 3 and len(io_rows) * 5 == stored["IO"]
    for t, fields in io_rows:
        assert fields == io_expected(by_record[t]), t

    tic_blocks = blocks(server, "TIC")
    assert all(b.header == (f"SNTIC;{ADCO};001", "TypeTIC;WPMTEST01_TIC_LINKY.csv")
               for b in tic_blocks)
    assert all(b.columns == [2, 3, 4, 5] for b in tic_blocks)
    tic_rows = [r for b in tic_blocks for r in b.rows]
    assert len(tic_rows) >= 3 and len(tic_rows) * 4 == stored["TIC1"]
    for t, fields in tic_rows:
        # A poll at p holds what arrived during the second before; its record is dated p + 1.
        assert fields == tic_expected(t - 2), t
