"""Cursors and membership replayed from `window` and `delivered` bodies, and the outbox's
state kept current from the journal."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
from delivery_support import DemoSource
from hypothesis import given, settings
from hypothesis import strategies as st

from exporters.outbox import Outbox
from exporters.views.windows import DAY_NS, split_range
from store.delivery import (
    BuiltWindow,
    DeliveryState,
    OutboxFile,
    PreviousWindow,
    Stream,
    WindowSpec,
    delivered_body,
)
from store.events import Watermark
from store.log import Log

H = 3_600 * 1_000_000_000
MON = 1_612_137_600 * 1_000_000_000  # 2021-02-01 00:00 UTC, a Monday


def _window(end: int, files: list[str], start: int = 0, server: int = 1,
            stream: Stream = Stream.DATA) -> BuiltWindow:
    spec = WindowSpec(server=server, stream=stream, start_ns=start, end_ns=end,
                      membership=Watermark(devices={"1": end // H}, journal=7), after=None,
                      config="cfg")
    return BuiltWindow(spec=spec, files=tuple(
        OutboxFile(name=n, directory="/DATA", size=10, sha256="a", text_sha256="b")
        for n in files))


def test_split_spec_example_monday_to_tuesday() -> None:
    # docs/behaviour.md §5.1: cursor Mon 09:00, cut Tue 10:00.
    assert split_range(MON + 9 * H, MON + 34 * H) == [(MON + 9 * H, MON + 24 * H),
                                                      (MON + 24 * H, MON + 34 * H)]


def test_split_keeps_24_hours_or_less_whole_and_gives_nothing_when_cut_not_after_start() -> None:
    assert split_range(MON + 9 * H, MON + 33 * H) == [(MON + 9 * H, MON + 33 * H)]
    assert split_range(MON + 9 * H, MON + 9 * H) == []
    assert split_range(MON + 9 * H, MON + 8 * H) == []


@given(st.integers(0, 400 * DAY_NS), st.integers(1, 40 * DAY_NS))
def test_split_windows_tile_the_range_and_only_cut_at_midnights(start: int, length: int) -> None:
    windows = split_range(start, start + length)
    assert windows[0][0] == start and windows[-1][1] == start + length
    for (a, b), (c, _) in itertools.pairwise(windows):
        assert b == c and b % DAY_NS == 0 and a < b
    if length <= DAY_NS:
        assert len(windows) == 1


def test_window_body_round_trips_through_json() -> None:
    built = _window(MON + 10 * H, ["x.csv.gz"], start=MON)
    spec = built.spec
    after = WindowSpec(server=1, stream=Stream.ALARM, start_ns=1, end_ns=2,
                       membership=Watermark(devices={"2": 5}, journal=9),
                       after=PreviousWindow(end_ns=1, membership=spec.membership), config="c")
    again = BuiltWindow(spec=after, files=built.files)
    for w in (built, again):
        assert BuiltWindow.from_body(json.loads(json.dumps(w.to_body()))) == w


def test_cursor_passes_a_window_only_when_all_its_files_are_delivered() -> None:
    state = DeliveryState()
    w1 = _window(MON + 1 * H, ["a", "b"])
    w2 = _window(MON + 2 * H, [])
    w3 = _window(MON + 3 * H, ["c"])
    for w in (w1, w2, w3):
        state.reduce("window", w.to_body())
    sd = state.stream(1, Stream.DATA)
    assert sd.cursor_ns is None and sd.pending() == [w1, w3]  # an empty window has nothing due
    state.reduce("delivered", delivered_body(1, Stream.DATA, MON + 1 * H, "a"))
    assert sd.cursor_ns is None
    state.reduce("delivered", delivered_body(1, Stream.DATA, MON + 1 * H, "b"))
    # The empty window passes with the one before it.
    assert sd.cursor_ns == MON + 2 * H
    assert sd.pending() == [w3]
    # Another server's and another stream's deliveries are theirs.
    state.reduce("delivered", delivered_body(2, Stream.DATA, MON + 3 * H, "c"))
    state.reduce("delivered", delivered_body(1, Stream.ALARM, MON + 3 * H, "c"))
    assert sd.cursor_ns == MON + 2 * H


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 30)), min_size=1, max_size=60),
       st.lists(st.tuples(st.integers(1, 60), st.integers(0, 30)), min_size=1, max_size=8))
def test_every_item_belongs_to_exactly_one_window_once_covered(
        items: list[tuple[int, int]], builds: list[tuple[int, int]]) -> None:
    """Items (time, seq) against windows built with growing ends and watermarks."""
    builds = sorted(set(builds))
    ends: list[int] = []
    marks: list[int] = []
    for end, mark in builds:
        if (not ends or end > ends[-1]) and (not marks or mark >= marks[-1]):
            ends.append(end)
            marks.append(mark)
    specs = []
    after = None
    for end, mark in zip(ends, marks, strict=True):
        m = Watermark(devices={"d": mark}, journal=mark)
        spec = WindowSpec(server=1, stream=Stream.DATA, start_ns=0, end_ns=end, membership=m,
                          after=after, config="")
        specs.append(spec)
        after = PreviousWindow(end_ns=end, membership=m)
    for ts, seq in items:
        holders = [k for k, s in enumerate(specs) if s.has_record("d", seq, ts)]
        assert holders == [k for k, s in enumerate(specs) if s.has_event(seq, ts)]
        covered = any(ts < e and seq <= m for e, m in zip(ends, marks, strict=True))
        assert len(holders) == (1 if covered else 0)
        if holders:
            first = next(k for k, (e, m) in enumerate(zip(ends, marks, strict=True))
                         if ts < e and seq <= m)
            assert holders == [first]


def test_state_bodies_of_the_earlier_form_still_give_their_windows_and_deliveries() -> None:
    # Stores written before the delivery state had a section of its own kept each stream as
    # {pending, last, done} under extra["outbox"]; a gateway upgraded on such a store must not
    # deliver again what its last `state` event says was delivered.
    delivered, pending, last = (_window(k * H, [f"f{k}"], start=(k - 1) * H) for k in (1, 2, 3))
    older = {"extra": {"outbox": {
        "events": {"1/DATA": 41},
        "1/DATA": {"pending": [pending.to_body()], "last": last.to_body(),
                   "done": delivered.to_body()},
    }}}
    state = DeliveryState.from_state_body(json.loads(json.dumps(older)))
    stream = state.stream(1, Stream.DATA)
    assert stream.windows == [delivered, pending, last]
    assert stream.delivered == {(H, "f1"), (3 * H, "f3")}
    assert state.events[(1, Stream.DATA)] == 41
    # The present form of the same state reads back equal.
    assert DeliveryState.from_body(json.loads(json.dumps(state.to_body()))).stream(
        1, Stream.DATA).windows == stream.windows


class _CountingJournal:
    """The store, its journal reads counted: (seq_from, rows returned) of each."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.reads: list[tuple[int | None, int]] = []

    async def append_journal(self, kind: str, body: Mapping[str, object], **kw: Any) -> int:
        return await self.log.append_journal(kind, body, **kw)

    def journal(self, *, kinds: Sequence[str] | None = None,
                seq_from: int | None = None) -> pa.Table:
        table = self.log.journal(kinds=kinds, seq_from=seq_from)
        self.reads.append((seq_from, table.num_rows))
        return table


