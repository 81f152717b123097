"""Commissioning to delivery, end to end: a SunSpec inverter (models 1, 103, 123) and a
non-SunSpec meter on a Modbus TCP simulator, `sunpm config init`, `sunpm discover --import`,
`sunpm config validate`, the poll loop and recorder into a real store, sessions to a `dir` server
and a real FTP server, `sunpm export`, then a restart that sends only what is new.
"""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from e2e_support import (
    METER_DEF,
    METER_SETUP,
    UID,
    Block,
    ClockedDevice,
    data_files,
    deliver,
    edit_config,
    edit_daq,
    gunzip_all,
    init_and_discover,
    inverter_expected,
    inverter_values,
    make_tree,
    meter_expected,
    meter_values,
    parse_data,
    poll_for,
    sunpm,
    sunspec_image,
)
from peers import make_certs, run_peer

from config import Site, load_site
from config.model import Device
from pipeline.drivers.modbus.simulator import TcpSimulator
from store import Log, StoreOptions

ZONE = "Europe/Paris"
RECORDED = {2, 4, 8, 9}


pytestmark = pytest.mark.usefixtures("no_task_left_behind")


async def commission(tmp_path: Path, port: int, ftp_port: int) -> tuple[Path, dict[str, object]]:
    """The operator's steps: init, discover and import, the meter by hand, servers, validate."""
    cfg = tmp_path / "cfg"
    run, found = await init_and_discover(cfg, port)
    assert found["found"] == 1
    inverter = found["devices"][0]
    assert (inverter["unitId"], inverter["models"], inverter["manufacturer"]) == \
        (1, [1, 103, 123], "ACME")
    assert "NON SUNSPEC device found" in run.err and "1 devices added" in run.err
    (cfg / "DEF" / "meter_small.csv").write_bytes(METER_DEF)

    def devices(rows: tuple[Device, ...]) -> list[Device]:
        out = [dataclasses.replace(d, acq_period_s=1) if d.index == "1" else d for d in rows]
        return [*out, Device(line=len(rows) + 2, index="2", interface=f"127.0.0.1:{port}",
                             name="meter", address=2, acq_period_s=1, timeout_ms=150,
                             parameters="1", category="Meter", model="M3",
                             def_file="meter_small.csv")]

    edit_daq(cfg, devices)
    server = make_tree(tmp_path / "server1")
    edit_config(cfg, {
        "SERVER_Type": "dir", "DIR_Path": str(server),
        "SERVER2_Type": "ftp", "FTP2_Host": "127.0.0.1", "FTP2_Port": str(ftp_port),
        "FTP2_User": "sunpm", "FTP2_Password": "secret",
        "STORE_Path": str(tmp_path / "store"), "STORE_FlushSeconds": "0.05",
        "DAQ_PollPeriod": "1", "NTP_TimeZone": ZONE})
    run = await sunpm("config", "validate", str(cfg))
    assert run.code == 0, run.out + run.err
    return cfg, inverter


def record_times(log: Log, device: str) -> list[int]:
    ts = log.records(device).column("ts").cast(pa.int64()).to_pylist()
    return sorted({t // 1_000_000_000 for t in ts})


def check_inverter(block: Block, site: Site, stopped: set[int]) -> None:
    definition = site.definition_of(site.daq.device("1"))
    assert definition is not None
    assert block.header == ("DEVICEINDEX;1", f"modbusTCP;{definition.file_name}")
    recorded = [v for v in definition.variables if int(v.action) in RECORDED]
    assert block.columns == [v.index for v in recorded]
    assert all(int(v.action) == 4 for v in recorded)
    assert len(recorded) > 50
    names = [v.name for v in recorded]
    for t, fields in block.rows:
        expected = inverter_expected(t - 1)     # acqPeriod 1: the record of T holds the poll at T-1
        want = [expected.get(n, "0") or "" for n in names]
        assert fields == want, (t, [(n, f, w) for n, f, w in zip(names, fields, want,
                                                                  strict=True) if f != w])


def check_meter(block: Block, stopped: set[int], edges: set[int]) -> None:
    """Rows of polls made while the meter was stopped are missing; at the two seconds of a
    switch, a poll late enough on a loaded machine may see it mid-poll: each field is then its
    value or missing."""
    assert block.header == ("DEVICEINDEX;2", "modbusTCP;meter_small.csv")
    assert block.columns == [1, 2, 3]
    for t, fields in block.rows:
        if t - 1 in edges:
            assert all(f in ("", w) for f, w in zip(fields, meter_expected(t - 1), strict=True)), t
        else:
            assert fields == ([""] * 5 if t - 1 in stopped else meter_expected(t - 1)), t


def config_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for d in ("CONFIG", "DEF", "SCRIPT") for p in (root / d).iterdir()}


def tree_mtimes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns
            for d in ("CONFIG", "DEF", "SCRIPT") for p in (root / d).iterdir()}


