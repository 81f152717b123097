"""`sunpm export` and backfill: a re-export of past windows equals the uploaded files byte for byte.

Runs the real views over a real store through a `dir` server, then the command line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from delivery_support import DAY, NS, T0, make_tree
from mqtt_clients import subscriber
from mqtt_clients import wait_for as mqtt_wait_for
from peers import Broker

from config import load_site
from config.model import ServerSettings
from exporters.outbox import Outbox
from exporters.rendering.backfill import plan_backfill, render_backfill
from exporters.rendering.source import StoreSource, store_source
from exporters.session import FileServerSession, MqttSession, Trigger
from exporters.transports import DirTransport, open_transport
from exporters.views.windows import Rendered
from pipeline.cli import main
from store import Log, StoreOptions
from store.delivery import FILE_SERVER_STREAMS, DeliveryState, Stream, WindowSpec
from store.events import GatewayAlarm, LogLevel, LogLine

UID = "WPMTEST01"
IO_DEF = (b"io;WebdynSunPM;Webdyn;ioSunPM\n"
          b"1;1;1;1;;AI1;;1;0;mA;4\n"
          b"2;1;2;1;;AI2;;0.1;0;mA;4\n")
DAQ = (b"index;interface;name;address;acqPeriod(s);timeout(ms);serialNumber;parameters;category;"
       b"model;defFile\nIO;;Io;;600;;;;WebdynSunPM;ioSunPM;WPMTEST01_IO.csv\n")


def make_site(root: Path, server_root: Path, store_dir: Path) -> Path:
    files = {
        f"CONFIG/{UID}_config.ini": (f"SERVER_Type=dir\nDIR_Path={server_root}\n"
                                     f"STORE_Path={store_dir}\nNTP_TimeZone=Europe/Paris\n"
                                     ).encode(),
        f"CONFIG/{UID}_daq.csv": DAQ,
        f"CONFIG/{UID}_var.ini": b"",
        f"CONFIG/{UID}_scl.ini": b"",
        f"DEF/{UID}_IO.csv": IO_DEF,
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


async def record(log: Log, def_id: str, times_s: list[int]) -> None:
    n = len(times_s)
    batch = pa.record_batch({
        "ts": pa.array([t * NS for t in times_s for _ in (1, 2)], pa.timestamp("ns", tz="UTC")),
        "var": pa.array([v for _ in times_s for v in (1, 2)], pa.int32()),
        "value": pa.array([float(t % 997) / 4 if v == 1 else None
                           for t in times_s for v in (1, 2)], pa.float64()),
        "vmin": pa.array([None] * 2 * n, pa.float64()),
        "vmax": pa.array([None] * 2 * n, pa.float64()),
        "text": pa.array([None] * 2 * n, pa.string()),
        "quality": pa.array([0] * 2 * n, pa.uint8()),
        "def": pa.array([def_id] * 2 * n).dictionary_encode(),
    })
    await log.append_records("IO", batch)  # consecutive rows of one time form one record


async def deliver_three_days(tmp_path: Path, late_us: int = 0) -> tuple[Path, Path, Path]:
    """Three days delivered in two sessions; `late_us` puts the alarms, log lines and session
    starts that many microseconds after their whole second, as a running gateway's are."""
    server = make_tree(tmp_path / "server")
    store_dir = tmp_path / "store"
    cfg = make_site(tmp_path / "cfg", server, store_dir)
    site = load_site(cfg)
    log = await Log.open(store_dir, StoreOptions(flush_s=0.05))
    try:
        def_id = log.put_definition(f"{UID}_IO.csv", IO_DEF)
        times = list(range(T0 + 600, T0 + 3 * DAY, 600))
        # Records arrive in day-sized commits, as a recorder would commit them.
        for day in range(3):
            await asyncio.gather(record(log, def_id, [t for t in times if (t - T0) // DAY == day]),
                                 log.commit())
            await asyncio.gather(
                log.append_journal("alarm", json.loads(GatewayAlarm(alarm="Power ON").to_body()),
                                   ts_ns=(T0 + day * DAY + 7 * 3600) * NS + late_us * 1000),
                log.append_journal("log", json.loads(LogLine(
                    level=LogLevel.INFO, category="system", message=f"day {day}").to_body()),
                    ts_ns=(T0 + day * DAY + 8 * 3600) * NS + late_us * 1000),
                log.commit())
        settings: ServerSettings = site.settings.servers[0]
        outbox = Outbox(server=1, log=log, source=store_source(log, site, 1),
                        directory=store_dir / "outbox" / "1", streams=FILE_SERVER_STREAMS)
        session = FileServerSession(settings=settings, uid=UID, transport=DirTransport(settings),
                                    outbox=outbox, log=log)
        # Two sessions: one day, then the two-day rest split at midnight.
        for cut in (T0 + DAY - 1800, T0 + 3 * DAY - 1200):
            result = await session.run(Trigger.SCHEDULE, started=datetime.fromtimestamp(cut, UTC)
                                       + timedelta(microseconds=late_us))
            assert result.ok
    finally:
        await log.close()
    return server, store_dir, cfg


def tree_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for d in ("DATA", "ALARM", "LOG", "CMD") for p in (root / d).glob("*")}


async def test_backfill_renders_every_delivered_window_byte_for_byte(tmp_path: Path) -> None:
    server, store_dir, cfg = await deliver_three_days(tmp_path)
    delivered = tree_files(server)
    # Windows: [.., Feb 1 23:30) then [Feb 1 23:30, Feb 3 23:40) split at both midnights;
    # alarms and log lines at 07:00 and 08:00 each day.
    ends = ("210201_233000", "210202_000000", "210203_000000", "210203_234000")
    with_events = (ends[0], ends[2], ends[3])
    assert sorted(delivered) == sorted(
        [f"ALARM/{UID}_AL_{e}.csv.gz" for e in with_events]
        + [f"DATA/{UID}_IO_{e}.csv.gz" for e in ends]
        + [f"LOG/{UID}_LOG_{e}.log.gz" for e in with_events])
    log = await Log.open(store_dir, read_only=True)
    try:
        site = load_site(cfg)
        source = store_source(log, site, 1)
        # A re-export reads the whole history, as `sunpm export` does (the outbox's own state
        # forgets windows behind the cursor).
        state = DeliveryState.from_table(log.journal(kinds=["state", "window", "delivered"]))
        plan = plan_backfill(state, source, server=1, streams=FILE_SERVER_STREAMS,
                             start_ns=T0 * NS, end_ns=(T0 + 4 * DAY) * NS)
        rebuilt = {f"{f.rendered.directory.strip('/')}/{f.rendered.name}": f
                   for files in render_backfill(source, plan) for f in files}
    finally:
        await log.close()
    for name, data in delivered.items():
        assert rebuilt[name].rendered.data == data, name
        assert rebuilt[name].same_bytes is True
    # Past the last built window the range is new: cut at midnight and at the end of the range.
    extra = sorted(set(rebuilt) - set(delivered))
    assert all(rebuilt[n].window.built is None for n in extra)


@pytest.mark.slow
def test_sunpm_export_out_and_upload_give_the_delivered_files(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    server, store_dir, cfg = asyncio.run(deliver_three_days(tmp_path))
    delivered = tree_files(server)
    out = tmp_path / "out"
    code = main(["export", "--server", "1", "--from", "2021-02-01", "--to", "2021-02-03T23:40Z",
                 "--out", str(out), "--config", str(cfg), "--store", str(store_dir)])
    assert code == 0, capsys.readouterr().err
    assert tree_files(out) == delivered

    for path in list((server / "DATA").iterdir()):
        path.unlink()
    code = main(["export", "--server", "1", "--from", "2021-02-02T00:00:00+01:00",
                 "--to", "2021-02-05", "--upload", "--config", str(cfg)])
    assert code == 0, capsys.readouterr().err
    again = tree_files(server)
    # Every delivered window overlapping the range went up again, under its own name.
    assert again == delivered
    assert "stopping at 2021-02-03T23:40:00+00:00: later records are the sessions' to deliver " \
        "(server 1 cursor)" in capsys.readouterr().err

    # A range from before the first window built: that part has no window to send again, and
    # the upload still stops at the cursor, not at the range's start.
    for path in list((server / "DATA").iterdir()):
        path.unlink()
    code = main(["export", "--server", "1", "--from", "2021-01-25", "--to", "2021-02-05",
                 "--upload", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert tree_files(server) == delivered
    assert "stopping at 2021-02-03T23:40:00+00:00: " in err, err
    # Each stream's own span: DATA's windows from its first record on went up, even though the
    # first alarm and log line, and so their streams' first windows, came hours later.
    assert ("not uploaded: ALARM 2021-01-25T00:00:00+00:00 to 2021-02-01T07:00:00+00:00; "
            "DATA 2021-01-25T00:00:00+00:00 to 2021-02-01T00:10:00+00:00; "
            "LOG 2021-01-25T00:00:00+00:00 to 2021-02-01T08:00:00+00:00: no window of server 1 "
            "is journaled there (--out rebuilds it)\n") in err, err


def test_sunpm_export_upload_says_its_times_to_the_second(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    # A gateway's sessions and alarms fall within a second: the cursor and the streams' first
    # windows are said as every other time the command line shows, without the microseconds.
    _server, _store_dir, cfg = asyncio.run(deliver_three_days(tmp_path, late_us=6404))
    code = main(["export", "--server", "1", "--from", "2021-01-25", "--to", "2021-02-05",
                 "--upload", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "stopping at 2021-02-03T23:40:00+00:00: " in err, err
    assert ("not uploaded: ALARM 2021-01-25T00:00:00+00:00 to 2021-02-01T07:00:00+00:00; "
            "DATA 2021-01-25T00:00:00+00:00 to 2021-02-01T00:10:00+00:00; "
            "LOG 2021-01-25T00:00:00+00:00 to 2021-02-01T08:00:00+00:00: ") in err, err
    assert ".006404" not in err, err


def test_sunpm_export_renders_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _server, store_dir, cfg = asyncio.run(deliver_three_days(tmp_path))
    threads: list[str] = []
    real_render = StoreSource.render

    def render(self: StoreSource, spec: WindowSpec) -> list[Rendered]:
        # The loop runs in the main thread (asyncio.run); a window rendered there blocks it.
        threads.append(threading.current_thread().name)
        return real_render(self, spec)

    monkeypatch.setattr(StoreSource, "render", render)
    code = main(["export", "--server", "1", "--from", "2021-02-01", "--to", "2021-02-03",
                 "--out", str(tmp_path / "out"), "--config", str(cfg), "--store", str(store_dir)])
    assert code == 0, capsys.readouterr().err
    assert len(threads) >= 2 and threading.main_thread().name not in threads


def test_export_of_an_mqtt_server_writes_one_json_file_per_message(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _server, store_dir, cfg = asyncio.run(deliver_three_days(tmp_path))
    ini = cfg / "CONFIG" / f"{UID}_config.ini"
    ini.write_bytes(ini.read_bytes() + b"SERVER2_Type=mqtt\nMQTT2_Host=127.0.0.1\n"
                    b"MQTT2_TopicData=plant/data\nMQTT2_MaxPayloadKB=2\n")
    out = tmp_path / "mqtt-out"
    code = main(["export", "--server", "2", "--from", "2021-02-02", "--to", "2021-02-03",
                 "--out", str(out), "--config", str(cfg), "--store", str(store_dir)])
    assert code == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    # One day, no window built for server 2: one window; its records split at 2 KiB.
    assert len(names) > 1
    assert names == [f"{UID}_MQTT_210203_000000_{k}.json" for k in range(1, len(names) + 1)]
    records = [r for n in names for r in json.loads((out / n).read_bytes())["Io"]]
    assert all(len((out / n).read_bytes()) <= 2048 for n in names)
    assert len(records) == 144
    assert records[0]["date"] == "21/02/02-01:00:00"  # Europe/Paris; the record of 00:00 UTC


async def test_export_is_refused_when_the_quota_deleted_records_of_the_range(
        tmp_path: Path) -> None:
    from delivery_support import records_batch

    from exporters.rendering.backfill import missing_records
    from store import FullPolicy
    # Uncompressed sealed segments: their size, and so the days the quota holds, stays known.
    log = await Log.open(tmp_path / "store", StoreOptions(
        flush_s=0.05, device_quota_bytes=96 * 1024, full_policy=FullPolicy.EVICT_OLDEST,
        compress_sealed=False))
    try:
        for day in range(12):  # segments seal at UTC midnight; the oldest ones get evicted
            times = list(range(T0 + day * DAY + 600, T0 + (day + 1) * DAY + 1, 600))
            await log.append_records("1", records_batch(times))
        first_seq = min(log.records("1").column("seq").to_pylist())
        assert first_seq > 1, "the quota evicted nothing; make the quota smaller"
        problems = missing_records(log, T0 * NS, (T0 + 12 * DAY) * NS)
        assert len(problems) == 1 and problems[0].startswith(
            f"device 1: records 1..{first_seq - 1} were deleted by the quota")
        oldest = min(log.records("1").column("ts").cast("int64").to_pylist())
        assert missing_records(log, oldest, (T0 + 12 * DAY) * NS) == []
    finally:
        await log.close()


@pytest.mark.parametrize("holds", [[], ["notes.txt"]])
def test_sunpm_export_refuses_a_store_path_that_holds_no_store(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], holds: list[str]) -> None:
    cfg = tmp_path / "site"
    assert main(["config", "init", str(cfg), "--uid", "U1"]) == 0
    ini = cfg / "CONFIG" / "U1_config.ini"
    ini.write_text(ini.read_text() + f"SERVER_Type=dir\nDIR_Path={tmp_path / 'server'}\n")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for name in holds:
        (wrong / name).write_text("?")
    capsys.readouterr()
    code = main(["export", "--server", "1", "--from", "2021-02-01", "--to", "2021-02-02",
                 "--out", str(tmp_path / "out"), "--config", str(cfg), "--store", str(wrong)])
    assert code == 2
    assert capsys.readouterr().err == (f"sunpm export: {wrong}: not a sunpm store (no devices/ "
                                       "or journal/ folder)\n")
    assert sorted(p.name for p in wrong.iterdir()) == holds
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("store", "said"), [("missing", "no such directory"),
                                              ("notes.txt", "not a directory"),
                                              (None, "no store: give --store or set STORE_Path")])
def test_sunpm_export_refuses_an_unusable_store_path_with_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], store: str | None, said: str) -> None:
    cfg = tmp_path / "site"
    assert main(["config", "init", str(cfg), "--uid", "U1"]) == 0
    ini = cfg / "CONFIG" / "U1_config.ini"
    ini.write_text(ini.read_text() + f"SERVER_Type=dir\nDIR_Path={tmp_path / 'server'}\n")
    (tmp_path / "notes.txt").write_text("?")
    capsys.readouterr()
    where = ["--store", str(tmp_path / store)] if store else []
    code = main(["export", "--server", "1", "--from", "2021-02-01", "--to", "2021-02-02",
                 "--out", str(tmp_path / "out"), "--config", str(cfg), *where])
    assert code == 2
    prefix = f"{tmp_path / store}: " if store else ""
    assert capsys.readouterr().err == f"sunpm export: {prefix}{said}\n"
    assert not (tmp_path / "out").exists()


async def test_sunpm_export_upload_to_mqtt_publishes_the_delivered_documents(
        tmp_path: Path, broker: Broker) -> None:
    """`--upload` to an MQTT server publishes the data documents of the windows it received,
    the same bytes on its data topic, and says it published messages, not files."""
    server = make_tree(tmp_path / "server")
    store_dir = tmp_path / "store"
    cfg = make_site(tmp_path / "cfg", server, store_dir)
    ini = cfg / "CONFIG" / f"{UID}_config.ini"
    ini.write_text(ini.read_text() + f"SERVER2_Type=mqtt\nMQTT2_Host=127.0.0.1\n"
                                     f"MQTT2_Port={broker.plain_port}\nMQTT2_TopicData=p/data\n")
    site = load_site(cfg)
    settings = site.settings.servers[1]
    log = await Log.open(store_dir, StoreOptions(flush_s=0.05))
    try:
        def_id = log.put_definition(f"{UID}_IO.csv", IO_DEF)
        await asyncio.gather(record(log, def_id, list(range(T0 + 600, T0 + 2 * DAY, 600))),
                             log.commit())
        outbox = Outbox(server=2, log=log, source=store_source(log, site, 2),
                        directory=store_dir / "outbox" / "2", streams=(Stream.DATA,))
        transport = open_transport(settings, cfg / "CERT")
        async with subscriber(broker.plain_port, "p/data", identifier="first") as first:
            session = MqttSession(settings=settings, transport=transport, outbox=outbox, log=log)
            result = await session.run(Trigger.SCHEDULE,
                                       started=datetime.fromtimestamp(T0 + DAY + 3600, UTC))
            assert result.ok and result.files == 2     # split at midnight
            await mqtt_wait_for(first, 2)
    finally:
        await log.close()
    async with subscriber(broker.plain_port, "p/data", identifier="again") as again:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline.cli", "export", "--server", "2", "--from",
            "2021-01-31", "--to", "2021-02-04", "--upload", "--config", str(cfg),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[3])
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        await mqtt_wait_for(again, 2)
        await asyncio.sleep(0.5)
    assert [p for _, p in again] == [p for _, p in first]
    assert out.decode() == "2 messages published (2 windows)\n"
    assert "stopping at 2021-02-02T01:00:00+00:00: " in err.decode()
