"""Quota per device: stop and evict-oldest policies, delivered segments first, exact counts."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pytest
from records_util import T0, record

from store import FullPolicy, Log, StoreOptions, replay

QUOTA = 40_000  # segments seal at 5,000 bytes
N = 120


def _storage_events(log: Log, device: str | None = None) -> list[dict[str, object]]:
    found = [json.loads(b) for b in log.journal(kinds=["storage"]).column("body").to_pylist()]
    return [e for e in found if device is None or e.get("device") == device]


async def test_stop_policy_drops_new_records_and_counts_them_exactly(tmp_path: Path) -> None:
    options = StoreOptions(flush_s=0.005, device_quota_bytes=QUOTA)
    delivered_until = {"seq": 0}
    async with await Log.open(tmp_path, options) as log:
        # A server is configured and has delivered nothing yet.
        log.set_delivery_predicates(lambda device, seq_last, ts: seq_last <= delivered_until["seq"])
        results = [await log.append_records("5", record(T0 + i * 10**9, 8, i)) for i in range(N)]
        dropped = [r for r in results if r.dropped]
        kept = [r for r in results if not r.dropped]
        assert dropped and kept
        # Once full, everything after is dropped: stop keeps the oldest records.
        assert results.index(dropped[0]) == len(kept)
        assert [r.first for r in kept] == list(range(1, len(kept) + 1))
        stats = log.stats("5")
        assert stats.dropped == len(dropped) == N - log.records("5").num_rows // 8
        assert stats.full and stats.usage_bytes <= QUOTA
        await log.commit()
        events = _storage_events(log)
        assert [e["event"] for e in events] == ["full"]
        assert events[0]["device"] == "5" and events[0]["policy"] == "stop"
        # The server catches up: the oldest delivered segments go, recording resumes.
        delivered_until["seq"] = len(kept)
        again = await log.append_records("5", record(T0 + 10**12, 8, -1))
        assert not again.dropped and again.first == len(kept) + 1
        await log.commit()
        events = _storage_events(log)
        assert [e["event"] for e in events] == ["full", "available"]
        assert events[1]["dropped"] == len(dropped) and events[1]["evicted"] == 0
        assert log.records("5", seq_from=len(kept) + 1).num_rows == 8


async def test_evict_oldest_deletes_undelivered_segments_and_counts_them_exactly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    options = StoreOptions(flush_s=0.005, device_quota_bytes=QUOTA,
                           full_policy=FullPolicy.EVICT_OLDEST)
    async with await Log.open(tmp_path, options) as log:
        log.set_delivery_predicates(lambda device, seq_last, ts: False)
        results = [await log.append_records("9", record(T0 + i * 10**9, 8, i)) for i in range(N)]
        assert not any(r.dropped for r in results)
        assert [r.first for r in results] == list(range(1, N + 1))
        seqs = pc.unique(log.records("9").column("seq")).to_pylist()
        # The newest records are kept, gap-free, up to the last one.
        assert seqs == list(range(seqs[0], N + 1))
        stats = log.stats("9")
        assert stats.evicted == seqs[0] - 1 > 0
        assert stats.dropped == 0 and stats.usage_bytes <= QUOTA
        await log.commit()
        events = _storage_events(log, "9")
        evicted = [e for e in events if e["event"] == "evicted"]
        assert sum(int(e["records"]) for e in evicted) == stats.evicted  # type: ignore[call-overload]
        assert [e["event"] for e in events if e["event"] != "evicted"] == ["full"]
        assert "Storage full: undelivered records evicted. device=9 records=" in caplog.text
        # Deliveries resume: the next eviction-free store ends the episode, with its counts.
        log.set_delivery_predicates(None)
        await log.append_records("9", record(T0 + 10**12, 8, -1))
        await log.commit()
        events = _storage_events(log, "9")
        assert [e["event"] for e in events if e["event"] != "evicted"] == ["full", "available"]
        assert events[-1]["evicted"] == stats.evicted and events[-1]["dropped"] == 0


async def test_without_servers_any_sealed_segment_may_go_silently(tmp_path: Path) -> None:
    options = StoreOptions(flush_s=0.005, device_quota_bytes=QUOTA)
    async with await Log.open(tmp_path, options) as log:
        results = [await log.append_records("2", record(T0 + i * 10**9, 8, i)) for i in range(N)]
        assert not any(r.dropped for r in results)
        seqs = pc.unique(log.records("2").column("seq")).to_pylist()
        assert seqs[-1] == N and seqs == list(range(seqs[0], N + 1)) and seqs[0] > 1
        stats = log.stats("2")
        assert (stats.dropped, stats.evicted, stats.full) == (0, 0, False)
        await log.commit()
        assert _storage_events(log) == []


async def test_a_device_at_its_quota_holds_its_newest_records_within_the_quota_on_flash(
        tmp_path: Path) -> None:
    quota = 64 * 1024                       # segments seal at 8 KiB, compressed to about 3
    async with await Log.open(tmp_path, StoreOptions(flush_s=0.005,
                                                     device_quota_bytes=quota)) as log:
        for i in range(400):
            result = await log.append_records("3", record(T0 + i * 10**9, 10, i * 0.37))
            assert not result.dropped
        await log.commit()
        usage = log.usage("3")
        kept = log.records("3").column("ts")
    files = list((tmp_path / "devices" / "3").iterdir())
    on_flash = sum(p.stat().st_blocks * 512 for p in files)     # what `du` counts
    # The defect counted the files' lengths: each small sealed file takes a whole block, and
    # the device held about a third more than its quota on flash.
    assert usage == on_flash <= quota, (usage, on_flash, len(files))
    assert kept[len(kept) - 1].value == T0 + 399 * 10**9        # the newest record is kept
    assert kept[0].value > T0                                   # the oldest went


async def test_journal_keeps_segments_until_a_later_state_event(tmp_path: Path) -> None:
    options = StoreOptions(flush_s=0.005, device_quota_bytes=QUOTA, journal_quota_bytes=20_000)
    async with await Log.open(tmp_path, options) as log:
        for i in range(150):
            await log.append_journal("log", {"message": "x" * 40, "i": i}, ts_ns=T0 + i)
        # No state event yet: nothing may go; the journal grows past its quota, reported once.
        assert log.journal(kinds=["log"]).num_rows == 150
        assert log.journal_usage() > 20_000
        full = [e for e in _storage_events(log) if e["event"] == "full"]
        assert len(full) == 1 and full[0]["device"] == "journal"
        # One `state` event is not enough: its history is kept until the next one (a rotten
        # snapshot falls back to the one before it).
        first = await log.write_state_snapshot()
        await log.append_journal("log", {"message": "after"}, ts_ns=T0 + 200)
        assert log.journal(kinds=["log"]).num_rows == 151
        second = await log.write_state_snapshot()
        await log.append_journal("log", {"message": "after"}, ts_ns=T0 + 201)
        # Everything before the first may go now; the journal is back at its quota (here each
        # `state` event, larger than a segment's seal size, is a segment and a block of its own).
        assert log.journal_usage() <= 20_000 + 4_096
        table = log.journal()
        seqs = table.column("seq").to_pylist()
        assert seqs == list(range(seqs[0], seqs[-1] + 1)) and 1 < seqs[0] <= first
        assert log.journal(kinds=["state"]).column("seq").to_pylist() == [first, second]
        assert log.journal(kinds=["log"]).num_rows < 150


async def test_journal_quota_asks_the_state_provider_and_stays_bounded(tmp_path: Path) -> None:
    options = StoreOptions(flush_s=0.005, device_quota_bytes=QUOTA, journal_quota_bytes=20_000)
    async with await Log.open(tmp_path, options) as log:
        asked: list[int] = []

        def provider() -> dict[str, object]:
            asked.append(1)
            return replay(log).to_body()

        log.set_state_provider(provider)
        for i in range(150):
            await log.append_journal("heartbeat", {"i": i}, ts_ns=T0 + i)
        await log.commit()
        # Bounded: a state event was asked for and the segments before it went.
        assert asked and log.journal_usage() <= 20_000 + 4_000
        assert log.journal(kinds=["state"]).num_rows >= 1
        assert replay(log).last_heartbeat_ns == T0 + 149
        assert [e for e in _storage_events(log) if e["event"] == "full"] == []


@pytest.mark.parametrize("policy", [FullPolicy.STOP, FullPolicy.EVICT_OLDEST])
async def test_a_restart_inside_an_episode_neither_raises_full_again_nor_loses_its_end(
        tmp_path: Path, policy: FullPolicy) -> None:
    options = StoreOptions(flush_s=0.005, device_quota_bytes=QUOTA, full_policy=policy)
    delivered_until = {"seq": 0}

    def delivered(device: str, seq_last: int, ts: int) -> bool:
        return seq_last <= delivered_until["seq"]

    async def run(first: int, count: int) -> list[bool]:
        async with await Log.open(tmp_path, options) as log:
            log.set_delivery_predicates(delivered)
            results = [await log.append_records("5", record(T0 + i * 10**9, 8, i))
                       for i in range(first, first + count)]
            assert log.stats("5").full == (delivered_until["seq"] == 0)
            return [r.dropped for r in results]

    await run(0, N)
    # Restarted while the server is still away: the same episode goes on, not a new one.
    dropped = await run(N, 20)
    assert all(dropped) if policy is FullPolicy.STOP else not any(dropped)
    # Restarted once it caught up: the first record stored ends the episode.
    delivered_until["seq"] = 10**9
    assert await run(N + 20, 1) == [False]
    async with await Log.open(tmp_path, options) as log:
        events = _storage_events(log, "5")
    assert [e["event"] for e in events if e["event"] != "evicted"] == ["full", "available"]
    evicted = sum(int(e["records"]) for e in events if e["event"] == "evicted")  # type: ignore[call-overload]
    assert events[-1]["evicted"] == evicted and (evicted > 0) == (policy is FullPolicy.EVICT_OLDEST)


async def test_the_journal_past_its_quota_is_one_episode_across_seals_and_restarts(
        tmp_path: Path) -> None:
    # Large enough for many seals near the quota: each one lowers the bytes on flash by its
    # compression savings, which used to end the episode silently and raise `full` again.
    options = StoreOptions(flush_s=0.005, device_quota_bytes=QUOTA, journal_quota_bytes=100_000)
    async with await Log.open(tmp_path, options) as log:
        for i in range(400):
            await log.append_journal("log", {"message": "x" * 40, "i": i}, ts_ns=T0 + i)
        await log.commit()
        assert log.journal_usage() > 100_000
        assert [e["event"] for e in _storage_events(log, "journal")] == ["full"]
    async with await Log.open(tmp_path, options) as log:
        # Restarted still past its quota: the same episode, no second `full`.
        await log.append_journal("log", {"message": "after a restart"}, ts_ns=T0 + 400)
        await log.commit()
        assert [e["event"] for e in _storage_events(log, "journal")] == ["full"]
        # Two `state` events let the oldest segments go (the one before the latest is kept
        # with its history, for when the latest rots): the episode ends, once.
        await log.write_state_snapshot()
        await log.append_journal("log", {"message": "between"}, ts_ns=T0 + 450)
        await log.commit()
        assert [e["event"] for e in _storage_events(log, "journal")] == ["full"]
        await log.write_state_snapshot()
        for i in range(3):
            await log.append_journal("log", {"message": "after", "i": i}, ts_ns=T0 + 500 + i)
        await log.commit()
        await log.commit()  # the events a commit's quota check makes join the next one
        assert log.journal_usage() <= 100_000
        assert [e["event"] for e in _storage_events(log, "journal")] == ["full", "available"]


def _frame_holding(directory: Path, seq: int) -> tuple[Path, int, int]:
    """The journal file and the (start, end) of the verified frame that holds event `seq`."""
    from store._segment import scan_ipc_file, scan_stream
    from store.schema import JOURNAL_SCHEMA

    for path in directory.iterdir():
        data = path.read_bytes()
        scan = scan_ipc_file(data, JOURNAL_SCHEMA)[0] if path.suffix == ".arrow" \
            else scan_stream(data, JOURNAL_SCHEMA)
        for frame in scan.batches:
            if frame.seq_first <= seq <= frame.seq_last:
                return path, frame.start, frame.end
    raise AssertionError(f"no frame holds seq {seq}")


async def test_delivery_cursors_survive_a_flip_in_the_newest_state_snapshot_after_gc(
        tmp_path: Path) -> None:
    """The journal's quota keeps the history of the two latest `state` events: when the newest
    one rots on flash (a flipped byte in its batch), the replay starts from the one before it
    and the events after it, and the delivery cursors are those that were journaled. It used to
    delete everything before the newest one: the cursors were lost with it."""
    from store.delivery import BuiltWindow, OutboxFile, Stream, WindowSpec, delivered_body
    from store.events import Watermark

    options = StoreOptions(flush_s=0.005, device_quota_bytes=QUOTA, journal_quota_bytes=20_000)
    n = 40
    async with await Log.open(tmp_path, options) as log:
        log.set_state_provider(lambda: replay(log).to_body())
        for i in range(n):
            end = T0 + (i + 1) * 10**9
            spec = WindowSpec(server=1, stream=Stream.DATA, start_ns=end - 10**9, end_ns=end,
                              membership=Watermark(devices={}, journal=0), after=None, config="c")
            window = BuiltWindow(spec=spec, files=(OutboxFile(
                name=f"F_{i}", directory="/DATA", size=1, sha256="s", text_sha256="t"),))
            await log.append_journal("window", window.to_body(), ts_ns=end, commit_now=True)
            await log.append_journal("delivered", delivered_body(1, Stream.DATA, end, f"F_{i}"),
                                     ts_ns=end, commit_now=True)
            for j in range(4):
                await log.append_journal("log", {"message": "x" * 60, "i": i, "j": j},
                                         ts_ns=end, commit_now=True)
        want = T0 + n * 10**9
        assert replay(log).delivery.stream(1, Stream.DATA).cursor_ns == want
        await log.write_state_snapshot()
        # Enough events after it for the quota to delete every segment it may.
        for i in range(60):
            await log.append_journal("log", {"message": "y" * 60, "i": i}, ts_ns=T0 + i,
                                     commit_now=True)
        await log.commit()
        assert log.journal_usage() <= 20_000 + 8_000
        assert min(log.journal().column("seq").to_pylist()) > 1  # segments went
        newest = max(log.journal(kinds=["state"]).column("seq").to_pylist())
    path, start, end = _frame_holding(tmp_path / "journal", newest)
    blob = bytearray(path.read_bytes())
    blob[(start + end) // 2] ^= 0x20
    path.write_bytes(bytes(blob))
    for read_only in (True, False):
        if read_only:
            state = replay(Log.open_read_only(tmp_path))
        else:
            async with await Log.open(tmp_path, options) as log:
                state = replay(log)
                assert any(r.path == path for r in log.reports + log.check())
        assert state.delivery.stream(1, Stream.DATA).cursor_ns == want