def blocks_of(files: dict[str, bytes], *, euro: bool = False) -> dict[str, list[Block]]:
    by_device: dict[str, list[Block]] = {}
    for text in gunzip_all(files):
        for block in parse_data(text, ZONE, euro=euro):
            by_device.setdefault(block.header[0], []).append(block)
    return by_device


async def test_commissioning_to_delivery_export_and_restart(tmp_path: Path) -> None:
    inverter = ClockedDevice(holding=sunspec_image(), moving=inverter_values, kind=3)
    meter = ClockedDevice(holding={4354: METER_SETUP}, moving=meter_values, kind=4)
    sim = TcpSimulator({1: inverter, 2: meter})
    port = await sim.start()
    certs = make_certs(tmp_path / "certs")
    ftp_root = make_tree(tmp_path / "ftp")
    try:
        with run_peer("ftp", ftp_root, certs) as ftp:
            await scenario(tmp_path, sim, port, ftp.port, ftp_root)
    finally:
        await sim.stop()


async def scenario(tmp_path: Path, sim: TcpSimulator, port: int, ftp_port: int,
                   ftp_root: Path) -> None:
    cfg, _ = await commission(tmp_path, port, ftp_port)
    site = load_site(cfg)
    assert [d.index for d in site.polled_devices] == ["IO", "1", "2"]
    server1 = Path(site.settings.servers[0].dir_path)
    store_dir = Path(site.settings.store_path)

    # ---- polling: the meter stops answering for two polls (flips at half seconds)
    meter = sim.units[2]
    stopped: set[int] = set()
    flips: dict[str, int] = {}

    def stop_meter() -> None:
        flips["stop"] = int(time.time())
        del sim.units[2]

    def start_meter() -> None:
        flips["start"] = int(time.time())
        sim.units[2] = meter

    log = await Log.open(store_dir, StoreOptions(flush_s=site.settings.store_flush_s))
    try:
        # A stopped meter times out three reads of 150 ms: flips late in the second never
        # fall inside a poll.
        await poll_for(site, log, 6.5, [(2.7, stop_meter), (4.7, start_meter)])
        stopped = set(range(flips["stop"] + 1, flips["start"] + 1))
        edges = {flips["stop"], flips["start"]}
        inverter_times = record_times(log, "1")
        meter_times = record_times(log, "2")
        assert len(inverter_times) >= 5 and len(meter_times) >= 5
        started = datetime.now(UTC) + timedelta(seconds=1)
        results = await deliver(site, log, cfg, started)
        assert all(r.ok for r in results), [r.reason for r in results]
        first_cut = int(started.timestamp())

        # ---- what the dir server received
        delivered = data_files(server1)
        assert delivered, sorted(p.name for p in (server1 / "DATA").iterdir())
        blocks = blocks_of(delivered)
        assert set(blocks) == {"DEVICEINDEX;1", "DEVICEINDEX;2"}
        for block in blocks["DEVICEINDEX;1"]:
            check_inverter(block, site, stopped)
        for block in blocks["DEVICEINDEX;2"]:
            check_meter(block, stopped, edges)
        rows_1 = [t for b in blocks["DEVICEINDEX;1"] for t, _ in b.rows]
        rows_2 = [t for b in blocks["DEVICEINDEX;2"] for t, _ in b.rows]
        assert rows_1 == inverter_times and rows_2 == meter_times   # every record, once, in order
        missing = [t for t, f in (r for b in blocks["DEVICEINDEX;2"] for r in b.rows) if f[0] == ""]
        assert missing and set(missing) >= {t for t in rows_2 if t - 1 in stopped - edges}
        assert set(missing) <= {t for t in rows_2 if t - 1 in stopped | edges}
        assert min(rows_2) < min(missing) and max(rows_2) > max(missing)  # good, stopped, good

        # parameters: the meter's Setup and the inverter's common model, in the _P_ file
        params = {p.name: p.read_bytes()
                  for p in (server1 / "DATA").glob(f"{UID}_MODBUS_P_*.csv.gz")}
        assert params
        p_blocks = blocks_of(params)
        assert p_blocks["DEVICEINDEX;2"][0].columns == [4]
        assert {tuple(f) for b in p_blocks["DEVICEINDEX;2"] for _, f in b.rows} == {("7",)}
        common = p_blocks["DEVICEINDEX;1"][0].rows[0][1]
        assert "ACME" in common and "Solar Inverter" in common and "SN-42" in common

        # ---- the FTP server got the same files; both got the configuration in force
        for name, data in {**delivered, **params}.items():
            assert (ftp_root / "DATA" / name).read_bytes() == data, name
        local_config = config_tree(cfg)
        assert len(local_config) == 7       # 4 CONFIG files, IO, inverter and meter definitions
        assert config_tree(server1) == local_config and config_tree(ftp_root) == local_config
        config_mtimes = tree_mtimes(server1)

        # ---- `sunpm export` from the live store gives byte-identical files
        day = datetime.fromtimestamp(min(rows_1), UTC).date()
        out = tmp_path / "export"
        run = await sunpm("export", "--server", "1", "--from", day.isoformat(), "--to",
                          (day + timedelta(days=2)).isoformat(), "--out", str(out),
                          "--config", str(cfg))
        assert run.code == 0, run.err
        exported = {p.name: p.read_bytes() for p in (out / "DATA").iterdir()}
        assert exported == {**delivered, **params}
        # `--upload` to server 2 (FTP): the delivered windows again, under the same names
        for name in exported:
            (ftp_root / "DATA" / name).unlink()
        run = await sunpm("export", "--server", "2", "--from", day.isoformat(), "--to",
                          (day + timedelta(days=2)).isoformat(), "--upload", "--config", str(cfg))
        assert run.code == 0, run.err
        assert {p.name: p.read_bytes() for p in (ftp_root / "DATA").iterdir()} == exported

        # ---- more records, then a stop
        await poll_for(site, log, 2.5)
    finally:
        await log.close()

    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (server1 / "DATA").iterdir()}

    # ---- restart: store and outboxes reopened, the second session sends only new windows.
    # Meanwhile the IS switched server 1 to day-first dates: the session applies that
    # configuration first, and the new window renders with it.
    remote_ini = server1 / "CONFIG" / f"{UID}_config.ini"
    remote_ini.write_bytes(remote_ini.read_bytes() + b"DIR_EuroDateFormat=1\n")
    config_mtimes = tree_mtimes(server1)
    site = load_site(cfg)
    log = await Log.open(store_dir, StoreOptions(flush_s=site.settings.store_flush_s))
    try:
        all_times = record_times(log, "1")
        assert max(all_times) > first_cut
        results = await deliver(site, log, cfg, datetime.now(UTC) + timedelta(seconds=1))
        assert all(r.ok for r in results), [r.reason for r in results]
        delivered_events = log.journal(kinds=["delivered"]).column("body").to_pylist()
        config_events = log.journal(kinds=["config"]).column("body").to_pylist()
    finally:
        await log.close()
    assert (cfg / "CONFIG" / remote_ini.name).read_bytes() == remote_ini.read_bytes()
    assert [json.loads(b)["origin"] for b in config_events] == ["server 1"]
    assert load_site(cfg).settings.servers[0].euro_date_format
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (server1 / "DATA").iterdir()}
    assert tree_mtimes(server1) == config_mtimes            # nothing sent back to server 1
    assert config_tree(ftp_root) == config_tree(cfg)        # server 2 got the new copy
    assert {k: after[k] for k in before} == before          # nothing of the first session again
    new = {k: v[0] for k, v in after.items() if k not in before and "_P_" not in k}
    assert new
    new_blocks = blocks_of(new, euro=True)
    new_rows = [t for b in new_blocks["DEVICEINDEX;1"] for t, _ in b.rows]
    assert new_rows == [t for t in all_times if t not in set(rows_1)]
    for block in new_blocks["DEVICEINDEX;1"]:
        check_inverter(block, site, set())
    # each file delivered once per server
    keys = [(b["server"], b.get("file")) for b in map(json.loads, delivered_events)]
    assert len(keys) == len(set(keys)), keys
    assert {f for s, f in keys if s == 1} == set(after) | {
        p.name for d in ("LOG", "ALARM", "CMD") for p in (server1 / d).iterdir()}
    # Server 2 keeps year-first dates: same names and rows, other date text.
    assert sorted(p.name for p in (ftp_root / "DATA").iterdir()) == sorted(after)
    for name in before:
        assert (ftp_root / "DATA" / name).read_bytes() == after[name][0], name
    ftp_new = {k: (ftp_root / "DATA" / k).read_bytes() for k in new}
    assert blocks_of(ftp_new) == new_blocks
