"""File-server sessions against a real FTP server: configuration, commands, failures, server 2."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from delivery_support import DAY, T0, DemoSource, FtpPeer, fill, ftp_peer, make_tree

from config import check_site_change
from config.defaults import default_files
from config.model import ServerSettings, ServerType
from exporters.outbox import Outbox
from exporters.session import CollectingHandler, FileServerSession, SessionResult, Trigger
from exporters.session.config_sync import sha256_hex
from exporters.transports import FtpTransport, Timeouts
from store.delivery import Stream
from store.log import Log

UID = "WPMTEST01"
H = 3600
FAST = Timeouts(connect_s=3, operation_s=10)
CUT = datetime.fromtimestamp(T0 + 9 * H, UTC)


def settings(port: int, slot: int = 1, password: str = "secret") -> ServerSettings:
    return ServerSettings(slot=slot, type=ServerType.FTP, host="127.0.0.1", port=port,
                          user="sunpm", password=password, root_dir="/", two_step=True)


def make_session(store: Log, tmp: Path, port: int, *, slot: int = 1, password: str = "secret",
                 config_dir: Path | None = None, handler: CollectingHandler | None = None,
                 timeouts: Timeouts = FAST,
                 in_force: dict[str, bytes] | None = None) -> FileServerSession:
    s = settings(port, slot, password)
    outbox = Outbox(server=slot, log=store, source=DemoSource(store, UID),
                    directory=tmp / "store" / "outbox" / str(slot),
                    streams=(Stream.ALARM, Stream.DATA))
    return FileServerSession(settings=s, uid=UID, transport=FtpTransport(s, timeouts=timeouts),
                             outbox=outbox, log=store, config_dir=config_dir,
                             validate=lambda d, c: check_site_change(d, c, UID), commands=handler,
                             in_force=in_force)


#: What a session at CUT delivers of the day `fill` writes.
DAY_FILES = [f"/ALARM/{UID}_AL_210201_090000.csv.gz", f"/DATA/{UID}_MODBUS_210201_090000.csv.gz"]


async def session_on_tree(store: Log, tmp_path: Path, root: Path, *override: str,
                          config_dir: Path | None = None, handler: CollectingHandler | None = None
                          ) -> tuple[SessionResult, list[str]]:
    """A scheduled session at CUT against an FTP server of `root` (`override`: the server's
    `--override` rights); its result and the files it renamed into place."""
    with ftp_peer(root, tmp_path / "events.log", *override) as peer:
        result = await make_session(store, tmp_path, peer.port, config_dir=config_dir,
                                    handler=handler).run(Trigger.SCHEDULE, started=CUT)
        return result, peer.finals()


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name in ("sunpm.session", "sunpm.config")]


def windows(store: Log) -> int:
    return int(store.journal(kinds=["window"]).num_rows)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    root = tmp_path / "cfg"
    for rel, data in default_files(UID).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "SCRIPT").mkdir()
    return root


async def test_login_refused_fails_the_session_at_error_and_moves_nothing(
        store: Log, ftp: FtpPeer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await fill(store, T0, T0 + DAY)
    result = await make_session(store, tmp_path, ftp.port, password="wrong").run(
        Trigger.SCHEDULE, started=CUT)
    assert not result.ok and not result.retriable
    failed = [r for r in caplog.records if r.getMessage().startswith("server 1: session failed")]
    assert len(failed) == 1 and failed[0].levelno == logging.ERROR
    assert "authentication" in failed[0].getMessage()
    assert windows(store) == 0 and ftp.finals() == []


async def test_missing_directory_stops_its_stream_only_and_fails_the_session(
        store: Log, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await fill(store, T0, T0 + DAY)
    root = make_tree(tmp_path / "ftp", without=("DATA",))
    with ftp_peer(root, tmp_path / "events.log") as peer:
        result = await make_session(store, tmp_path, peer.port).run(Trigger.SCHEDULE,
                                                                     started=CUT)
        assert not result.ok and not result.retriable
        refusal = [r for r in caplog.records if r.getMessage().startswith("server 1: /DATA: ")]
        assert refusal and refusal[0].levelno == logging.ERROR
        assert "upload refused" in refusal[0].getMessage()
        assert messages(caplog)[-1].startswith("server 1: session failed: /DATA: upload refused")
        # ALARM went on; DATA's cursor did not move, its window waits for the next session.
        assert peer.finals() == [f"/ALARM/{UID}_AL_210201_090000.csv.gz"]
        cursors = Outbox(server=1, log=store, source=DemoSource(store, UID),
                         directory=tmp_path / "x", streams=(Stream.ALARM, Stream.DATA)).cursors()
        assert cursors == {Stream.ALARM: (T0 + 9 * H) * 10**9, Stream.DATA: None}
        (root / "DATA").mkdir()
        result = await make_session(store, tmp_path, peer.port).run(
            Trigger.RETRY, started=datetime.fromtimestamp(T0 + 10 * H, UTC))
        assert result.ok
        assert peer.finals()[1:] == [f"/DATA/{UID}_MODBUS_210201_090000.csv.gz",
                                     f"/ALARM/{UID}_AL_210201_100000.csv.gz",
                                     f"/DATA/{UID}_MODBUS_210201_100000.csv.gz"]


async def test_a_missing_configuration_directory_is_said_once_and_stops_its_uploads(
        store: Log, tmp_path: Path, config_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    root = make_tree(tmp_path / "ftp", without=("DEF",))
    with ftp_peer(root, tmp_path / "events.log") as peer:
        (config_dir / "DEF" / "spare.csv").write_bytes(b"io;;;\n")   # two files for /DEF
        result = await make_session(store, tmp_path, peer.port, config_dir=config_dir).run(
            Trigger.SCHEDULE, started=CUT)
        assert not result.ok and not result.retriable
        refusals = [m for m in messages(caplog) if m.startswith("server 1: /DEF: ")]
        assert refusals == ["server 1: /DEF: upload refused (550 No such file or directory.)"], \
            refusals
        # The other folders went on.
        assert sorted(p.name for p in (root / "CONFIG").iterdir()) == sorted(
            rel.split("/")[1] for rel in default_files(UID) if rel.startswith("CONFIG/"))


async def test_commands_are_journaled_deleted_then_handed_over(
        store: Log, ftp: FtpPeer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    (ftp.root / "CMD" / f"{UID}_cmd.json").write_text(
        '[{"rpcName": "sunpm.getParameters", "callerId": "c-1"}, 7,'
        ' {"rpcName": "sunpm.setRelay", "parameters": {"state": 1}, "callerId": 2}]')
    handler = CollectingHandler(store)
    result = await make_session(store, tmp_path, ftp.port, handler=handler).run(
        Trigger.SCHEDULE, started=CUT)
    assert result.ok and result.commands == 3
    assert messages(caplog)[-1] == "server 1: session ended OK (0 files uploaded, 3 commands)"
    assert not (ftp.root / "CMD" / f"{UID}_cmd.json").exists()
    assert [(c.rpc_name, c.caller_id) for c in handler.received] == [
        ("sunpm.getParameters", "c-1"), ("sunpm.setRelay", 2)]
    journal = store.journal(kinds=["command", "result"]).sort_by("seq")
    bodies = [(k, json.loads(b)) for k, b in zip(journal.column("kind").to_pylist(),
                                                  journal.column("body").to_pylist(), strict=True)]
    # The entry that cannot run is answered by the handler in its turn: the answers keep the
    # file's order.
    assert [k for k, _ in bodies] == ["command", "command", "result", "result", "result"]
    assert [(b.get("result"), b.get("error"), b["callerId"]) for k, b in bodies
            if k == "result"] == [
        ("OK", None, "c-1"), (None, f"{UID}_cmd.json: entry 2: not a command object", None),
        ("OK", None, 2)]


async def test_no_delete_right_on_cmd_runs_no_command(
        store: Log, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    root = make_tree(tmp_path / "ftp")
    (root / "CMD" / f"{UID}_cmd.json").write_text('{"rpcName": "sunpm.reboot"}')
    handler = CollectingHandler(store)
    result, _ = await session_on_tree(store, tmp_path, root, "--override", "/CMD=elrw",
                                      handler=handler)
    assert not result.ok and not result.retriable
    line = [r for r in caplog.records if r.getMessage().startswith("server 1: cannot delete")]
    assert len(line) == 1 and line[0].levelno == logging.ERROR
    assert line[0].getMessage().startswith(f"server 1: cannot delete /CMD/{UID}_cmd.json (")
    assert line[0].getMessage().endswith("); commands not executed")
    assert handler.received == []
    assert (root / "CMD" / f"{UID}_cmd.json").exists()


async def test_first_session_uploads_local_configuration_and_records_it_as_synced(
        store: Log, ftp: FtpPeer, tmp_path: Path, config_dir: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    result = await make_session(store, tmp_path, ftp.port, config_dir=config_dir).run(
        Trigger.STARTUP, started=CUT)
    assert result.ok
    for rel, data in default_files(UID).items():
        assert (ftp.root / rel).read_bytes() == data
    assert f"server 1: uploaded /CONFIG/{UID}_daq.csv ({len(default_files(UID)[f'CONFIG/{UID}_daq.csv'])} bytes)" in messages(caplog)
    # Nothing changed since: the next session uploads nothing.
    caplog.clear()
    result = await make_session(store, tmp_path, ftp.port, config_dir=config_dir).run(
        Trigger.SCHEDULE, started=CUT)
    assert result.ok and result.files == 0


async def test_a_file_deleted_on_server_1_is_uploaded_again(
        store: Log, ftp: FtpPeer, tmp_path: Path, config_dir: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await make_session(store, tmp_path, ftp.port, config_dir=config_dir).run(
        Trigger.STARTUP, started=CUT)
    files = default_files(UID)
    deleted = [f"CONFIG/{UID}_var.ini", f"DEF/{UID}_IO.csv"]   # a CONFIG file, a referenced one
    for rel in deleted:
        (ftp.root / rel).unlink()
    caplog.clear()
    result = await make_session(store, tmp_path, ftp.port, config_dir=config_dir).run(
        Trigger.SCHEDULE, started=CUT)
    assert result.ok and result.files == 2, messages(caplog)
    for rel in deleted:
        assert (ftp.root / rel).read_bytes() == files[rel]
        assert f"server 1: uploaded /{rel} ({len(files[rel])} bytes)" in messages(caplog)


async def test_changed_server_configuration_is_applied_whole(
        store: Log, ftp: FtpPeer, tmp_path: Path, config_dir: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await make_session(store, tmp_path, ftp.port, config_dir=config_dir).run(
        Trigger.STARTUP, started=CUT)
    var_ini = b"SCHEDULE_Params[0]=1|everyday|00:00:00|30|48\nSCHEDULE_Params[1]=2|everyday|x|0|1\n"
    (ftp.root / "CONFIG" / f"{UID}_var.ini").write_bytes(var_ini)
    caplog.clear()
    result = await make_session(store, tmp_path, ftp.port, config_dir=config_dir).run(
        Trigger.SCHEDULE, started=CUT)
    assert result.ok
    assert (config_dir / "CONFIG" / f"{UID}_var.ini").read_bytes() == var_ini
    applied = [m for m in messages(caplog) if m.startswith(f"{UID}_var.ini applied; warnings: ")]
    assert len(applied) == 1
    # Applied files are not written back; they are now the last synced copy.
    assert (ftp.root / "CONFIG" / f"{UID}_var.ini").read_bytes() == var_ini
    synced = [json.loads(b) for b in store.journal(kinds=["sync"]).sort_by("seq")
              .column("body").to_pylist()]
    assert synced[-1] == {"server": 1, "file": f"CONFIG/{UID}_var.ini",
                          "sha256": sha256_hex(var_ini)}
    # The configuration now in force is a snapshot in the store, journaled for the windows.
    (event,) = [json.loads(b) for b in store.journal(kinds=["config"]).column("body").to_pylist()]
    assert event["origin"] == "server 1" and event["files"] == [f"CONFIG/{UID}_var.ini"]
    assert store.get_config(event["snapshot"])[f"CONFIG/{UID}_var.ini"] == var_ini


async def test_local_only_keys_are_compared_with_the_configuration_in_force(
        store: Log, ftp: FtpPeer, tmp_path: Path, config_dir: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    in_force = default_files(UID)
    await make_session(store, tmp_path, ftp.port, config_dir=config_dir,
                       in_force=in_force).run(Trigger.STARTUP, started=CUT)
    rel = f"CONFIG/{UID}_config.ini"
    # A local edit not in force (rejected, or not applied yet) moves a local-only key; the
    # server's new file keeps the value in force: it changes no local-only key, and wins.
    (config_dir / rel).write_bytes(in_force[rel] + b"WEB_Port=9000\n")
    from_server = in_force[rel] + b"LOG_Level=debug\n"
    (ftp.root / rel).write_bytes(from_server)
    result = await make_session(store, tmp_path, ftp.port, config_dir=config_dir,
                                in_force=in_force).run(Trigger.SCHEDULE, started=CUT)
    assert result.ok
    assert f"{UID}_config.ini applied; warnings: 0" in messages(caplog), messages(caplog)
    assert (config_dir / rel).read_bytes() == from_server
    assert (f"server 1: {rel} changed on both sides; the server's copy replaces the local one"
            in messages(caplog))


async def test_bad_configuration_from_the_server_is_rejected_whole(
        store: Log, ftp: FtpPeer, tmp_path: Path, config_dir: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await make_session(store, tmp_path, ftp.port, config_dir=config_dir).run(
        Trigger.STARTUP, started=CUT)
    before = {p: p.read_bytes() for p in config_dir.rglob("*") if p.is_file()}
    good_var = b"SCHEDULE_Params[0]=1|everyday|00:00:00|30|48\n"
    bad_daq = (b"index;interface;name;address;acqPeriod(s);timeout(ms);serialNumber;parameters;"
               b"category;model;defFile\n"
               b"1;192.168.10.23;inv;300;600;1000;;;;;missing.csv\n")
    (ftp.root / "CONFIG" / f"{UID}_var.ini").write_bytes(good_var)
    (ftp.root / "CONFIG" / f"{UID}_daq.csv").write_bytes(bad_daq)
    for attempt in range(2):  # re-checked each session until fixed
        caplog.clear()
        result = await make_session(store, tmp_path, ftp.port, config_dir=config_dir).run(
            Trigger.SCHEDULE, started=CUT)
        assert result.ok
        errors = [r for r in caplog.records if r.name == "sunpm.config"
                  and r.levelno == logging.ERROR]
        texts = [r.getMessage() for r in errors]
        assert any(t.startswith(f"{UID}_daq.csv:2: ") for t in texts), texts
        assert f"{UID}_daq.csv rejected; errors: " in "\n".join(texts)
        assert (f"{UID}_var.ini rejected; errors: 0; running configuration unchanged"
                in texts), (attempt, texts)
        after = {p: p.read_bytes() for p in config_dir.rglob("*") if p.is_file()}
        assert after == before
        # The server's files are left for the operator to fix, never overwritten by ours.
        assert (ftp.root / "CONFIG" / f"{UID}_daq.csv").read_bytes() == bad_daq


class _Blackhole:
    """Accepts TCP connections and never says a word: a server that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]


