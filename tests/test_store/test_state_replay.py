"""Journal replay stays linear, and its in-place fold equals the pure reducers applied one by one."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from store import DEFAULT_REDUCERS, GatewayState, JournalEvent, Log, Reducer, StoreOptions, replay
from store.schema import JOURNAL_SCHEMA

T0 = 1_612_137_600 * 10**9


async def test_replay_of_50000_events_with_thousands_of_open_windows_is_fast(
        tmp_path: Path) -> None:
    n = 16_667          # windows of two files: 16,667 window and 33,334 delivered events
    async with await Log.open(tmp_path, StoreOptions(flush_s=0.05)) as log:
        appends = [log.append_journal("window", {
            "server": 1 + i % 2, "stream": "DATA", "start": T0 + i, "end": T0 + i + 1,
            "files": [{"name": f"A_{i}"}, {"name": f"B_{i}"}]}, ts_ns=T0 + i) for i in range(n)]
        # Newest first: a scan over the open windows would find each one last.
        appends += [log.append_journal("delivered", {"server": 1 + i % 2, "file": f"{p}_{i}"},
                                       ts_ns=T0 + n + i)
                    for i in reversed(range(n)) for p in "AB"]
        await asyncio.gather(*appends)
        started = time.perf_counter()
        state = replay(log)
        elapsed = time.perf_counter() - started
    assert state.seq == 3 * n and state.windows == {} and state.delivered == {}
    assert state.cursors == {"1/DATA": T0 + n, "2/DATA": T0 + n - 1}   # n is odd
    assert elapsed < 3.0, f"replay of {3 * n} events took {elapsed:.1f} s"


class TableJournal:
    """A journal held in one Arrow table (the `JournalSource` protocol replay reads)."""

    def __init__(self, rows: list[tuple[str, dict[str, object]]]) -> None:
        self.table = pa.table({
            "ts": pa.array([T0 + i for i in range(len(rows))], pa.timestamp("ns", tz="UTC")),
            "seq": pa.array(range(1, len(rows) + 1), pa.uint64()),
            "kind": pa.array([k for k, _ in rows]).dictionary_encode(),
            "device": pa.array([None] * len(rows), pa.string()),
            "def": pa.array([None] * len(rows), pa.string()).dictionary_encode(),
            "body": pa.array([json.dumps(b) for _, b in rows], pa.string()),
        }).cast(JOURNAL_SCHEMA)

    def journal(self, *, start_ns: int | None = None, end_ns: int | None = None,
                kinds: list[str] | None = None, seq_from: int | None = None) -> pa.Table:
        kind = self.table.column("kind").to_pylist()
        seq = self.table.column("seq").to_pylist()
        keep = [i for i in range(self.table.num_rows)
                if (kinds is None or kind[i] in kinds) and (seq_from is None or seq[i] >= seq_from)]
        return self.table.take(pa.array(keep, pa.int64()))


def _one_by_one() -> dict[str, Reducer]:
    # Not the default functions themselves, so replay calls them as plug-ins: pure, one event
    # at a time, the reference the in-place fold must equal.
    def wrap(reducer: Reducer) -> Reducer:
        return lambda state, event: reducer(state, event)
    return {kind: wrap(reducer) for kind, reducer in DEFAULT_REDUCERS.items()}


SERVERS = st.sampled_from([1, 2, "1", None])
NAMES = st.sampled_from(["a", "b", "c"])
EVENTS = st.lists(st.one_of(
    st.tuples(st.just("window"), st.fixed_dictionaries({
        "server": SERVERS, "stream": st.sampled_from(["DATA", "ALARM"]),
        "end": st.integers(0, 5), "files": st.lists(
            st.one_of(st.fixed_dictionaries({"name": NAMES}), st.just({}), st.just("x")),
            max_size=3)})),
    st.tuples(st.just("delivered"), st.fixed_dictionaries({"server": SERVERS, "file": NAMES})),
    st.tuples(st.just("delivered"), st.fixed_dictionaries({"server": SERVERS})),
    st.tuples(st.just("command"), st.fixed_dictionaries({"callerId": st.sampled_from(["", "x"])})),
    st.tuples(st.just("scriptdata"), st.fixed_dictionaries({"script": NAMES,
                                                            "data": st.integers()})),
    st.tuples(st.just("sync"), st.fixed_dictionaries({"server": SERVERS, "file": NAMES,
                                                      "sha256": NAMES})),
    st.tuples(st.just("heartbeat"), st.just({})),
    st.tuples(st.just("other"), st.just({"k": 1})),
), max_size=30)


@settings(max_examples=300, deadline=None)
@given(EVENTS)
def test_in_place_replay_equals_the_pure_reducers(rows: list[tuple[str, dict[str, object]]]
                                                   ) -> None:
    journal = TableJournal(rows)
    fast, reference = replay(journal), replay(journal, _one_by_one())
    assert fast == reference
    assert list(fast.windows) == list(reference.windows)     # insertion order too


def test_a_plug_in_reducer_between_default_ones_sees_and_changes_the_state() -> None:
    def forget_windows(state: GatewayState, event: JournalEvent) -> GatewayState:
        return dataclasses.replace(state, windows={}, extra={**state.extra, "forgot": event.seq})

    window = {"server": 1, "stream": "DATA", "end": 5, "files": [{"name": "a"}]}
    journal = TableJournal([("window", window), ("reset", {}), ("window", window | {"end": 6}),
                            ("delivered", {"server": 1, "file": "a"})])
    state = replay(journal, {**DEFAULT_REDUCERS, "reset": forget_windows})
    # The window of end 5 went with the reset; the delivery completes the one of end 6.
    assert state.windows == {} and state.cursors == {"1/DATA": 6}
    assert state.extra == {"forgot": 2} and state.seq == 4
