"""A server down for ten scheduled sessions, then back (docs/behaviour.md §5.1, §5.2)."""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from delivery_support import DAY, NS, T0, DemoSource, FtpPeer, file_timestamp, fill, record_lines

from config.model import ServerSettings, ServerType
from exporters.outbox import Outbox
from exporters.session import FileServerSession, Trigger
from exporters.transports import FtpTransport, Timeouts
from store.delivery import Stream
from store.log import Log

UID = "WPMTEST01"
H = 3600
FAST = Timeouts(connect_s=3, operation_s=10)


def settings_for(peer: FtpPeer, slot: int = 1) -> ServerSettings:
    return ServerSettings(slot=slot, type=ServerType.FTP, host="127.0.0.1", port=peer.port,
                          user="sunpm", password="secret", root_dir="/", two_step=True)


def session_for(store: Log, peer: FtpPeer, tmp: Path, slot: int = 1,
                timeouts: Timeouts = FAST) -> FileServerSession:
    settings = settings_for(peer, slot)
    outbox = Outbox(server=slot, log=store, source=DemoSource(store, UID),
                    directory=tmp / "store" / "outbox" / str(slot),
                    streams=(Stream.ALARM, Stream.DATA))
    return FileServerSession(settings=settings, uid=UID, transport=FtpTransport(settings,
                             timeouts=timeouts), outbox=outbox, log=store)


def at(t_s: int) -> datetime:
    return datetime.fromtimestamp(t_s, UTC)


def expected_order(ends_s: list[int]) -> list[str]:
    names = []
    for end in ends_s:
        stamp = file_timestamp(end * NS)
        names += [f"/ALARM/{UID}_AL_{stamp}.csv.gz", f"/DATA/{UID}_MODBUS_{stamp}.csv.gz"]
    return names


