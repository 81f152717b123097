"""The quota never deletes undelivered records: the outboxes' delivery state as the store's
predicates (exporters.retention, docs/behaviour.md §6), with a real store, a `dir` server 1 and an
FTP server 2 that is down, then back."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from delivery_support import NS, DemoSource, FtpPeer, file_timestamp, make_tree
from peers import Broker

from config.model import ServerSettings, ServerType
from exporters.outbox import Outbox
from exporters.retention import (
    DeliveryTracker,
    QuotaLog,
    install_retention,
    scopes_of,
)
from exporters.session import MqttSession, Trigger
from exporters.transports import (
    DirTransport,
    FtpTransport,
    MqttTransport,
    Timeouts,
    TransportError,
)
from exporters.views.gz import gzip_bytes
from exporters.views.windows import Rendered
from store import FullPolicy, Log, StoreOptions
from store.delivery import FILE_SERVER_STREAMS, Stream, WindowSpec
from store.events import Channel, CommandResult, JournalItem

UID = "WPMTEST01"
QUOTA = 40_000            # segments seal at 5,000 bytes
VARS = 8                  # rows per record
#: 2021-02-05 00:00 UTC.
T0 = 1_612_483_200
FAST = Timeouts(connect_s=3, operation_s=10)


def record(t_s: int) -> pa.RecordBatch:
    """One record of VARS rows at `t_s`."""
    return pa.record_batch({
        "ts": pa.array([t_s * NS] * VARS, pa.timestamp("ns", tz="UTC")),
        "var": pa.array(range(1, VARS + 1), pa.int32()),
        "value": pa.array([float(t_s % 1000 + k) for k in range(VARS)], pa.float64()),
        "vmin": pa.array([None] * VARS, pa.float64()),
        "vmax": pa.array([None] * VARS, pa.float64()),
        "text": pa.array([None] * VARS, pa.string()),
        "quality": pa.array([0] * VARS, pa.uint8()),
        "def": pa.array(["0" * 64 + ":demo.csv"] * VARS).dictionary_encode(),
    })


class LogSource(DemoSource):
    """DemoSource plus LOG files of the journal's `log` events."""

    def oldest_ns(self, stream: Stream) -> int | None:
        if stream is not Stream.LOG:
            return super().oldest_ns(stream)
        times = self._log.journal(kinds=["log"]).column("ts").cast(pa.int64())  # type: ignore[attr-defined]
        return None if len(times) == 0 else int(pc.min(times).as_py())

    def first_item_ns(self, stream: Stream, start_ns: int, end_ns: int) -> int | None:
        if stream is not Stream.LOG:
            return super().first_item_ns(stream, start_ns, end_ns)
        times = self._log.journal(kinds=["log"], start_ns=start_ns,  # type: ignore[attr-defined]
                                  end_ns=end_ns).column("ts").cast(pa.int64())
        return None if len(times) == 0 else int(pc.min(times).as_py())

    def render(self, spec: WindowSpec) -> list[Rendered]:
        if spec.stream is not Stream.LOG:
            return super().render(spec)
        table = self._log.journal(kinds=["log"]).sort_by("seq")  # type: ignore[attr-defined]
        lines = [f"{s};{b}" for s, t, b in zip(table.column("seq").to_pylist(),
                                                table.column("ts").cast(pa.int64()).to_pylist(),
                                                table.column("body").to_pylist(), strict=True)
                 if spec.has_event(s, t)]
        if not lines:
            return []
        text = ("\n".join(lines) + "\n").encode()
        return [Rendered(name=f"{self.uid}_LOG_{file_timestamp(spec.end_ns)}.log.gz",
                         directory="/LOG", data=gzip_bytes(text),
                         text_sha256=hashlib.sha256(text).hexdigest())]