@pytest.fixture
def blackhole() -> Iterator[_Blackhole]:
    hole = _Blackhole()
    try:
        yield hole
    finally:
        hole.sock.close()


async def test_server_2_hanging_never_delays_server_1(
        store: Log, ftp: FtpPeer, tmp_path: Path, blackhole: _Blackhole) -> None:
    await fill(store, T0, T0 + 3 * DAY)
    cut = datetime.fromtimestamp(T0 + 2 * DAY + 9 * H, UTC)
    one = make_session(store, tmp_path, ftp.port)
    two = make_session(store, tmp_path, blackhole.port, slot=2,
                       timeouts=Timeouts(connect_s=4, operation_s=4))
    finished: dict[int, float] = {}
    t0 = time.monotonic()

    async def run(slot: int, session: FileServerSession) -> None:
        await session.run(Trigger.SCHEDULE, started=cut)
        finished[slot] = time.monotonic() - t0

    async with asyncio.TaskGroup() as tg:
        tg.create_task(run(2, two), name="server-2")
        tg.create_task(run(1, one), name="server-1")
    assert len(ftp.finals()) == 6
    assert finished[1] < 3 <= finished[2]
    # Server 2 keeps its own cursors: nothing delivered there, nothing built before upload.
    assert Outbox(server=2, log=store, source=DemoSource(store, UID), directory=tmp_path / "x",
                  streams=(Stream.ALARM, Stream.DATA)).cursors() == {Stream.ALARM: None,
                                                                     Stream.DATA: None}


