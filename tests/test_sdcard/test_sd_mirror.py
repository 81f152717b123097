"""The card mirror: a valid dump at any moment, sealed segments and snapshots within a pass, the
open segment's committed part every `open_every_s`, quota-deleted segments kept, a pulled card
(the mirror killed mid-copy) still readable."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from plant import NS, T0, day_batch, hashes, sunpm
from waiting import wait_until

from sdcard import mirror as mirror_mod
from sdcard.fsck import CLEAN
from sdcard.mirror import CardMirror, MirrorState
from store import Log, StoreOptions

DEF_BYTES = b"modbusTCP;Meter;ACME;M3\n1;4;0;I32_W;;V_L1;;0.1;0;V;4\n"


async def _write_days(store: Path, days: int, *, commits_today: int = 3) -> str:
    """`days` sealed days of device 1 and a few commits of today, with journal events."""
    async with await Log.open(store, StoreOptions(flush_s=0.02)) as log:
        def_id = log.put_definition("meter.csv", DEF_BYTES)
        for day in range(days):
            start = T0 + day * 86_400
            times = list(range(start + 600, start + 86_400, 600))
            await asyncio.gather(log.append_records("1", day_batch("1", def_id, times)),
                                 log.append_journal("log", {"level": "INFO", "category": "system",
                                                            "message": f"day {day}"},
                                                    ts_ns=(start + 60) * NS),
                                 log.commit())
        today = T0 + days * 86_400
        for k in range(commits_today):
            await asyncio.gather(log.append_records("1", day_batch("1", def_id,
                                                                   [today + 600 * (k + 1)])),
                                 log.commit())
    return def_id


def _rows(path: Path) -> pa.Table:
    return Log.open_read_only(path).records("1")


def test_a_pass_makes_the_card_a_valid_dump_holding_every_committed_record(
        tmp_path: Path) -> None:
    store, card = tmp_path / "store", tmp_path / "card"
    card.mkdir()
    asyncio.run(_write_days(store, 3))
    store_before = hashes(store)
    done = CardMirror(store, card).sync_once()
    assert done.copied and hashes(store) == store_before
    assert _rows(card).equals(_rows(store))
    ran = sunpm("sd", "fsck", card)
    assert ran.code == CLEAN, ran.out
    # A second pass with nothing new copies nothing.
    assert CardMirror(store, card).sync_once().copied == []


def test_open_segment_waits_for_its_interval_sealed_ones_do_not(tmp_path: Path) -> None:
    store, card = tmp_path / "store", tmp_path / "card"
    card.mkdir()
    asyncio.run(_write_days(store, 1, commits_today=1))
    mirror = CardMirror(store, card, open_every_s=600)
    mirror.sync_once(with_open=True)
    first = _rows(card).num_rows
    asyncio.run(_write_days(store, 0, commits_today=0))  # reopen: nothing new
    # More of today's records: not copied by a sealed-only pass, copied by the next open pass.
    async def more() -> None:
        async with await Log.open(store, StoreOptions(flush_s=0.02)) as log:
            def_id = log.put_definition("meter.csv", DEF_BYTES)
            await log.append_records("1", day_batch("1", def_id, [T0 + 86_400 + 1800]),
                                     commit_now=True)
    asyncio.run(more())
    mirror.sync_once(with_open=False)
    assert _rows(card).num_rows == first
    mirror.sync_once(with_open=True)
    assert _rows(card).num_rows == first + 4
    assert _rows(card).equals(_rows(store))


def test_segments_the_quota_deleted_stay_until_the_card_needs_room(tmp_path: Path) -> None:
    store, card = tmp_path / "store", tmp_path / "card"
    card.mkdir()
    asyncio.run(_write_days(store, 4))
    CardMirror(store, card).sync_once()
    sealed = sorted((store / "devices" / "1").glob("*.arrow"), key=lambda p: int(p.stem))
    for path in sealed[:2]:
        path.unlink()  # as the store's quota deletes its oldest delivered segments
    CardMirror(store, card).sync_once()
    assert all((card / "devices" / "1" / p.name).exists() for p in sealed[:2])
    assert _rows(card).num_rows > _rows(store).num_rows
    # A card "under its free threshold" gives up those first, and only those.
    done = CardMirror(store, card, min_free=1.01).sync_once()
    assert sorted(p.name for p in done.removed) == sorted(p.name for p in sealed[:2])
    assert _rows(card).equals(_rows(store))


def test_a_missing_card_is_a_state_not_an_error_and_the_mirror_catches_up(
        tmp_path: Path) -> None:
    store, card = tmp_path / "store", tmp_path / "card"
    asyncio.run(_write_days(store, 2))
    mirror = CardMirror(store, card)
    assert mirror.sync_once().copied == []
    assert mirror.state is MirrorState.MISSING and str(card) in (mirror.last_error or "")
    card.mkdir()
    assert mirror.sync_once().copied
    assert mirror.state is MirrorState.OK
    assert _rows(card).equals(_rows(store))


async def test_run_mirrors_a_live_writer(tmp_path: Path) -> None:
    store, card = tmp_path / "store", tmp_path / "card"
    card.mkdir()
    mirror = CardMirror(store, card, sealed_every_s=0.05, open_every_s=0.2)
    async with await Log.open(store, StoreOptions(flush_s=0.02)) as log:
        def_id = log.put_definition("meter.csv", DEF_BYTES)
        task = asyncio.create_task(mirror.run(), name="card-mirror")
        try:
            for day in range(3):
                start = T0 + day * 86_400
                await log.append_records("1", day_batch("1", def_id, list(range(
                    start + 600, start + 86_400, 600))), commit_now=True)
            await wait_until(lambda: _rows(card).num_rows >= 3 * 143 * 4, 10, every=0.1)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert _rows(card).equals(_rows(store))


_LOOP = """
import sys, time
from pathlib import Path
from sdcard.mirror import CardMirror
mirror = CardMirror(Path(sys.argv[1]), Path(sys.argv[2]))
print("ready", flush=True)
while True:
    mirror.sync_once(with_open=True)