@dataclass
class Plant:
    """A store with server 1 (`dir`) and server 2 (FTP, down until `server2_up`)."""

    log: Log
    tracker: DeliveryTracker
    dir_root: Path
    ftp: FtpPeer
    s1: ServerSettings
    s2: ServerSettings
    tmp: Path

    def outbox(self, slot: int) -> Outbox:
        return Outbox(server=slot, log=self.tracker.journal_log(self.log),
                      source=LogSource(self.log, UID), directory=self.tmp / "outbox" / str(slot),
                      streams=FILE_SERVER_STREAMS)

    async def deliver(self, slot: int, cut_s: int) -> bool:
        """One session's uploads; False when the server is down (nothing delivered)."""
        settings = self.s1 if slot == 1 else self.s2
        transport: DirTransport | FtpTransport = (
            DirTransport(settings) if slot == 1 else FtpTransport(settings, timeouts=FAST))
        try:
            await transport.connect()
            await self.outbox(slot).deliver(transport, cut_s * NS, two_step=True)
        except TransportError:
            return False
        finally:
            await transport.close()
        return True

    def server2_up(self) -> None:
        self.ftp.start()

    def delivered_rows(self, root: Path) -> list[tuple[str, int]]:
        """(device, seq) of every DATA row a server holds."""
        rows = []
        for path in sorted((root / "DATA").glob("*.csv.gz")):
            for line in gzip.decompress(path.read_bytes()).decode().splitlines():
                if line.count(";") == 3:
                    dev, seq, _, _ = line.split(";")
                    rows.append((dev, int(seq)))
        return rows


@pytest.fixture
def ftp_down(tmp_path: Path) -> Iterator[FtpPeer]:
    """An FTP peer started once for its port and stopped: server 2 refuses connections."""
    peer = FtpPeer(root=make_tree(tmp_path / "ftp"), events=tmp_path / "ftp-events.log")
    peer.start()
    peer.stop()
    try:
        yield peer
    finally:
        peer.stop()


async def open_plant(tmp_path: Path, ftp: FtpPeer, options: StoreOptions) -> Plant:
    log = await Log.open(tmp_path / "store", options)
    s1 = ServerSettings(slot=1, type=ServerType.DIR, dir_path=str(make_tree(tmp_path / "dir")))
    s2 = ServerSettings(slot=2, type=ServerType.FTP, host="127.0.0.1", port=ftp.port,
                        user="sunpm", password="secret", root_dir="/", two_step=True)
    _typed: QuotaLog = log      # store.Log is what install_retention expects
    tracker = await asyncio.to_thread(install_retention, _typed, [s1, s2])
    return Plant(log=log, tracker=tracker, dir_root=tmp_path / "dir", ftp=ftp, s1=s1, s2=s2,
                 tmp=tmp_path)


@pytest.fixture
async def plant_stop(tmp_path: Path, ftp_down: FtpPeer) -> AsyncIterator[Plant]:
    options = StoreOptions(flush_s=0.005, device_quota_bytes=QUOTA, journal_quota_bytes=10**8)
    plant = await open_plant(tmp_path, ftp_down, options)
    try:
        yield plant
    finally:
        await plant.log.close()


def storage_events(log: Log, device: str) -> list[dict[str, object]]:
    found = [json.loads(b) for b in log.journal(kinds=["storage"]).column("body").to_pylist()]
    return [e for e in found if e.get("device") == device]


def stored_seqs(log: Log, device: str) -> list[int]:
    return sorted(pc.unique(log.records(device).column("seq")).to_pylist())


async def fill(log: Log, device: str, first_t_s: int, n: int) -> list[bool]:
    """Append `n` records a second apart; per record whether it was dropped."""
    out = []
    for i in range(n):
        got = await log.append_records(device, record(first_t_s + i))
        out.append(got.dropped)
    return out


# --------------------------------------------------------------------------- records