async def test_server_2_gets_copies_only(store: Log, ftp: FtpPeer, tmp_path: Path,
                                         config_dir: Path) -> None:
    await fill(store, T0, T0 + DAY)
    (ftp.root / "CMD" / f"{UID}_cmd.json").write_text('{"rpcName": "sunpm.reboot"}')
    (ftp.root / "CONFIG" / f"{UID}_var.ini").write_bytes(b"SCHEDULE_Params[0]=1|everyday|x|1|1\n")
    handler = CollectingHandler(store)
    result = await make_session(store, tmp_path, ftp.port, slot=2, config_dir=config_dir,
                                handler=handler).run(Trigger.SCHEDULE, started=CUT)
    assert result.ok and result.commands == 0 and handler.received == []
    # No download, no command file taken; its own copy of configuration and streams.
    assert (ftp.root / "CMD" / f"{UID}_cmd.json").exists()
    for rel, data in default_files(UID).items():
        assert (ftp.root / rel).read_bytes() == data
    assert (config_dir / "CONFIG" / f"{UID}_var.ini").read_bytes() == \
        default_files(UID)[f"CONFIG/{UID}_var.ini"]
    assert [n for n in ftp.finals() if not n.startswith(("/CONFIG/", "/DEF/"))] == DAY_FILES


