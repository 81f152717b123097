"""Journal replay stays linear, a replay started from any `state` event equals the whole one, and
plug-in reducers see and change the state under replay."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from store import (
    DEFAULT_REDUCERS,
    GatewayState,
    JournalEvent,
    Log,
    ReplayState,
    StoreOptions,
    replay,
)
from store.delivery import BuiltWindow, OutboxFile, Stream, WindowSpec, delivered_body
from store.events import Watermark
from store.schema import JOURNAL_SCHEMA
from store.state import events

T0 = 1_612_137_600 * 10**9


def window_body(server: int, stream: str, end: int, names: list[str]) -> dict[str, object]:
    spec = WindowSpec(server=server, stream=Stream(stream), start_ns=end - 1, end_ns=end,
                      membership=Watermark(devices={"1": end}, journal=end), after=None,
                      config="c")
    files = tuple(OutboxFile(name=n, directory="/DATA", size=1, sha256="s", text_sha256="t")
                  for n in names)
    return BuiltWindow(spec=spec, files=files).to_body()


async def test_replay_of_50000_events_with_thousands_of_open_windows_is_fast(
        tmp_path: Path) -> None:
    n = 16_667          # windows of two files: 16,667 window and 33,334 delivered events
    async with await Log.open(tmp_path, StoreOptions(flush_s=0.05)) as log:
        appends = [log.append_journal("window", window_body(1 + i % 2, "DATA", T0 + i + 1,
                                                            [f"A_{i}", f"B_{i}"]),
                                      ts_ns=T0 + i) for i in range(n)]
        # Newest first: every window stays open until the oldest is delivered.
        appends += [log.append_journal("delivered", delivered_body(1 + i % 2, Stream.DATA,
                                                                   T0 + i + 1, f"{p}_{i}"),
                                       ts_ns=T0 + n + i)
                    for i in reversed(range(n)) for p in "AB"]
        await asyncio.gather(*appends)
        started = time.perf_counter()
        read = events(log.journal())
        reading = time.perf_counter() - started
        started = time.perf_counter()
        state = replay(log)
        elapsed = time.perf_counter() - started
    assert state.seq == 3 * n
    for server, last in ((1, T0 + n), (2, T0 + n - 1)):        # n is odd
        sd = state.delivery.stream(server, Stream.DATA)
        assert sd.cursor_ns == last and sd.pending() == []
        assert len(sd.windows) == 1         # pruned to the cursor's window
    # Linear: reading and parsing the events is most of it (about 1.5 s together on a quiet
    # 2-core box); measured against that reading in the same run, so a loaded box slows both,
    # while a quadratic fold would take minutes.
    assert len(read) == 3 * n
    assert elapsed < 3 * reading + 1.0, \
        f"replay of {3 * n} events took {elapsed:.1f} s, reading them {reading:.1f} s"


class TableJournal:
    """A journal held in one Arrow table (the `JournalSource` protocol replay reads)."""

    def __init__(self, rows: list[tuple[str, dict[str, object]]],
                 times: list[int] | None = None) -> None:
        times = times if times is not None else list(range(len(rows)))
        self.table = pa.table({
            "ts": pa.array([T0 + t for t in times], pa.timestamp("ns", tz="UTC")),
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


SERVERS = st.sampled_from([1, 2])
STREAMS = st.sampled_from(["DATA", "ALARM"])
NAMES = st.sampled_from(["a", "b", "c"])
EVENTS = st.lists(st.one_of(
    # A window's end is set by its place: ends only grow within a stream.
    st.builds(lambda s, t, f: ("window", {"server": s, "stream": t, "names": f}), SERVERS,
              STREAMS, st.lists(NAMES, max_size=3, unique=True)),
    st.builds(lambda s, t, e, f: ("delivered", delivered_body(s, Stream(t), e, f)), SERVERS,
              STREAMS, st.integers(1, 30), NAMES),
    st.builds(lambda s, t, q: ("delivered", {"server": s, "stream": t, "event": q}), SERVERS,
              STREAMS, st.integers(1, 50)),
    # Bodies that do not hold their kind's fields are skipped.
    st.just(("window", {"server": None, "files": "x"})),
    st.just(("delivered", {"server": 1})),
    st.just(("sync", {"server": "1"})),
    st.builds(lambda c: ("command", {"callerId": c}), st.sampled_from(["", "x"])),
    st.builds(lambda s, d: ("scriptdata", {"script": s, "data": d}), NAMES, st.integers()),
    st.builds(lambda s, f, h: ("sync", {"server": s, "file": f, "sha256": h}), SERVERS, NAMES,
              NAMES),
    st.just(("heartbeat", {})),
    st.just(("other", {"k": 1})),
), max_size=30)


def _ends_in_order(drawn: list[tuple[str, dict[str, object]]]
                   ) -> list[tuple[str, dict[str, object]]]:
    rows = []
    for k, (kind, body) in enumerate(drawn, start=1):
        if kind == "window" and "names" in body:
            body = window_body(int(body["server"]), str(body["stream"]), k,  # type: ignore[call-overload]
                               list(body["names"]))  # type: ignore[call-overload]
        rows.append((kind, body))
    return rows


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.data())
def test_a_replay_from_any_state_event_equals_the_whole_replay(
        drawn: list[tuple[str, dict[str, object]]], data: st.DataObject) -> None:
    rows = _ends_in_order(drawn)
    cut = data.draw(st.integers(0, len(rows)))
    snapshot = replay(TableJournal(rows[:cut])).to_body()
    whole = replay(TableJournal(rows))
    # The `state` event takes the time of the event after it: every other event keeps its own.
    times = [*range(cut), cut, *range(cut, len(rows))]
    resumed = replay(TableJournal([*rows[:cut], ("state", snapshot), *rows[cut:]], times))
    assert dataclasses.replace(resumed, seq=0) == dataclasses.replace(whole, seq=0)
    assert json.loads(json.dumps(resumed.to_body())) == resumed.to_body()    # JSON-able


def test_a_plug_in_reducer_between_default_ones_sees_and_changes_the_state() -> None:
    def forget_windows(state: ReplayState, event: JournalEvent) -> None:
        state.delivery.streams.clear()
        state.extra["forgot"] = event.seq

    journal = TableJournal([("window", window_body(1, "DATA", 5, ["a"])), ("reset", {}),
                            ("window", window_body(1, "DATA", 6, ["a"])),
                            ("delivered", delivered_body(1, Stream.DATA, 6, "a"))])
    state = replay(journal, {**DEFAULT_REDUCERS, "reset": forget_windows})
    # The window of end 5 went with the reset; the delivery completes the one of end 6.
    sd = state.delivery.stream(1, Stream.DATA)
    assert [w.spec.end_ns for w in sd.windows] == [6] and sd.cursor_ns == 6
    assert state.extra == {"forgot": 2} and state.seq == 4
    assert isinstance(GatewayState.from_body(state.to_body(), 4), GatewayState)