async def test_stop_drops_new_records_while_server_2_is_down_then_resumes_once_it_catches_up(
        plant_stop: Plant) -> None:
    p, log = plant_stop, plant_stop.log
    assert await fill(log, "7", T0, 10) == [False] * 10
    assert await p.deliver(1, T0 + 60)
    assert not await p.deliver(2, T0 + 60)
    assert sorted(p.delivered_rows(p.dir_root)) == [("7", s) for s in range(1, 11)
                                                    for _ in range(VARS)]
    # Server 1 has the first 10 records, server 2 nothing: the quota may delete none of them.
    dropped = await fill(log, "7", T0 + 100, 60)
    n_dropped = sum(dropped)
    n_kept = 10 + dropped.index(True)
    assert n_dropped > 0 and dropped == [False] * (n_kept - 10) + [True] * n_dropped
    assert stored_seqs(log, "7") == list(range(1, n_kept + 1)), "nothing was deleted"
    stats = log.stats("7")
    assert (stats.dropped, stats.evicted, stats.full) == (n_dropped, 0, True)
    # A segment delivered to server 1 alone is not delivered.
    assert not p.tracker.records_delivered("7", 1, T0 * NS)

    # Server 2 comes back and catches up; server 1 gets the rest too.
    p.server2_up()
    assert await p.deliver(2, T0 + 1000)
    assert await p.deliver(1, T0 + 1000)
    assert sorted(p.delivered_rows(p.ftp.root)) == [("7", s) for s in range(1, n_kept + 1)
                                                    for _ in range(VARS)]
    assert p.tracker.records_delivered("7", n_kept, (T0 + 999) * NS)
    # The next record is stored: the oldest delivered segments went to make room.
    after = await log.append_records("7", record(T0 + 2000))
    assert not after.dropped and after.first == n_kept + 1
    seqs = stored_seqs(log, "7")
    assert seqs[0] > 1 and seqs == list(range(seqs[0], n_kept + 2))
    assert log.usage("7") <= QUOTA
    await log.commit()
    events = storage_events(log, "7")
    assert [e["event"] for e in events] == ["full", "available"]
    assert events[0]["policy"] == "stop"
    assert (events[1]["dropped"], events[1]["evicted"]) == (n_dropped, 0)
    assert log.stats("7").full is False


async def test_evict_oldest_reports_the_undelivered_records_it_deletes_with_exact_counts(
        tmp_path: Path, ftp_down: FtpPeer, caplog: pytest.LogCaptureFixture) -> None:
    options = StoreOptions(flush_s=0.005, device_quota_bytes=QUOTA, journal_quota_bytes=10**8,
                           full_policy=FullPolicy.EVICT_OLDEST)
    p = await open_plant(tmp_path, ftp_down, options)
    log = p.log
    try:
        assert await fill(log, "3", T0, 8) == [False] * 8
        assert await p.deliver(1, T0 + 60)
        assert not await p.deliver(2, T0 + 60)
        n = 60
        assert await fill(log, "3", T0 + 100, n) == [False] * n
        total = 8 + n
        seqs = stored_seqs(log, "3")
        evicted = seqs[0] - 1
        assert evicted > 0 and seqs == list(range(seqs[0], total + 1))
        stats = log.stats("3")
        assert (stats.evicted, stats.dropped, stats.full) == (evicted, 0, True)
        await log.commit()
        events = storage_events(log, "3")
        gone = [e for e in events if e["event"] == "evicted"]
        assert sum(int(e["records"]) for e in gone) == evicted  # type: ignore[call-overload]
        # Oldest first and contiguous: each eviction's range follows the previous one.
        assert gone[0]["seq_first"] == 1
        assert all(a["seq_last"] + 1 == b["seq_first"]  # type: ignore[operator]
                   for a, b in itertools.pairwise(gone))
        assert "Storage full: undelivered records evicted. device=3 records=" in caplog.text
        # Server 2 catches up: what is left reaches it, and the episode ends with its counts.
        p.server2_up()
        assert await p.deliver(2, T0 + 1000)
        assert await p.deliver(1, T0 + 1000)
        assert sorted({s for _, s in p.delivered_rows(p.ftp.root)}) == seqs
        await log.append_records("3", record(T0 + 2000))
        await log.commit()
        events = storage_events(log, "3")
        assert [e["event"] for e in events if e["event"] != "evicted"] == ["full", "available"]
        assert (events[-1]["evicted"], events[-1]["dropped"]) == (evicted, 0)
    finally:
        await log.close()