async def test_an_unreadable_command_file_stops_only_the_commands(
        store: Log, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # docs/behaviour.md §4.5: a right lacking on /CMD stops what needs it; the streams go on.
    caplog.set_level(logging.INFO)
    await fill(store, T0, T0 + DAY)
    root = make_tree(tmp_path / "ftp")
    (root / "CMD" / f"{UID}_cmd.json").write_text('{"rpcName": "sunpm.reboot"}')
    handler = CollectingHandler(store)
    result, finals = await session_on_tree(store, tmp_path, root, "--override", "/CMD=eld",
                                           handler=handler)
    assert not result.ok and not result.retriable
    assert messages(caplog)[-1].startswith("server 1: session failed: /CMD: download refused")
    assert finals == DAY_FILES
    assert handler.received == []
    assert (root / "CMD" / f"{UID}_cmd.json").exists()


async def test_unreadable_config_directory_stops_only_the_configuration_step(
        store: Log, tmp_path: Path, config_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await fill(store, T0, T0 + DAY)
    root = make_tree(tmp_path / "ftp")
    (root / "CONFIG" / f"{UID}_var.ini").write_bytes(b"SCHEDULE_Params[0]=1|everyday|x|1|1\n")
    result, finals = await session_on_tree(store, tmp_path, root, "--override", "/CONFIG=el",
                                           config_dir=config_dir)
    assert not result.ok and not result.retriable
    assert messages(caplog)[-1].startswith("server 1: session failed: /CONFIG: download refused")
    assert finals == DAY_FILES
    assert store.journal(kinds=["sync"]).num_rows == 0


async def test_a_session_cut_by_the_stop_says_so(store: Log, tmp_path: Path,
                                                 blackhole: _Blackhole,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    # The server accepts the connection and never greets: the session is still connecting
    # when the service stops.
    session = make_session(store, tmp_path, blackhole.port,
                           timeouts=Timeouts(connect_s=30, operation_s=30))
    caplog.set_level(logging.INFO, logger="sunpm.session")
    task = asyncio.create_task(session.run(Trigger.ALARM, started=CUT))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    said = messages(caplog)
    assert said[0].endswith(": session started (alarm)")
    assert said[-1] == ("server 1: session interrupted (0 files uploaded); the rest goes at the "
                        "next session")
