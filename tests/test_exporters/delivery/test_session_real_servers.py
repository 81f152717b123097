"""Whole server-1 sessions against the servers information systems run (tests/real_servers.py):
vsftpd (FTP, FTPS), ProFTPD, OpenSSH internal-sftp (the host key pinned by its `ssh-keygen -lf`
fingerprint, for each key type) and Apache mod_dav (Basic, Digest).

Each runs the real views over a real store: configuration sync (local files up, then a change made
on the server applied), the command file (fetched, deleted, answered), DATA and ALARM windows, and
the ACK file of the answers in the next session; every record reaches the server exactly once.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from delivery_support import NS
from peers import Certs, make_certs
from real_servers import REAL_SERVERS, RealServer, real_server, require

from config import check_site_change, load_site
from config.model import ServerSettings
from exporters.outbox import Outbox
from exporters.rendering.source import store_source
from exporters.session import CollectingHandler, FileServerSession, SessionResult, Trigger
from exporters.transports import FileTransport, Timeouts, open_transport
from store import Log, StoreOptions
from store.delivery import FILE_SERVER_STREAMS
from store.events import GatewayAlarm

UID = "WPMTEST01"
TREE = ("CONFIG", "DEF", "SCRIPT", "CERT", "DATA", "CMD", "ALARM", "LOG", "BIN")
IO_DEF = (b"io;WebdynSunPM;Webdyn;ioSunPM\n"
          b"1;1;1;1;;AI1;;1;0;mA;4\n")
DAQ = (b"index;interface;name;address;acqPeriod(s);timeout(ms);serialNumber;parameters;category;"
       b"model;defFile\nIO;;Io;;600;;;;WebdynSunPM;ioSunPM;WPMTEST01_IO.csv\n")
ROW = re.compile(r"^\d\d/\d\d/\d\d")
TIMEOUTS = Timeouts(connect_s=10, operation_s=20)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module", params=list(REAL_SERVERS))
def server(request: pytest.FixtureRequest, certs: Certs) -> Iterator[RealServer]:
    require(request.param)
    with real_server(request.param, certs) as running:
        yield running


def server_keys(settings: ServerSettings) -> str:
    """config.ini lines of server 1 pointing at `settings`."""
    if settings.type.value == "webdav":
        return (f"SERVER_Type=webdav\nHTTP_Url={settings.http_url}\nHTTP_User={settings.user}\n"
                f"HTTP_Password={settings.password}\nHTTP_CaFile=ca.pem\n"
                "HTTP_TwoStepsSendingDisabled=0\n")
    lines = (f"SERVER_Type={settings.type.value}\nFTP_Host={settings.host}\n"
             f"FTP_Port={settings.port}\nFTP_User={settings.user}\n"
             f"FTP_Password={settings.password}\nFTP_RootDir={settings.root_dir}\n"
             "FTP_TwoStepsSendingDisabled=0\n")
    if settings.type.value == "ftps":
        lines += "FTP_CaFile=ca.pem\n"
    if settings.type.value == "sftp":
        lines += f"FTP_HostKey={settings.host_key}\n"
    return lines


def make_site(root: Path, settings: ServerSettings, store_dir: Path, certs: Certs) -> Path:
    files = {
        f"CONFIG/{UID}_config.ini": (server_keys(settings) + f"STORE_Path={store_dir}\n").encode(),
        f"CONFIG/{UID}_daq.csv": DAQ,
        f"CONFIG/{UID}_var.ini": b"",
        f"CONFIG/{UID}_scl.ini": b"",
        f"DEF/{UID}_IO.csv": IO_DEF,
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "SCRIPT").mkdir(exist_ok=True)
    (root / "CERT").mkdir(exist_ok=True)
    shutil.copy(certs.dir / certs.ca, root / "CERT" / "ca.pem")
    return root


async def record(log: Log, def_id: str, times_s: list[int]) -> None:
    n = len(times_s)
    await log.append_records("IO", pa.record_batch({
        "ts": pa.array([t * NS for t in times_s], pa.timestamp("ns", tz="UTC")),
        "var": pa.array([1] * n, pa.int32()),
        "value": pa.array([float(t % 997) / 4 for t in times_s], pa.float64()),
        "vmin": pa.array([None] * n, pa.float64()),
        "vmax": pa.array([None] * n, pa.float64()),
        "text": pa.array([None] * n, pa.string()),
        "quality": pa.array([0] * n, pa.uint8()),
        "def": pa.array([def_id] * n).dictionary_encode(),
    }))
    await log.commit()


async def session(log: Log, cfg: Path, handler: CollectingHandler, cut_s: float,
                  trigger: Trigger) -> SessionResult:
    site = load_site(cfg)
    settings = site.settings.servers[0]
    transport = open_transport(settings, cfg / "CERT", timeouts=TIMEOUTS)
    assert isinstance(transport, FileTransport)
    outbox = Outbox(server=1, log=log, source=store_source(log, site, 1),
                    directory=Path(site.settings.store_path) / "outbox" / "1",
                    streams=FILE_SERVER_STREAMS)
    async with asyncio.timeout(120):
        return await FileServerSession(
            settings=settings, uid=UID, transport=transport, outbox=outbox, log=log,
            config_dir=cfg, validate=check_site_change, commands=handler).run(
                trigger, started=datetime.fromtimestamp(cut_s, UTC))


def rows_of(folder: Path) -> list[str]:
    return [line for path in sorted(folder.iterdir()) if path.name.endswith(".gz")
            for line in gzip.decompress(path.read_bytes()).decode().split("\n")
            if ROW.match(line)]


async def test_full_sessions_deliver_every_record_once(server: RealServer, certs: Certs,
                                                       tmp_path: Path) -> None:
    tree = server.make_tree(f"site-{tmp_path.name}", TREE)
    settings = server.settings(tree)
    cfg = make_site(tmp_path / "cfg", settings, tmp_path / "store", certs)
    (tree / "CMD" / f"{UID}_cmd.json").write_text(
        '[{"rpcName": "sunpm.getParameters", "callerId": "c-1"}]')
    now = int(time.time())
    t0 = now - now % 3600 - 4 * 3600
    first = list(range(t0 + 600, t0 + 3 * 3600, 600))
    later = list(range(t0 + 3 * 3600, t0 + 3 * 3600 + 1800, 600))
    async with await Log.open(tmp_path / "store", StoreOptions(flush_s=0.02)) as log:
        def_id = log.put_definition(f"{UID}_IO.csv", IO_DEF)
        await record(log, def_id, first)
        for t in (t0 + 3600, t0 + 7200):
            await log.append_journal("alarm",
                                     json.loads(GatewayAlarm(alarm="Power ON").to_body()),
                                     ts_ns=t * NS)
        await log.commit()
        handler = CollectingHandler(log)

        result = await session(log, cfg, handler, now, Trigger.STARTUP)
        assert result.ok, (result.reason, server.log_tail())
        assert result.commands == 1
        assert [c.caller_id for c in handler.received] == ["c-1"]
        assert not (tree / "CMD" / f"{UID}_cmd.json").exists()
        for rel in (f"CONFIG/{UID}_config.ini", f"CONFIG/{UID}_daq.csv", f"DEF/{UID}_IO.csv"):
            assert (tree / rel).read_bytes() == (cfg / rel).read_bytes(), rel
        assert sorted(p.name for p in (tree / "ALARM").iterdir()) != []

        # The information system changes a file; more records come; the next session applies
        # the change, sends the new records and the answers to the command file.
        var_ini = b"SCHEDULE_Params[0]=1|everyday|00:00:00|30|48\n"
        (tree / "CONFIG" / f"{UID}_var.ini").write_bytes(var_ini)
        await record(log, def_id, later)
        result = await session(log, cfg, handler, time.time() + 1, Trigger.SCHEDULE)
        assert result.ok, (result.reason, server.log_tail())
        assert (cfg / "CONFIG" / f"{UID}_var.ini").read_bytes() == var_ini

    rows = rows_of(tree / "DATA")
    assert len(rows) == len(set(rows)) == len(first) + len(later), rows
    alarms = rows_of(tree / "ALARM")
    assert len(alarms) == len(set(alarms)) == 2, alarms
    acks = [p for p in (tree / "CMD").iterdir() if "_ACK_" in p.name]
    assert len(acks) == 1, sorted(p.name for p in (tree / "CMD").iterdir())
    assert "c-1" in acks[0].read_text()
    leftovers = list(tree.rglob("*.tmp"))
    assert leftovers == []


@pytest.mark.parametrize("server", ["apache-basic"], indirect=True)
async def test_apache_unwritable_folder_stops_only_its_stream(server: RealServer, certs: Certs,
                                                              tmp_path: Path) -> None:
    # Apache answers a PUT into a folder it may not write with 500: the ALARM stream stops, the
    # DATA windows go on, and the session is retried as refused (not "busy" every few minutes).
    tree = server.make_tree(f"site-{tmp_path.name}", TREE)
    cfg = make_site(tmp_path / "cfg", server.settings(tree), tmp_path / "store", certs)
    (tree / "ALARM").chmod(0o555)
    now = int(time.time())
    t0 = now - now % 3600 - 2 * 3600
    times = list(range(t0 + 600, t0 + 2 * 3600, 600))
    async with await Log.open(tmp_path / "store", StoreOptions(flush_s=0.02)) as log:
        def_id = log.put_definition(f"{UID}_IO.csv", IO_DEF)
        await record(log, def_id, times)
        await log.append_journal("alarm", json.loads(GatewayAlarm(alarm="Power ON").to_body()),
                                 ts_ns=(t0 + 3600) * NS)
        await log.commit()
        handler = CollectingHandler(log)
        result = await session(log, cfg, handler, now, Trigger.STARTUP)
        assert not result.ok and not result.retriable, result.reason
        assert "/ALARM: upload refused (500 " in (result.reason or "")
        assert len(rows_of(tree / "DATA")) == len(times)
        assert list((tree / "ALARM").iterdir()) == []

        (tree / "ALARM").chmod(0o777)
        result = await session(log, cfg, handler, now + 1, Trigger.RETRY)
        assert result.ok, result.reason
    assert len(rows_of(tree / "ALARM")) == 1
    rows = rows_of(tree / "DATA")
    assert len(rows) == len(set(rows)) == len(times)
