"""What an open reads of the journal: a storage-full episode open at a stop goes on after the
restart (docs/behaviour.md §6), read back from the latest `state` event and the `storage` events
after it (the journal's quota may have deleted the segment of its `full` event), through the
store's newest-first reads."""

from __future__ import annotations

from pathlib import Path

from store import Log, StoreOptions
from store.state import replay

OPTIONS = StoreOptions(flush_s=0.005, seal_bytes=4_000, journal_quota_bytes=12_000)


async def test_an_episode_whose_full_event_the_journal_quota_deleted_goes_on_after_a_restart(
        tmp_path: Path) -> None:
    async with await Log.open(tmp_path, OPTIONS) as log:
        log.set_state_provider(lambda: replay(log).to_body())
        await log.append_journal("storage", {"event": "evicted", "device": "7", "records": 5})
        full = await log.append_journal("storage", {"event": "full", "device": "7",
                                                    "reason": "quota"})
        await log.append_journal("storage", {"event": "full", "device": "8", "reason": "quota"})
        await log.append_journal("storage", {"event": "available", "device": "8"})
        for _ in range(200):
            for _ in range(20):
                await log.append_journal("heartbeat", {"pad": "x" * 40})
            await log.commit()
            if log.journal().column("seq")[0].as_py() > full:
                break
        assert log.journal().column("seq")[0].as_py() > full, "the quota deleted nothing"
        assert log.journal(kinds=["state"]).num_rows >= 1
    async with await Log.open(tmp_path, OPTIONS) as log:
        assert log.stats("7").full and not log.stats("8").full
        await log.append_journal("storage", {"event": "available", "device": "7"})
    async with await Log.open(tmp_path, OPTIONS) as log:
        assert not log.stats("7").full


async def test_the_events_since_the_latest_state_event_are_the_journal_read_whole_from_it(
        tmp_path: Path) -> None:
    """`journal_since_latest` (newest segment first, stopping at the anchor's) returns what
    the whole journal holds from the latest `state` event on, across sealed segments."""
    day = 86_400 * 10**9
    async with await Log.open(tmp_path, OPTIONS) as log:
        for d in range(4):
            for k in range(30):
                kind = "state" if k == 10 and d in (1, 2) else ("log" if k % 3 else "heartbeat")
                await log.append_journal(kind, {"k": k}, ts_ns=d * day + k)
            await log.commit()
        whole = log.journal().sort_by("seq")
        assert len(list(log.journal_newest_first())) >= 4
        kinds = whole.column("kind").to_pylist()
        at = max(s for s, k in zip(whole.column("seq").to_pylist(), kinds, strict=True)
                 if k == "state")
        since = log.journal_since_latest("state", ["log"])
        assert since.column("seq").to_pylist() == [
            s for s, k in zip(whole.column("seq").to_pylist(), kinds, strict=True)
            if s == at or (s > at and k == "log")]
        assert since.column("kind")[0].as_py() == "state"
        assert log.journal_since_latest("absent", ["log"]).num_rows == kinds.count("log")
        newest = [t.column("seq").to_pylist() for t in log.journal_newest_first(["heartbeat"])]
        assert [s for seqs in reversed(newest) for s in seqs] == [
            s for s, k in zip(whole.column("seq").to_pylist(), kinds, strict=True)
            if k == "heartbeat"]