async def test_a_restart_inside_an_evict_oldest_episode_with_server_2_down(
        tmp_path: Path, ftp_down: FtpPeer) -> None:
    options = StoreOptions(flush_s=0.005, device_quota_bytes=QUOTA, journal_quota_bytes=10**8,
                           full_policy=FullPolicy.EVICT_OLDEST)
    p = await open_plant(tmp_path, ftp_down, options)
    try:
        assert await fill(p.log, "3", T0, 8) == [False] * 8
        assert await p.deliver(1, T0 + 60)
        assert not await p.deliver(2, T0 + 60)
        assert await fill(p.log, "3", T0 + 100, 60) == [False] * 60
    finally:
        await p.log.close()
    # Restarted while server 2 is still away: the same episode goes on.
    p = await open_plant(tmp_path, ftp_down, options)
    log = p.log
    try:
        assert await fill(log, "3", T0 + 200, 30) == [False] * 30
        total = 8 + 60 + 30
        seqs = stored_seqs(log, "3")
        assert seqs[0] > 9 and seqs == list(range(seqs[0], total + 1))
        await log.commit()
        events = storage_events(log, "3")
        gone = [e for e in events if e["event"] == "evicted"]
        assert sum(int(e["records"]) for e in gone) == seqs[0] - 1  # type: ignore[call-overload]
        assert [e["event"] for e in events if e["event"] != "evicted"] == ["full"]
        # Server 2 comes back: what is left reaches it in order, once; server 1 has each
        # record it got once too, the evicted ones it had not had missing.
        p.server2_up()
        assert await p.deliver(2, T0 + 1000)
        assert await p.deliver(1, T0 + 1000)
        assert p.delivered_rows(p.ftp.root) == [("3", s) for s in seqs for _ in range(VARS)]
        assert p.delivered_rows(p.dir_root) == [("3", s) for s in [*range(1, 9), *seqs]
                                                for _ in range(VARS)]
        await log.append_records("3", record(T0 + 2000))
        await log.commit()
        events = storage_events(log, "3")
        assert [e["event"] for e in events if e["event"] != "evicted"] == ["full", "available"]
        assert (events[-1]["evicted"], events[-1]["dropped"]) == (seqs[0] - 1, 0)
    finally:
        await log.close()


async def test_with_no_server_configured_any_sealed_segment_may_go(tmp_path: Path) -> None:
    options = StoreOptions(flush_s=0.005, device_quota_bytes=QUOTA, journal_quota_bytes=10**8)
    async with await Log.open(tmp_path / "store", options) as log:
        tracker = install_retention(log, [ServerSettings(slot=1), ServerSettings(slot=2)])
        assert tracker.scopes == () and not tracker.receives_data
        assert await fill(log, "4", T0, 80) == [False] * 80
        seqs = stored_seqs(log, "4")
        assert seqs[0] > 1 and seqs == list(range(seqs[0], 81))
        stats = log.stats("4")
        assert (stats.dropped, stats.evicted, stats.full) == (0, 0, False)
        await log.commit()
        assert storage_events(log, "4") == []


# --------------------------------------------------------------------------- journal


