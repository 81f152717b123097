"""A storage-full episode open at a stop goes on after the restart (docs/behaviour.md §6), read
back from the latest `state` event and the `storage` events after it: the journal's quota may
have deleted the segment of its `full` event."""

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
