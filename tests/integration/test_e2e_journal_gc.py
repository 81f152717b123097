"""Delivery state across journal garbage collection: the store deletes journal segments once a
later `state` event holds the replayed state (the delivery state included: store/README.md);
the outbox of the next session must still know what was
delivered, so nothing is sent twice."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from e2e_support import NS, UID, edit_config, edit_daq, make_tree, sunpm

from config import check_site_change, load_site
from config.model import Device
from exporters.outbox import Outbox
from exporters.rendering.source import store_source
from exporters.session import FileServerSession, Trigger
from exporters.transports import FileTransport, open_transport
from store import Log, StoreOptions
from store.delivery import FILE_SERVER_STREAMS
from store.state import replay

IO_DEF = b"io;WebdynSunPM;Webdyn;ioSunPM\n1;1;1;1;;AI1;;1;0;mA;4\n"
#: 2026-01-05 00:00 UTC.
T0 = 1_767_571_200


def records(def_id: str, times_s: list[int]) -> pa.RecordBatch:
    """IO records as the recorder makes them: one row (AI1) per record time."""
    n = len(times_s)
    return pa.record_batch({
        "ts": pa.array([t * NS for t in times_s], pa.timestamp("ns", tz="UTC")),
        "var": pa.array([1] * n, pa.int32()),
        "value": pa.array([float(t % 1000) / 8 for t in times_s], pa.float64()),
        "vmin": pa.array([None] * n, pa.float64()),
        "vmax": pa.array([None] * n, pa.float64()),
        "text": pa.array([None] * n, pa.string()),
        "quality": pa.array([0] * n, pa.uint8()),
        "def": pa.array([def_id] * n).dictionary_encode(),
    })


async def session(log: Log, cfg: Path, cut_s: int) -> None:
    site = load_site(cfg)
    settings = site.settings.servers[0]
    transport = open_transport(settings, cfg / "CERT")
    assert isinstance(transport, FileTransport)
    outbox = Outbox(server=1, log=log, source=store_source(log, site, 1),
                    directory=Path(site.settings.store_path) / "outbox" / "1",
                    streams=FILE_SERVER_STREAMS)
    result = await FileServerSession(settings=settings, uid=UID, transport=transport,
                                     outbox=outbox, log=log, config_dir=cfg,
                                     validate=check_site_change).run(
        Trigger.SCHEDULE, started=datetime.fromtimestamp(cut_s, UTC))
    assert result.ok, result.reason


async def test_nothing_is_sent_twice_after_the_journal_segments_holding_the_windows_went(
        tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    run = await sunpm("config", "init", str(cfg), "--uid", UID)
    assert run.code == 0, run.err
    (cfg / "DEF" / f"{UID}_IO.csv").write_bytes(IO_DEF)
    edit_daq(cfg, lambda rows: [Device(line=d.line, index=d.index, interface="", name=d.name,
                                       address=None, acq_period_s=600, def_file=d.def_file)
                                for d in rows])
    server = make_tree(tmp_path / "server")
    edit_config(cfg, {"SERVER_Type": "dir", "DIR_Path": str(server),
                      "STORE_Path": str(tmp_path / "store")})
    options = StoreOptions(flush_s=0.005, journal_quota_bytes=20_000)
    async with await Log.open(tmp_path / "store", options) as log:
        # What the service installs: state snapshots, which keep the delivery state.
        log.set_state_provider(lambda: replay(log).to_body())
        def_id = log.put_definition(f"{UID}_IO.csv", IO_DEF)
        await log.append_records("IO", records(def_id, [T0 + 600 * k for k in range(1, 7)]))
        await session(log, cfg, T0 + 3600)
        assert sorted(p.name for p in (server / "DATA").iterdir()) == \
            [f"{UID}_IO_260105_010000.csv.gz"]
        # A day of heartbeats: the journal passes its quota, a state event is asked for and the
        # segments holding the window and delivered events go.
        for i in range(300):
            await log.append_journal("heartbeat", {}, ts_ns=(T0 + 3600 + 10 * i) * NS)
        await log.commit()
        assert log.journal(kinds=["window"]).num_rows == 0, "the test needs the windows gone"
        assert log.journal(kinds=["sync"]).num_rows == 0, "and the sync events"
        # Meanwhile the configuration changes here (web page, command): the server's copy,
        # synced before, is now stale and must be replaced, not applied.
        edit_config(cfg, {"DAQ_PollPeriod": "5"})
        await log.append_records("IO", records(def_id, [T0 + 600 * k for k in range(7, 10)]))
        await session(log, cfg, T0 + 5400)

    local_ini = (cfg / "CONFIG" / f"{UID}_config.ini").read_bytes()
    assert b"DAQ_PollPeriod=5" in local_ini
    assert (server / "CONFIG" / f"{UID}_config.ini").read_bytes() == local_ini
    names = sorted(p.name for p in (server / "DATA").iterdir())
    assert names == [f"{UID}_IO_260105_010000.csv.gz", f"{UID}_IO_260105_013000.csv.gz"]
    rows = [line.split(";")[0] for name in names
            for line in gzip.decompress((server / "DATA" / name).read_bytes()).decode().split("\n")
            if line.startswith("26/")]
    # Every record before the cut once: [00:10, 01:00) then [01:00, 01:30).
    assert len(rows) == len(set(rows)) == 8
