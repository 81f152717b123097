"""Journal replay into gateway state (with plug-in reducers) and the DuckDB / polars readers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl
from records_util import DAY_NS, T0, record

from store import DEFAULT_REDUCERS, GatewayState, JournalEvent, Log, StoreOptions, replay
from store.query import duckdb_connection, journal_lazy, records_lazy

FAST = StoreOptions(flush_s=0.01)
H = 3600 * 10**9


async def _journal_history(log: Log) -> None:
    window = {"server": 1, "stream": "DATA", "start": T0, "end": T0 + H,
              "files": [{"name": "A_MODBUS"}, {"name": "A_IO"}]}
    await log.append_journal("window", window, ts_ns=T0 + H)
    await log.append_journal("delivered", {"server": 1, "file": "A_MODBUS"}, ts_ns=T0 + H + 1)
    await log.append_journal("window", {"server": 2, "stream": "ALARM", "start": T0,
                                        "end": T0 + H, "files": []}, ts_ns=T0 + H + 2)
    await log.append_journal("command", {"callerId": "old", "rpcName": "x"}, ts_ns=T0)
    await log.append_journal("result", {"callerId": "c42", "result": "OK"}, ts_ns=T0 + 8 * DAY_NS)
    await log.append_journal("scriptdata", {"script": "limit", "data": {"k": 1}},
                             ts_ns=T0 + 8 * DAY_NS)
    await log.append_journal("sync", {"server": 1, "file": "config.ini", "sha256": "ab"},
                             ts_ns=T0 + 8 * DAY_NS)
    await log.append_journal("heartbeat", {}, ts_ns=T0 + 8 * DAY_NS + 5)


async def test_replay_rebuilds_cursors_windows_callers_scripts_sync_heartbeat(
        tmp_path: Path) -> None:
    async with await Log.open(tmp_path, FAST) as log:
        await _journal_history(log)
        state = replay(log)
        assert state.cursors == {"2/ALARM": T0 + H}  # empty window: cursor moves at once
        assert list(state.windows) == [f"1/DATA/{T0 + H}"]
        assert state.delivered == {f"1/DATA/{T0 + H}": ("A_MODBUS",)}
        assert state.caller_ids == {"c42": T0 + 8 * DAY_NS}  # older than 7 days: forgotten
        assert state.script_data == {"limit": {"k": 1}}
        assert state.sync == {"1/config.ini": "ab"}
        assert state.last_heartbeat_ns == T0 + 8 * DAY_NS + 5
        # The last file delivered: the window is done and its cursor passes it.
        await log.append_journal("delivered", {"server": 1, "file": "A_IO"})
        state = replay(log)
        assert state.windows == {} and state.cursors["1/DATA"] == T0 + H


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


async def test_plugged_reducer_replaces_a_default_one(tmp_path: Path) -> None:
    def count_windows(state: GatewayState, event: JournalEvent) -> GatewayState:
        seen = int(state.extra.get("windows_seen", 0))  # type: ignore[call-overload]
        return dataclasses.replace(state, extra={**state.extra, "windows_seen": seen + 1})

    async with await Log.open(tmp_path, FAST) as log:
        await _journal_history(log)
        state = replay(log, {**DEFAULT_REDUCERS, "window": count_windows})
        assert state.extra == {"windows_seen": 2} and state.windows == {}
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
