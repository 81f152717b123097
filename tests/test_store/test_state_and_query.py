"""Journal replay into gateway state (with plug-in reducers) and the DuckDB / polars readers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl
from records_util import DAY_NS, T0, record

from store import DEFAULT_REDUCERS, JournalEvent, Log, ReplayState, StoreOptions, replay
from store.delivery import BuiltWindow, OutboxFile, Stream, WindowSpec, delivered_body
from store.events import Watermark
from store.query import duckdb_connection, journal_lazy, records_lazy
from store.state import synced_files

FAST = StoreOptions(flush_s=0.01)
H = 3600 * 10**9


def _window(server: int, stream: str, names: list[str]) -> dict[str, object]:
    spec = WindowSpec(server=server, stream=Stream(stream), start_ns=T0, end_ns=T0 + H,
                      membership=Watermark(journal=1), after=None, config="c")
    files = tuple(OutboxFile(name=n, directory="/DATA", size=1, sha256="s", text_sha256="t")
                  for n in names)
    return BuiltWindow(spec=spec, files=files).to_body()


async def _journal_history(log: Log) -> None:
    await log.append_journal("window", _window(1, "DATA", ["A_MODBUS", "A_IO"]), ts_ns=T0 + H)
    await log.append_journal("delivered", delivered_body(1, Stream.DATA, T0 + H, "A_MODBUS"),
                             ts_ns=T0 + H + 1)
    await log.append_journal("window", _window(2, "ALARM", []), ts_ns=T0 + H + 2)
    await log.append_journal("command", {"callerId": "old", "rpcName": "x"}, ts_ns=T0)
    await log.append_journal("result", {"callerId": "c42", "result": "OK"}, ts_ns=T0 + 8 * DAY_NS)
    await log.append_journal("scriptdata", {"script": "limit", "data": {"k": 1}},
                             ts_ns=T0 + 8 * DAY_NS)
    await log.append_journal("sync", {"server": 1, "file": "config.ini", "sha256": "ab"},
                             ts_ns=T0 + 8 * DAY_NS)
    await log.append_journal("heartbeat", {}, ts_ns=T0 + 8 * DAY_NS + 5)


async def test_replay_rebuilds_deliveries_scripts_sync_heartbeat(
        tmp_path: Path) -> None:
    async with await Log.open(tmp_path, FAST) as log:
        await _journal_history(log)
        state = replay(log)
        # An empty window: its cursor moves at once.
        assert state.delivery.stream(2, Stream.ALARM).cursor_ns == T0 + H
        data = state.delivery.stream(1, Stream.DATA)
        assert [w.spec.end_ns for w in data.pending()] == [T0 + H]
        assert data.delivered == {(T0 + H, "A_MODBUS")} and data.cursor_ns is None
        assert state.script_data == {"limit": {"k": 1}}
        assert state.sync == {"1/config.ini": "ab"}
        assert state.last_heartbeat_ns == T0 + 8 * DAY_NS + 5
        # The last file delivered: the window is done and its cursor passes it.
        await log.append_journal("delivered", delivered_body(1, Stream.DATA, T0 + H, "A_IO"))
        state = replay(log)
        data = state.delivery.stream(1, Stream.DATA)
        assert data.pending() == [] and data.cursor_ns == T0 + H
        assert synced_files(log, 1) == {"config.ini": "ab"} and synced_files(log, 2) == {}


async def test_replay_from_a_state_snapshot_equals_full_replay(tmp_path: Path) -> None:
    async with await Log.open(tmp_path, FAST) as log:
        await _journal_history(log)
        full = replay(log)
        seq = await log.write_state_snapshot()
        await log.append_journal("heartbeat", {}, ts_ns=T0 + 9 * DAY_NS)
        after = replay(log)
        assert dataclasses.replace(after, seq=0, last_heartbeat_ns=None) == \
            dataclasses.replace(full, seq=0, last_heartbeat_ns=None)
        assert after.seq == seq + 1 and after.last_heartbeat_ns == T0 + 9 * DAY_NS
    # The snapshot is what replay starts from: events before it are not read again.
    async with await Log.open(tmp_path, FAST) as log:
        assert replay(log).script_data == {"limit": {"k": 1}}
        assert synced_files(log, 1) == {"config.ini": "ab"}


async def test_plugged_reducer_replaces_a_default_one(tmp_path: Path) -> None:
    def count_windows(state: ReplayState, event: JournalEvent) -> None:
        state.extra["windows_seen"] = int(state.extra.get("windows_seen", 0)) + 1  # type: ignore[call-overload]

    async with await Log.open(tmp_path, FAST) as log:
        await _journal_history(log)
        state = replay(log, {**DEFAULT_REDUCERS, "window": count_windows})
        assert state.extra == {"windows_seen": 2}
        assert all(not sd.windows for sd in state.delivery.streams.values())
        await log.write_state_snapshot(state.to_body())
        assert replay(log).extra == {"windows_seen": 2}


async def test_sql_and_polars_see_records_of_every_device_and_the_journal(tmp_path: Path) -> None:
    async with await Log.open(tmp_path, FAST) as log:
        for i in range(6):
            for dev in ("1", "2"):
                await log.append_records(dev, record(T0 + i * 600 * 10**9, 5, 10.0 * i))
        await log.append_journal("heartbeat", {}, ts_ns=T0)
        con = duckdb_connection(log)
        rows = con.sql("""
            SELECT device, var, max(value) - min(value) AS energy
            FROM records WHERE var = 1 GROUP BY device, var ORDER BY device
        """).fetchall()
        assert rows == [("1", 1, 50.0), ("2", 1, 50.0)]
        assert con.sql("SELECT kind FROM journal").fetchall() == [("heartbeat",)]
    # From a path too, read-only (a card dump).
    con = duckdb_connection(tmp_path)
    assert con.sql("SELECT count(*) FROM records").fetchall() == [(60,)]
    frame = records_lazy(tmp_path).group_by("device").agg(pl.len()).sort("device").collect()
    assert frame.rows() == [("1", 30), ("2", 30)]
    assert journal_lazy(tmp_path).collect().height == 1
