"""A box without a battery-backed clock starts in 1970 (or at its firmware's build date), records
and runs a session before NTP sets the date, then runs its sessions decades later
(docs/behaviour.md §5.1 step 2, §11): every record goes once, and the years between cost no
window per day."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest
from delivery_support import NS, DemoSource, file_timestamp, make_tree, record_lines, records_batch

from config.model import ServerSettings, ServerType
from exporters.outbox import Outbox
from exporters.rendering.source import StoreSource
from exporters.session import FileServerSession, Trigger
from exporters.transports.dir import DirTransport
from exporters.views.windows import split_range
from pipeline.service.status import _windows_holding, backlog
from store.delivery import Stream
from store.log import Log

UID = "WPMTEST01"
#: 2026-12-06 22:33:20 UTC.
SET_AT = 1_796_600_000


def session(store: Log, root: Path, outbox: Path) -> FileServerSession:
    settings = ServerSettings(slot=1, type=ServerType.DIR, dir_path=str(root), two_step=True)
    box = Outbox(server=1, log=store, source=DemoSource(store, UID), directory=outbox,
                 streams=(Stream.ALARM, Stream.DATA))
    return FileServerSession(settings=settings, uid=UID, transport=DirTransport(settings),
                             outbox=box, log=store)


async def _first_file_delivered(store: Log, root: Path, outbox: Path, at_s: int
                                ) -> dict[str, bytes]:
    """Two records up to 10 s before `at_s`, delivered by a session started then as one DATA
    file: the files delivered, by name."""
    await store.append_records("1", records_batch([at_s - 20, at_s - 10]))
    await store.commit()
    first = await session(store, root, outbox).run(
        Trigger.SCHEDULE, started=datetime.fromtimestamp(at_s, UTC))
    assert first.ok and first.files == 1
    return {p.name: p.read_bytes() for p in (root / "DATA").iterdir()}


@pytest.mark.parametrize("booted_at", [0, 1_735_689_600], ids=["1970", "build-date"])
async def test_a_clock_set_decades_later_costs_no_window_per_day_and_loses_nothing(
        store: Log, tmp_path: Path, booted_at: int) -> None:
    root = make_tree(tmp_path / "server")
    before = [booted_at + s for s in (10, 20, 30, 40, 50)]
    await store.append_records("1", records_batch(before))
    await store.commit()
    first = await session(store, root, tmp_path / "outbox").run(
        Trigger.STARTUP, started=datetime.fromtimestamp(booted_at + 60, UTC))
    assert first.ok and first.files == 1

    # Set: the recorder's next records are timed by the corrected clock; one record of the
    # first minute committed late (after the first window's watermark) comes with them.
    after = [SET_AT - 20, SET_AT - 10]
    await store.append_records("1", records_batch(after, value0=100.0))
    await store.append_records("2", records_batch([booted_at + 55], value0=200.0))
    await store.commit()
    took = time.monotonic()
    second = await session(store, root, tmp_path / "outbox").run(
        Trigger.SCHEDULE, started=datetime.fromtimestamp(SET_AT, UTC))
    took = time.monotonic() - took
    assert second.ok and second.files == 2

    windows = store.journal(kinds=["window"]).num_rows
    assert windows <= 2 * 4, windows
    assert took < 30
    names = sorted(p.name for p in (root / "DATA").iterdir())
    assert names == sorted(f"{UID}_MODBUS_{file_timestamp(t * NS)}.csv.gz" for t in (
        booted_at + 60, (booted_at // 86_400 + 1) * 86_400, SET_AT))
    rows = [row for name in names for row in record_lines((root / "DATA" / name).read_bytes())]
    times = sorted(int(row.split(";")[2]) // NS for row in rows)
    assert times == sorted(before + after + [booted_at + 55])


async def test_the_store_source_finds_the_first_item_of_a_range(store: Log) -> None:
    unused: Any = None
    source = StoreSource(log=store, server=unused, view_config=unused, parse_definition=unused,
                         snapshots=unused)
    await store.append_records("1", records_batch([50, SET_AT - 10]))
    await store.append_records("2", records_batch([SET_AT - 30]))
    await store.append_journal("alarm", {"name": "Power ON"}, ts_ns=(SET_AT - 5) * NS)
    await store.commit()
    assert source.first_item_ns(Stream.DATA, 86_400 * NS, SET_AT * NS) == (SET_AT - 30) * NS
    assert source.first_item_ns(Stream.DATA, 0, SET_AT * NS) == 50 * NS
    assert source.first_item_ns(Stream.DATA, (SET_AT - 5) * NS, SET_AT * NS) is None
    assert source.first_item_ns(Stream.ALARM, 0, SET_AT * NS) == (SET_AT - 5) * NS
    assert source.first_item_ns(Stream.ACK, 0, SET_AT * NS) is None


@pytest.mark.parametrize("back_s", [2 * 3600, 86_400])
async def test_a_clock_reset_delivers_at_each_session_under_names_never_used(
        store: Log, tmp_path: Path, back_s: int) -> None:
    # A clock running hours or a day fast is corrected by NTP (a reset, docs/behaviour.md §11):
    # what is recorded afterwards goes at the next sessions, not once the clock has caught up
    # with the last window's end, in windows named a second after it, so no file already
    # delivered is replaced.
    root = make_tree(tmp_path / "server")
    ahead = SET_AT + back_s
    delivered = await _first_file_delivered(store, root, tmp_path / "outbox", ahead)

    sent: list[int] = []
    for k in range(3):
        now = SET_AT + 600 * k
        await store.append_records("1", records_batch([now - 20, now - 10], value0=10.0 * k))
        await store.commit()
        result = await session(store, root, tmp_path / "outbox").run(
            Trigger.SCHEDULE, started=datetime.fromtimestamp(now, UTC))
        assert result.ok and result.files == 1, k
        sent += [now - 20, now - 10]
    # Once the clock passes the last window's end, windows end at the sessions' cuts again.
    caught_up = ahead + 600
    await store.append_records("1", records_batch([caught_up - 20], value0=99.0))
    await store.commit()
    result = await session(store, root, tmp_path / "outbox").run(
        Trigger.SCHEDULE, started=datetime.fromtimestamp(caught_up, UTC))
    assert result.ok and result.files == 1
    sent.append(caught_up - 20)
    names = sorted(p.name for p in (root / "DATA").iterdir())
    assert names == [f"{UID}_MODBUS_{file_timestamp(t * NS)}.csv.gz"
                     for t in (ahead, ahead + 1, ahead + 2, ahead + 3, caught_up)]
    for name, data in delivered.items():
        assert (root / "DATA" / name).read_bytes() == data
    rows = [row for name in names for row in record_lines((root / "DATA" / name).read_bytes())]
    times = sorted(int(row.split(";")[2]) // NS for row in rows)
    assert times == sorted([ahead - 20, ahead - 10, *sent])


def _backlog_by_windows(start_ns: int, now_ns: int, times: list[int]) -> int:
    """Windows of `[start, now)` as a session splits them that hold one of `times`."""
    start_ns = start_ns or min(times, default=now_ns)
    return sum(any(a <= t < b for t in times) for a, b in split_range(start_ns, now_ns))


async def test_the_status_backlog_after_a_clock_set_decades_later_is_counted_from_the_items(
        store: Log, tmp_path: Path) -> None:
    # The status (asked every minute) counted the waiting files window by window: after a box
    # started in 1970 it went through some 20,000 days per stream and device (5 s here).
    root = make_tree(tmp_path / "server")
    settings = ServerSettings(slot=1, type=ServerType.DIR, dir_path=str(root), two_step=True)
    box = Outbox(server=1, log=store, source=DemoSource(store, UID), directory=tmp_path / "ob",
                 streams=(Stream.ALARM, Stream.DATA))
    await store.append_records("1", records_batch([10, 20, 30]))
    await store.append_journal("alarm", {"alarm": "Power ON"}, ts_ns=15 * NS)
    await store.commit()
    assert (await FileServerSession(settings=settings, uid=UID, transport=DirTransport(settings),
                                    outbox=box, log=store).run(
        Trigger.STARTUP, started=datetime.fromtimestamp(60, UTC))).ok
    await store.append_records("1", records_batch([SET_AT - 86_400 - 20, SET_AT - 20]))
    await store.append_records("2", records_batch([SET_AT - 10]))
    await store.append_journal("alarm", {"alarm": "x"}, ts_ns=(SET_AT - 5) * NS)
    await store.commit()
    site: Any = SimpleNamespace(daq=SimpleNamespace(devices=[]))
    took = time.monotonic()
    waiting = await asyncio.to_thread(backlog, box, store, site, SET_AT * NS)
    took = time.monotonic() - took
    # DATA: the day before and the day of SET_AT (devices 1 and 2 share one MODBUS file);
    # ALARM: one.
    assert waiting == 3
    assert took < 2.0


@pytest.mark.parametrize("seed", range(20))
def test_backlog_windows_are_those_a_session_would_build(seed: int) -> None:
    rng = random.Random(seed)
    day = 86_400 * NS
    start = rng.choice([0, rng.randrange(0, 40 * day)])
    now = rng.randrange(start, start + rng.choice([3_600 * NS, day, 2 * day, 40 * day])) + 1
    times = sorted(rng.randrange(max(0, start - day), now + day) for _ in range(rng.randrange(8)))
    first = min(times, default=None)
    got = _windows_holding(start, now, first, pa.array(times, pa.int64()))
    assert len(got) == _backlog_by_windows(start, now, times)


@pytest.mark.parametrize("back_s", [1, 3, 30])
async def test_a_session_after_a_small_step_back_replaces_no_file_and_loses_no_record(
        store: Log, tmp_path: Path, back_s: int) -> None:
    # The clock stepped back by seconds right after a session (docs/behaviour.md §11 *steps*): a
    # session then (a retry, a `connect` command) builds no window ending before the last one's end, so
    # no file name comes twice; a record committed late, timed before that end, goes with the
    # next window.
    root = make_tree(tmp_path / "server")
    delivered = await _first_file_delivered(store, root, tmp_path / "outbox", SET_AT)
    late = [SET_AT - back_s - 1, SET_AT - 5]
    await store.append_records("1", records_batch(late, value0=50.0))
    await store.commit()
    again = await session(store, root, tmp_path / "outbox").run(
        Trigger.COMMAND, started=datetime.fromtimestamp(SET_AT - back_s, UTC))
    assert again.ok and again.files == 0
    nxt = await session(store, root, tmp_path / "outbox").run(
        Trigger.SCHEDULE, started=datetime.fromtimestamp(SET_AT + 600, UTC))
    assert nxt.ok and nxt.files == 1
    names = sorted(p.name for p in (root / "DATA").iterdir())
    assert names == [f"{UID}_MODBUS_{file_timestamp(t * NS)}.csv.gz"
                     for t in (SET_AT, SET_AT + 600)]
    for name, data in delivered.items():
        assert (root / "DATA" / name).read_bytes() == data
    rows = [row for name in names for row in record_lines((root / "DATA" / name).read_bytes())]
    assert sorted(int(row.split(";")[2]) // NS for row in rows) == sorted(
        [SET_AT - 20, SET_AT - 10, *late])