async def test_journal_segments_stay_until_their_alarm_and_log_events_reach_every_server(
        tmp_path: Path, ftp_down: FtpPeer) -> None:
    options = StoreOptions(flush_s=0.005, device_quota_bytes=QUOTA, journal_quota_bytes=20_000)
    p = await open_plant(tmp_path, ftp_down, options)
    log = p.log
    try:
        alarm = await log.append_journal("alarm", {"var": 1, "value": "7"}, device="7",
                                         ts_ns=(T0 + 1) * NS)
        note = await log.append_journal("log", {"level": "info", "message": "started"},
                                        ts_ns=(T0 + 2) * NS)
        for i in range(120):
            await log.append_journal("heartbeat", {}, ts_ns=(T0 + 10 + i) * NS)
        await log.commit()
        assert await p.deliver(1, T0 + 600)
        assert not await p.deliver(2, T0 + 600)
        await asyncio.to_thread(p.tracker.refresh)
        for i in range(120):
            await log.append_journal("heartbeat", {}, ts_ns=(T0 + 200 + i) * NS)
        await log.commit()
        # Past its quota, a state event asked for, yet nothing goes: server 2 lacks the alarm.
        assert log.journal(kinds=["state"]).num_rows >= 1
        assert log.journal().column("seq")[0].as_py() == 1
        assert log.journal_usage() > 20_000
        full = [e for e in storage_events(log, "journal") if e["event"] == "full"]
        assert len(full) == 1
        assert not p.tracker.journal_delivered(alarm, (T0 + 1) * NS)

        p.server2_up()
        assert await p.deliver(2, T0 + 600)
        assert await p.deliver(1, T0 + 600)
        await asyncio.to_thread(p.tracker.refresh)
        assert p.tracker.journal_delivered(note, (T0 + 2) * NS)
        # The service's refresh task carries the marks past the heartbeats no server gets.
        refresher = asyncio.create_task(p.tracker.run(period_s=0.02), name="retention-refresh")
        try:
            for i in range(60):
                await log.append_journal("heartbeat", {}, ts_ns=(T0 + 400 + i) * NS)
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        await asyncio.to_thread(p.tracker.refresh)
        for i in range(3):
            await log.append_journal("heartbeat", {}, ts_ns=(T0 + 500 + i) * NS)
        await log.commit()
        # Delivered everywhere: the oldest segments went, the journal is back near its quota,
        # and the state event kept what the outboxes need (no window is sent twice).
        assert log.journal(kinds=["alarm"]).num_rows == 0
        assert log.journal(kinds=["log"]).num_rows == 0
        # Its quota plus a segment in raw bytes (21,774 here); on flash each of the eight
        # compacted segments of about 2,900 bytes takes a whole 4 KiB block.
        assert log.journal_usage() <= 9 * 4_096
        for slot in (1, 2):
            outbox = p.outbox(slot)
            state = await asyncio.to_thread(outbox.state)
            assert state.stream(slot, Stream.ALARM).cursor_ns == (T0 + 600) * NS
            assert state.stream(slot, Stream.LOG).cursor_ns == (T0 + 600) * NS
            assert all(planned.built is None for planned in outbox.plan((T0 + 900) * NS, state))
        # A restart: marks rebuilt from the journal, whose `window` events went, equal the ones
        # kept current by the deliveries (the `state` event holds the cursor windows).
        assert log.journal(kinds=["window"]).num_rows == 0
        fresh = DeliveryTracker(log, p.tracker.scopes)
        await asyncio.to_thread(fresh.refresh)
        assert [m.window for m in fresh.marks.journal] == \
            [m.window for m in p.tracker.marks.journal]
        assert all(m.window is not None for m in fresh.marks.journal
                   if m.stream in (Stream.ALARM, Stream.LOG))
        alarms = sorted((p.dir_root / "ALARM").glob("*"))
        assert len(alarms) == 1 and f"{alarm};".encode() in gzip.decompress(alarms[0].read_bytes())
        assert len(list((p.ftp.root / "LOG").glob("*"))) == 1
    finally:
        await log.close()


def test_scopes_follow_the_configured_slots() -> None:
    file1 = ServerSettings(slot=1, type=ServerType.SFTP)
    mqtt2 = ServerSettings(slot=2, type=ServerType.MQTT, topic_alarm="a", topic_result="r")
    scopes = scopes_of([file1, mqtt2])
    assert [(s.server, s.window_streams, s.event_streams) for s in scopes] == [
        (1, FILE_SERVER_STREAMS, ()), (2, (), (Stream.ALARM, Stream.ACK))]
    assert [s.receives_data for s in scopes] == [True, False]
    with_data = scopes_of([ServerSettings(slot=2, type=ServerType.MQTTS, topic_data="d")])
    assert with_data[0].window_streams == (Stream.DATA,) and with_data[0].event_streams == ()