@pytest.mark.slow
async def test_ten_failed_sessions_then_every_file_once_in_window_order(
        store: Log, ftp: FtpPeer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sunpm.session")
    first_cut = T0 + 9 * H
    await fill(store, T0, T0 + 12 * DAY)

    result = await session_for(store, ftp, tmp_path).run(Trigger.SCHEDULE, started=at(first_cut))
    assert result.ok and result.files == 2
    assert ftp.finals() == [f"/ALARM/{UID}_AL_{file_timestamp(first_cut * NS)}.csv.gz",
                            f"/DATA/{UID}_MODBUS_{file_timestamp(first_cut * NS)}.csv.gz"]

    ftp.stop()
    windows_before = store.journal(kinds=["window"]).num_rows
    for day in range(1, 11):
        caplog.clear()
        result = await session_for(store, ftp, tmp_path).run(
            Trigger.SCHEDULE, started=at(first_cut + day * DAY))
        assert not result.ok and result.retriable
        assert [r.getMessage() for r in caplog.records][-1].startswith(
            "server 1: session failed: ")
    # A session that fails before its upload step builds no window and moves nothing.
    assert store.journal(kinds=["window"]).num_rows == windows_before
    assert Outbox(server=1, log=store, source=DemoSource(store, UID), directory=tmp_path / "x",
                  streams=(Stream.ALARM, Stream.DATA)).cursors() == {
        Stream.ALARM: first_cut * NS, Stream.DATA: first_cut * NS}

    ftp.start()
    back = first_cut + 11 * DAY
    caplog.clear()
    result = await session_for(store, ftp, tmp_path).run(Trigger.RETRY, started=at(back))
    assert result.ok
    ends = [first_cut] + [T0 + d * DAY for d in range(1, 12)] + [back]
    assert ftp.finals() == expected_order(ends)
    assert len(set(ftp.finals())) == len(ftp.finals())
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == f"server 1 ftp 127.0.0.1:{ftp.port}: session started (retry)"
    assert lines[-1] == "server 1: session ended OK (24 files uploaded, 0 commands)"
    assert sum(1 for line in lines if line.startswith("server 1: uploaded /DATA/")) == 12

    # Every record timed before the last cut arrived exactly once, in the window of its time.
    got: list[str] = []
    for end in ends:
        path = ftp.root / "DATA" / f"{UID}_MODBUS_{file_timestamp(end * NS)}.csv.gz"
        rows = record_lines(path.read_bytes())
        assert all(int(r.split(";")[2]) < end * NS for r in rows)
        got += rows
    expected = sum(1 for dev in ("1", "2")
                   for t in store.records(dev).column("ts").cast("int64").to_pylist()
                   if t < back * NS)
    assert len(got) == len(set(got)) == expected
    # Nothing left in the outbox, nothing left as `.tmp` on the server.
    assert not any((tmp_path / "store" / "outbox" / "1").iterdir())
    assert not list(ftp.root.rglob("*.tmp"))


async def test_windows_built_before_a_failure_go_first_unchanged(
        store: Log, ftp: FtpPeer, tmp_path: Path) -> None:
    await fill(store, T0, T0 + 3 * DAY)
    session = session_for(store, ftp, tmp_path)
    # Build the windows of a two-day outage, then lose the server before any upload.
    outbox = session._outbox
    plan = outbox.plan((T0 + 2 * DAY + 9 * H) * NS)
    assert [p.end_ns // NS for p in plan] == [T0 + DAY, T0 + DAY, T0 + 2 * DAY, T0 + 2 * DAY,
                                              T0 + 2 * DAY + 9 * H, T0 + 2 * DAY + 9 * H]
    state = outbox.state()
    first = await outbox.build(Stream.DATA, plan[1].start_ns, plan[1].end_ns,
                               state.stream(1, Stream.DATA).last_built)
    # Records committed after the build, timed inside it, join a later window instead.
    await fill(store, T0, T0 + 3600, devices=("3",))
    result = await session.run(Trigger.SCHEDULE, started=at(T0 + 2 * DAY + 12 * H))
    assert result.ok
    path = ftp.root / "DATA" / first.files[0].name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == first.files[0].sha256
    late = [r for r in record_lines(path.read_bytes()) if r.startswith("3;")]
    assert late == []
    # ... the next window built for the stream (docs/behaviour.md §5.1 step 4), and no other.
    for end, late_rows in ((T0 + 2 * DAY, 6), (T0 + 2 * DAY + 12 * H, 0)):
        path = ftp.root / "DATA" / f"{UID}_MODBUS_{file_timestamp(end * NS)}.csv.gz"
        rows = record_lines(path.read_bytes())
        assert len([r for r in rows if r.startswith("3;")]) == late_rows


def _summary(state: object) -> object:
    from store.delivery import DeliveryState
    assert isinstance(state, DeliveryState)
    return {key: ([w.to_body() for w in sd.windows if not sd.is_delivered(w)],
                  sd.cursor_ns, sd.last_built.to_body() if sd.last_built else None,
                  sorted(d for d in sd.delivered
                         if any(w.spec.end_ns == d[0] for w in sd.pending())))
            for key, sd in sorted(state.streams.items())}


async def test_state_snapshot_reducers_give_the_same_cursors_and_pending_windows(
        store: Log, ftp: FtpPeer, tmp_path: Path) -> None:
    from store.delivery import DeliveryState
    from store.state import replay
    await fill(store, T0, T0 + 4 * DAY)
    session = session_for(store, ftp, tmp_path)
    assert (await session.run(Trigger.SCHEDULE, started=at(T0 + DAY + 9 * H))).ok
    # A snapshot, then windows built but not delivered (server gone mid-session).
    await store.write_state_snapshot(replay(store).to_body())
    ftp.stop()
    outbox = session._outbox
    state = outbox.state()
    for planned in outbox.plan((T0 + 3 * DAY) * NS, state)[:3]:
        built = await outbox.build(planned.stream, planned.start_ns, planned.end_ns,
                                   state.stream(1, planned.stream).last_built)
        state.reduce("window", built.to_body(), built.seq)
    full = DeliveryState.from_table(store.journal(kinds=["window", "delivered"]))
    from_snapshot = replay(store).delivery
    assert _summary(from_snapshot) == _summary(full)
    assert len(full.stream(1, Stream.ALARM).pending()) + len(
        full.stream(1, Stream.DATA).pending()) == 3


@pytest.mark.parametrize(("stall", "reason"), [
    ("STOR:5", "upload /ALARM/WPMTEST01_AL_210204_000000.csv.gz: timeout"),
    ("RNTO:5", "upload /ALARM/WPMTEST01_AL_210204_000000.csv.gz: timeout"),
    # The lookup before an upload (after the two of /CMD): a stalled server is no "absent" (the
    # upload that followed failed at once on the dropped connection: `connection lost`).
    ("SIZE:7", "size /ALARM/WPMTEST01_AL_210204_000000.csv.gz: timeout")])
async def test_a_server_stalling_mid_replay_gets_every_file_once_in_order(
        store: Log, ftp: FtpPeer, tmp_path: Path, stall: str, reason: str) -> None:
    # The server comes back after an outage and stops answering in the middle of the replay:
    # once an upload's bytes are stored (no `226`) or once a rename is done (no `250`), so the
    # file in flight is there under its final name without the gateway knowing.
    first_cut = T0 + 9 * H
    await fill(store, T0, T0 + 5 * DAY)
    assert (await session_for(store, ftp, tmp_path).run(Trigger.SCHEDULE,
                                                        started=at(first_cut))).ok
    ftp.stop()
    for day in (1, 2):
        result = await session_for(store, ftp, tmp_path).run(Trigger.SCHEDULE,
                                                             started=at(first_cut + day * DAY))
        assert not result.ok and result.retriable

    ftp.extra = ["--stall-after", stall]
    ftp.start()
    back = first_cut + 4 * DAY
    limit = 3.0
    session = session_for(store, ftp, tmp_path, timeouts=Timeouts(connect_s=3, operation_s=limit))
    started = time.monotonic()
    result = await session.run(Trigger.RETRY, started=at(back))
    assert not result.ok and result.retriable, result
    # Cut by the operation's deadline or, when the last bytes were acknowledged as the limit
    # came, by the control connection's own timeout: both the timeout of §4.5.
    assert result.reason in (f"{reason} (no progress for 3 s)", f"{reason} (timed out)")
    assert time.monotonic() - started < 4 * limit + 10  # the stall is cut, not waited out
    assert ("STALL", "-") in ftp.log()

    ftp.stop()
    ftp.extra = []
    ftp.start()
    result = await session_for(store, ftp, tmp_path).run(Trigger.RETRY, started=at(back))
    assert result.ok, result
    ends = [first_cut] + [T0 + d * DAY for d in range(1, 5)] + [back]
    assert ftp.finals() == expected_order(ends)
    got = [row for end in ends for row in record_lines(
        (ftp.root / "DATA" / f"{UID}_MODBUS_{file_timestamp(end * NS)}.csv.gz").read_bytes())]
    expected = sum(1 for dev in ("1", "2")
                   for t in store.records(dev).column("ts").cast("int64").to_pylist()
                   if t < back * NS)
    assert len(got) == len(set(got)) == expected
    assert not list(ftp.root.rglob("*.tmp"))
    assert not any((tmp_path / "store" / "outbox" / "1").iterdir())