def _summary(state: DeliveryState) -> dict[Stream, tuple[object, ...]]:
    out: dict[Stream, tuple[object, ...]] = {}
    for stream in (Stream.DATA, Stream.ALARM):
        sd = state.stream(1, stream)
        last = sd.last_built
        out[stream] = (sd.cursor_ns, None if last is None else last.spec.end_ns,
                       [(w.spec.end_ns, [f.name for f in w.files]) for w in sd.pending()],
                       sorted(d for w in sd.pending() for d in sd.delivered
                              if d[0] == w.spec.end_ns))
    return out


async def test_outbox_state_folds_only_new_events_and_keeps_what_a_full_replay_says(
        store: Log, tmp_path: Path) -> None:
    """Forty sessions: each builds a DATA and an ALARM window; a server outage leaves some
    files undelivered for a few sessions, then they go. After every session the outbox's state
    is the full replay's (cursor, last window, pending windows and their deliveries), its read
    returned only the events since the call before, and the windows it keeps stay few."""
    journal = _CountingJournal(store)
    outbox = Outbox(server=1, log=journal, source=DemoSource(store, "WPMTEST01"),
                    directory=tmp_path / "outbox", streams=(Stream.DATA, Stream.ALARM))
    assert outbox.state().stream(1, Stream.DATA).cursor_ns is None
    undelivered: list[tuple[Stream, int, str]] = []
    for session in range(1, 41):
        appended = 0
        end = MON + session * H
        for stream in (Stream.DATA, Stream.ALARM):
            names = [f"{stream}_{session}_{k}.csv.gz" for k in range(2)]
            await store.append_journal("window", _window(end, names, end - H, stream=stream)
                                       .to_body())
            appended += 1
            undelivered += [(stream, end, n) for n in names]
        down = 10 <= session < 14 or session % 7 == 0
        if not down:
            for stream, at, name in undelivered:
                await store.append_journal("delivered", delivered_body(1, stream, at, name))
                appended += 1
            undelivered = []
        journal.reads.clear()
        state = outbox.state()
        full = DeliveryState.from_table(store.journal(kinds=["state", "window", "delivered"]))
        assert _summary(state) == _summary(full), session
        assert journal.reads == [(journal.reads[0][0], appended)], session
        assert journal.reads[0][0] is not None and (session == 1 or journal.reads[0][0] > 4)
        pending = len(state.stream(1, Stream.DATA).pending())
        assert len(state.stream(1, Stream.DATA).windows) <= pending + 1, session
    assert pending == 0 and state.stream(1, Stream.DATA).cursor_ns == MON + 40 * H
    # The caller's copy is its own.
    state.stream(1, Stream.DATA).windows.clear()
    assert outbox.state().stream(1, Stream.DATA).last_built is not None