async def test_mqtt_alarms_keep_their_journal_segment_until_the_broker_acknowledges_them(
        tmp_path: Path, broker: Broker) -> None:
    options = StoreOptions(flush_s=0.005, device_quota_bytes=QUOTA, journal_quota_bytes=20_000)
    mqtt = ServerSettings(slot=2, type=ServerType.MQTT, host="127.0.0.1", port=broker.plain_port,
                          mqtt_client_id="sunpm-gw", topic_data="plant/data",
                          topic_alarm="plant/alarm", topic_result="plant/result", qos=1,
                          keep_alive_s=30)
    async with await Log.open(tmp_path / "store", options) as log:
        tracker = install_retention(log, [ServerSettings(slot=1), mqtt])
        alarm = await log.append_journal("alarm", {"var": 1, "value": "7"}, device="7",
                                         ts_ns=(T0 + 1) * NS)
        # A result of another channel: the MQTT session never sends it, so it holds nothing.
        other = CommandResult(channel=Channel.FILE, caller_id="c1", rpc_name="ping", result="ok")
        await log.append_journal("result", json.loads(other.to_body()), ts_ns=(T0 + 2) * NS)
        for i in range(80):
            await log.append_journal("heartbeat", {}, ts_ns=(T0 + 10 + i) * NS)
        await asyncio.to_thread(tracker.refresh)
        for i in range(20):
            await log.append_journal("heartbeat", {}, ts_ns=(T0 + 100 + i) * NS)
        await log.commit()
        assert log.journal().column("seq")[0].as_py() == alarm == 1
        assert not tracker.journal_delivered(alarm, (T0 + 1) * NS)
        assert tracker.journal_delivered(alarm - 1, T0 * NS)

        def alarm_payload(item: JournalItem) -> bytes:
            return json.dumps({"seq": item.seq}).encode()

        journal = tracker.journal_log(log)
        outbox = Outbox(server=2, log=journal, source=DemoSource(log),
                        directory=tmp_path / "outbox" / "2", streams=(Stream.DATA,))
        session = MqttSession(settings=mqtt, transport=MqttTransport(
            mqtt, cert_dir=tmp_path, timeouts=Timeouts(connect_s=5, operation_s=5)),
            outbox=outbox, log=journal, alarm_payload=alarm_payload)
        result = await session.run(Trigger.SCHEDULE,
                                   started=datetime.fromtimestamp(T0 + 600, UTC))
        assert result.ok and result.files == 1
        # The acknowledgement alone moved the mark, before any refresh.
        assert tracker.journal_delivered(alarm, (T0 + 1) * NS)
        await asyncio.to_thread(tracker.refresh)
        for i in range(5):
            await log.append_journal("heartbeat", {}, ts_ns=(T0 + 200 + i) * NS)
        await log.commit()
        assert log.journal(kinds=["alarm"]).num_rows == 0
        # Its quota plus a segment in raw bytes (21,774 here); on flash each of the eight
        # compacted segments of about 2,900 bytes takes a whole 4 KiB block.
        assert log.journal_usage() <= 9 * 4_096


async def test_a_refresh_reading_events_already_observed_keeps_the_marks(
        plant_stop: Plant) -> None:
    p, log = plant_stop, plant_stop.log
    assert await fill(log, "7", T0, 5) == [False] * 5
    p.server2_up()
    assert await p.deliver(1, T0 + 60)
    assert await p.deliver(2, T0 + 60)
    delivered = p.tracker.marks.data[1]
    assert delivered is not None and delivered.end_ns == (T0 + 60) * NS
    # Server 2 goes down with a window built and not delivered; then a periodic refresh reads
    # the window and delivered events the tracker has already seen.
    p.ftp.stop()
    assert await fill(log, "7", T0 + 100, 5) == [False] * 5
    outbox = p.outbox(2)
    built = await outbox.build(Stream.DATA, (T0 + 60) * NS, (T0 + 200) * NS,
                               (await asyncio.to_thread(outbox.state)).stream(
                                   2, Stream.DATA).last_built)
    assert built.files
    before = p.tracker.marks
    after = await asyncio.to_thread(p.tracker.refresh)
    assert after.data == before.data and after.data[1] == delivered
    assert p.tracker.records_delivered("7", 5, (T0 + 4) * NS)
    assert not p.tracker.records_delivered("7", 6, (T0 + 100) * NS)
