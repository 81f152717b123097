"""A simulated plant: days of records and alarms written through the real store API, delivered to
a `dir` server by the real session and outbox, and the store copied as a card dump.

Two Modbus TCP meters (values scaled by 0.1: V_L1, P_total with min/max/mean, an energy counter,
an alarm-watched state), a device alarm and a gateway alarm each day, one log line a day, and
sessions every `session_every_days`. The configuration is journaled as the service does (a
`config` event naming the store's snapshot), so the dump carries everything a re-export needs.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import duckdb
import pyarrow as pa

from config import load_site
from config.site import Site
from exporters.outbox import Outbox
from exporters.rendering.source import store_source
from exporters.session import FileServerSession, Trigger
from exporters.transports import DirTransport
from store import Log, StoreOptions
from store.delivery import FILE_SERVER_STREAMS
from store.events import DeviceAlarm, GatewayAlarm, LogLevel, LogLine, Source

UID: Final = "WPMSD0001"
NS: Final = 1_000_000_000
DAY: Final = 86_400
T0: Final = 1_612_137_600  # 2021-02-01 00:00 UTC
TREE: Final = ("CONFIG", "DEF", "SCRIPT", "CERT", "DATA", "CMD", "ALARM", "LOG", "BIN")
METER_DEF: Final = (b"modbusTCP;Meter;ACME;M3\n"
                    b"1;4;0;I32_W;;V_L1;;0.1;0;V;4\n"
                    b"2;4;40;I32_W;;P_total;;0.1;0;W;2\n"
                    b"3;4;62;U32_W;;E_import;;0.1;0;kWh;4\n"
                    b"4;3;4354;U16;;State;;1;0;;8\n")
DAQ: Final = (b"index;interface;name;address;acqPeriod(s);timeout(ms);serialNumber;parameters;"
              b"category;model;defFile\n"
              b"1;127.0.0.1:1502;meter_a;1;600;1000;;;Meter;M3;meter.csv\n"
              b"2;127.0.0.1:1502;meter_b;2;600;1000;;;Meter;M3;meter.csv\n")
DEVICES: Final = ("1", "2")


@dataclass(frozen=True, slots=True)
class Plant:
    server: Path
    store: Path
    config: Path
    dump: Path
    start_s: int
    end_s: int


def make_config(root: Path, server: Path, store: Path, *, daq: bytes = DAQ,
                defs: dict[str, bytes] | None = None) -> Path:
    """A site delivering to the `dir` server `server`, its devices `daq` with definitions `defs`
    (default: the two meters)."""
    files = {
        f"CONFIG/{UID}_config.ini": (f"SERVER_Type=dir\nDIR_Path={server}\n"
                                     f"STORE_Path={store}\nNTP_TimeZone=Europe/Paris\n").encode(),
        f"CONFIG/{UID}_daq.csv": daq,
        f"CONFIG/{UID}_var.ini": b"",
        f"CONFIG/{UID}_scl.ini": b"",
        **{f"DEF/{name}": data for name, data in (defs or {"meter.csv": METER_DEF}).items()},
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def meter_value(device: str, var: int, t: int) -> float:
    k = int(device)
    if var == 1:
        return float(2300 + (t // 600 + k) % 17)
    if var == 2:
        return float(1500 * k + (t // 600) % 29)
    if var == 3:
        return float(10_000 * k + (t - T0) // 600 * (3 + k))  # an energy counter
    return float((t // (6 * 3600)) % 3)


def day_batch(device: str, def_id: str, times: list[int]) -> pa.RecordBatch:
    ts, var, value, vmin, vmax = [], [], [], [], []
    for t in times:
        for v in (1, 2, 3, 4):
            ts.append(t * NS)
            var.append(v)
            mean = meter_value(device, v, t)
            value.append(mean + (0.25 if v == 2 else 0.0))
            vmin.append(mean - 3 if v == 2 else None)
            vmax.append(mean + 4 if v == 2 else None)
    n = len(ts)
    return pa.record_batch({
        "ts": pa.array(ts, pa.timestamp("ns", tz="UTC")),
        "var": pa.array(var, pa.int32()),
        "value": pa.array(value, pa.float64()),
        "vmin": pa.array(vmin, pa.float64()),
        "vmax": pa.array(vmax, pa.float64()),
        "text": pa.array([None] * n, pa.string()),
        "quality": pa.array([0] * n, pa.uint8()),
        "def": pa.array([def_id] * n).dictionary_encode(),
    })


@dataclass(frozen=True, slots=True)
class Gateway:
    """What `open_gateway` gives: the store `log` open, `def_ids` by definition file name, and
    the `session` that delivers to the `server` tree."""
    root: Path
    server: Path
    store: Path
    config: Path
    log: Log
    def_ids: dict[str, str]
    session: FileServerSession

    def dumped(self, start_s: int, end_s: int, *, config_on_server: bool = True) -> Plant:
        """The store (closed) copied as the card dump; with `config_on_server`, the server tree
        also gets CONFIG/ and DEF/, as the information system keeps them."""
        shutil.copytree(self.store, self.root / "dump")
        if config_on_server:
            for sub in ("CONFIG", "DEF"):
                shutil.copytree(self.config / sub, self.server / sub, dirs_exist_ok=True)
        return Plant(server=self.server, store=self.store, config=self.config,
                     dump=self.root / "dump", start_s=start_s, end_s=end_s)


@asynccontextmanager
async def open_gateway(root: Path, start_s: int, *, daq: bytes = DAQ,
                       defs: dict[str, bytes] | None = None) -> AsyncIterator[Gateway]:
    """An empty server tree, a site delivering to it (`make_config`), and its store holding the
    definitions and the configuration journaled at `start_s`, as the service starts; the store
    closed at the end."""
    defs = defs or {"meter.csv": METER_DEF}
    server = root / "server"
    for name in TREE:
        (server / name).mkdir(parents=True, exist_ok=True)
    store = root / "store"
    cfg = make_config(root / "cfg", server, store, daq=daq, defs=defs)
    site = load_site(cfg)
    log = await Log.open(store, StoreOptions(flush_s=0.05))
    try:
        def_ids = {name: log.put_definition(name, data) for name, data in defs.items()}
        await log.append_journal("config", {"snapshot": log.put_config(site.files())},
                                 ts_ns=start_s * NS, commit_now=True)
        yield Gateway(root, server, store, cfg, log, def_ids, _session(log, site, store))
    finally:
        await log.close()


async def build_plant(root: Path, *, days: int = 9, period_s: int = 600,
                      session_every_days: int = 3) -> Plant:
    end_s = T0 + days * DAY
    async with open_gateway(root, T0) as gateway:
        log, def_id, session = gateway.log, gateway.def_ids["meter.csv"], gateway.session
        for day in range(days):
            start = T0 + day * DAY
            times = list(range(start + period_s, start + DAY + 1, period_s))
            await asyncio.gather(*[log.append_records(dev, day_batch(dev, def_id, times))
                                   for dev in DEVICES], log.commit())
            await asyncio.gather(
                log.append_journal("alarm", json.loads(GatewayAlarm(alarm="Power ON").to_body()),
                                   ts_ns=(start + 7 * 3600) * NS),
                log.append_journal("alarm", json.loads(DeviceAlarm(
                    source=Source.MODBUS, name="meter_a", var=4,
                    value=str(day % 3)).to_body()),
                    device="1", def_=def_id, ts_ns=(start + 9 * 3600 + 17) * NS),
                log.append_journal("log", json.loads(LogLine(
                    level=LogLevel.INFO, category="system", message=f"day {day}").to_body()),
                    ts_ns=(start + 8 * 3600) * NS),
                log.commit())
            if (day + 1) % session_every_days == 0 or day == days - 1:
                cut = start + DAY - 1200
                result = await session.run(Trigger.SCHEDULE,
                                           started=datetime.fromtimestamp(cut, UTC))
                assert result.ok, result
        # Today's open segment, one commit per record as a live one holds them: recorded after
        # the last session, so on the card and not yet delivered.
        for t in range(end_s + period_s, end_s + 5 * period_s, period_s):
            await asyncio.gather(*[log.append_records(dev, day_batch(dev, def_id, [t]))
                                   for dev in DEVICES], log.commit())
    return gateway.dumped(T0, end_s, config_on_server=False)


def _session(log: Log, site: Site, store: Path) -> FileServerSession:
    outbox = Outbox(server=1, log=log, source=store_source(log, site, 1),
                    directory=store / "outbox" / "1", streams=FILE_SERVER_STREAMS)
    return FileServerSession(settings=site.settings.servers[0], uid=UID,
                             transport=DirTransport(site.settings.servers[0]), outbox=outbox,
                             log=log)


async def build_sessions(root: Path, *, start_s: int, cuts: list[int],
                         silent: dict[str, tuple[int, int]]) -> Plant:
    """Records every 600 s from `start_s`, a session at each of `cuts` (UTC s) delivering up to
    it; a device of `silent` records nothing in its (after, up to] range (a meter that stopped).
    The dump is the store's copy; the plant's `server` tree holds CONFIG/ and DEF/ too, as the
    information system keeps them."""
    async with open_gateway(root, start_s) as gateway:
        log, def_id, session = gateway.log, gateway.def_ids["meter.csv"], gateway.session
        last = start_s
        for cut in cuts:
            times = list(range(last + 600, cut + 1, 600))
            last = times[-1]
            await asyncio.gather(*[
                log.append_records(dev, day_batch(dev, def_id, [
                    t for t in times
                    if not silent.get(dev, (0, 0))[0] < t <= silent.get(dev, (0, 0))[1]]))
                for dev in DEVICES], log.commit())
            result = await session.run(Trigger.SCHEDULE,
                                       started=datetime.fromtimestamp(cut + 1, UTC))
            assert result.ok, result
    return gateway.dumped(start_s, cuts[-1])


def ingested_and_exported(plant: Plant, tmp_path: Path, columns: str, where: str = ""
                          ) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """`sunpm ingest` of the plant's server tree and `sd export-parquet` of its dump, each read
    back as `SELECT columns ... where ORDER BY ALL` (`device` as text): (from the files, from the
    dump). Neither the tree nor the dump changes."""
    before = hashes(plant.server), hashes(plant.dump)
    exported, ingested = tmp_path / "exported", tmp_path / "ingested"
    assert sunpm("sd", "export-parquet", plant.dump, exported).code == 0
    ran = sunpm("ingest", plant.server, ingested)
    assert (ran.code, ran.err) == (0, ""), ran.err
    query = (f"SELECT {columns} FROM read_parquet('{{}}/uid=*/device=*/date=*/*.parquet', "
             "hive_partitioning = true, hive_types = {{'device': 'VARCHAR'}}) "
             f"{where} ORDER BY ALL")
    from_files = duckdb.sql(query.format(ingested)).fetchall()
    from_dump = duckdb.sql(query.format(exported)).fetchall()
    assert (hashes(plant.server), hashes(plant.dump)) == before
    return from_files, from_dump


def tree_files(root: Path, dirs: tuple[str, ...] = ("DATA", "ALARM", "LOG", "CMD")
               ) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for d in dirs for p in sorted((root / d).glob("*")) if p.is_file()}


def hashes(root: Path) -> dict[str, str]:
    """Every file under `root` with its SHA-256, and its mode and mtime: nothing may change."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[p.relative_to(root).as_posix()] = f"{digest} {st.st_mode:o} {st.st_mtime_ns}"
    return out


@dataclass(frozen=True, slots=True)
class Ran:
    code: int
    out: str
    err: str


def sunpm(*args: str | Path) -> Ran:
    """`sunpm ARGS` in this process, its output captured."""
    from pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
    return Ran(code, out.getvalue(), err.getvalue())


def first_line_then_gone(dump: Path, query: str, env: dict[str, str]) -> tuple[int, bytes]:
    """`sunpm sd sql DUMP QUERY --format csv | head -1`: the CSV header read, the pipe closed;
    the command's exit code and standard error."""
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "sd", "sql", str(dump), query, "--format",
             "csv"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(root), **env}, cwd=root) as child:
        assert child.stdout is not None and child.stderr is not None
        assert child.stdout.readline().startswith(b"uid,device,time")
        child.stdout.close()
        err = child.stderr.read()
        return child.wait(timeout=60), err