"""


def test_a_card_pulled_mid_copy_is_still_a_readable_dump(tmp_path: Path) -> None:
    store, card = tmp_path / "store", tmp_path / "card"
    asyncio.run(_write_days(store, 6, commits_today=4))
    root = Path(__file__).resolve().parents[2]
    for trial in range(5):
        if card.exists():
            subprocess.run(["rm", "-rf", str(card)], check=True)
        card.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", _LOOP, str(store), str(card)], cwd=root,
                                stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(root)})
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            time.sleep(0.01 + 0.03 * trial)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        ran = sunpm("sd", "fsck", card, "--json")
        assert ran.code in (0, 1), ran.out + ran.err
        report = json.loads(ran.out)
        # What is on the card is whole: no damage, at most temporary files left by the copy.
        assert all(f["kind"] == "foreign" and f["path"].endswith(".tmp")
                   for f in report["findings"]), report["findings"]
        rows = report["readable_rows"].get("1", 0)
        assert rows <= _rows(store).num_rows


def test_a_card_pulled_at_the_first_sync_of_a_pass_is_already_a_dump(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pull, as the first fsync of a pass returns: what is on the card then is all there is.
    store, card = tmp_path / "store", tmp_path / "card"
    asyncio.run(_write_days(store, 1))
    card.mkdir()

    class Pulled(Exception):
        pass

    def pulled(folder: Path) -> None:
        raise Pulled(folder)

    monkeypatch.setattr(mirror_mod, "fsync_dir", pulled)
    with pytest.raises(Pulled):
        CardMirror(store, card).sync_once()
    ran = sunpm("sd", "fsck", card)
    assert (ran.code, ran.err) == (0, ""), ran.out + ran.err


def test_a_segment_created_a_moment_ago_is_not_copied_empty(tmp_path: Path) -> None:
    store, card = tmp_path / "store", tmp_path / "card"
    card.mkdir()
    asyncio.run(_write_days(store, 2))
    newest = max((store / "devices" / "1").glob("*.arrows"),
                 key=lambda p: int(p.name.split(".")[0]))
    created = newest.with_name(f"{int(newest.name.split('.')[0]) + 100}.arrows")
    created.touch()  # opened by the writer, its header not written yet
    CardMirror(store, card).sync_once()
    assert not (card / created.relative_to(store)).exists()
    ran = sunpm("sd", "fsck", card)
    assert ran.code == CLEAN, ran.out
