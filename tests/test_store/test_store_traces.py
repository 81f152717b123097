"""The store's frame trace area: durability, torn tails, damage, the cap, delivery deletion."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from waiting import wait_until

from store.errors import ReportKind, StoreLockedError, StoreReadOnlyError
from store.traces import (
    TraceEntry,
    TraceOptions,
    TraceStore,
    UnknownTraceInterface,
    encode_line,
)

T0 = 1_612_516_190_012_000_000  # 2021-02-05 09:09:50.012 UTC


def frame(k: int, interface: str = "ethernet", step_ns: int = 1_000_000) -> TraceEntry:
    return TraceEntry(ts_ns=T0 + k * step_ns, interface=interface,
                      direction="=>" if k % 2 == 0 else "<=",
                      data=bytes([k % 256, 0x2A, 0, 0, 0, 6, 0x7E, 3]),
                      peer="192.168.10.23:502" if interface == "ethernet" else "",
                      error="*** TIMEOUT ***" if k % 7 == 3 else "")


def segments(root: Path, interface: str = "ethernet") -> list[Path]:
    return sorted((root / "traces" / interface).glob("*.trc"))


def test_entries_round_trip_every_field_across_a_reopen(tmp_path: Path) -> None:
    io = TraceEntry(ts_ns=T0, interface="io", channels=(("AI1", "12.25"), ("DI2", "10452"),
                                                        ("RELAY", "0")))
    tic = TraceEntry(ts_ns=T0 + 5, interface="tic", direction="<=", data=b"\x02\nADCO 0\r\x03")
    written = [frame(k) for k in range(50)] + [io, tic, frame(1, "serial2")]
    with TraceStore.open(tmp_path) as traces:
        for e in written:
            traces.append(e)
        assert traces.entries("ethernet") == []       # nothing committed before the flush
        assert traces.flush() == len(written)
    with TraceStore.open(tmp_path) as traces:
        assert traces.reports == []
        assert traces.entries("ethernet") == written[:50]
        assert traces.entries("io") == [io] and traces.entries("tic") == [tic]
        assert traces.entries("serial2") == [written[-1]]
        assert traces.interfaces() == ["serial2", "ethernet", "io", "tic"]
        assert traces.oldest_ns() == T0


def test_a_time_window_selects_start_inclusive_end_exclusive(tmp_path: Path) -> None:
    with TraceStore.open(tmp_path, TraceOptions(segment_bytes=4096, cap_bytes=10**9)) as traces:
        for k in range(400):
            traces.append(frame(k))
        traces.flush()
        assert len(segments(tmp_path)) > 3
        got = traces.entries("ethernet", start_ns=T0 + 100_000_000, end_ns=T0 + 250_000_000)
        assert got == [frame(k) for k in range(100, 250)]
        assert traces.entries("ethernet", end_ns=T0) == []


def test_an_unknown_interface_is_refused_by_name(tmp_path: Path) -> None:
    with TraceStore.open(tmp_path) as traces, pytest.raises(UnknownTraceInterface,
                                                           match="'ethernet1'"):
        traces.append(TraceEntry(ts_ns=T0, interface="ethernet1", direction="=>"))


def test_a_torn_tail_is_cut_on_open_and_appends_go_on(tmp_path: Path) -> None:
    with TraceStore.open(tmp_path) as traces:
        for k in range(10):
            traces.append(frame(k))
    seg = segments(tmp_path)[-1]
    whole = seg.stat().st_size
    torn = encode_line(frame(10))[:-7]
    with open(seg, "ab") as fh:
        fh.write(torn)
    with TraceStore.open(tmp_path) as traces:
        [report] = traces.reports
        assert report.kind is ReportKind.TORN_TAIL and report.length == len(torn) and report.cut
        assert "torn tail of" in str(report) and "10 complete batches kept" in str(report)
        assert seg.stat().st_size == whole
        assert traces.entries("ethernet") == [frame(k) for k in range(10)]
        traces.append(frame(11))
    with TraceStore.open(tmp_path) as traces:
        assert traces.reports == []
        assert traces.entries("ethernet") == [frame(k) for k in range(10)] + [frame(11)]


def test_a_tail_of_zeros_is_a_torn_tail(tmp_path: Path) -> None:
    with TraceStore.open(tmp_path) as traces:
        traces.append(frame(0))
    seg = segments(tmp_path)[-1]
    with open(seg, "ab") as fh:
        fh.write(b"\0" * 4096)
    with TraceStore.open(tmp_path) as traces:
        assert [r.kind for r in traces.reports] == [ReportKind.TORN_TAIL]
        assert traces.entries("ethernet") == [frame(0)]


def test_damage_before_good_lines_is_skipped_and_reported_not_cut(tmp_path: Path) -> None:
    with TraceStore.open(tmp_path) as traces:
        for k in range(5):
            traces.append(frame(k))
    seg = segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    second = data.index(b"\n") + 1
    data[second + 20] ^= 0x01                           # inside line 2's JSON
    seg.write_bytes(bytes(data))
    with TraceStore.open(tmp_path) as traces:
        [report] = traces.reports
        assert report.kind is ReportKind.DAMAGE and report.offset == second
        assert seg.stat().st_size == len(data)
        assert traces.entries("ethernet") == [frame(k) for k in (0, 2, 3, 4)]


def test_read_only_open_never_writes_and_ignores_a_torn_tail(tmp_path: Path) -> None:
    with TraceStore.open(tmp_path) as traces:
        traces.append(frame(0))
    seg = segments(tmp_path)[-1]
    with open(seg, "ab") as fh:
        fh.write(b"0123")
    size = seg.stat().st_size
    with TraceStore.open(tmp_path) as writer:          # a read-only open beside a writer
        reader = TraceStore.open(tmp_path, read_only=True)
        assert reader.entries("ethernet") == [frame(0)]
        with pytest.raises(StoreReadOnlyError):
            reader.append(frame(1))
        reader.close()
        assert writer.reports[0].cut
    assert seg.stat().st_size == size - 4


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    with TraceStore.open(tmp_path), pytest.raises(StoreLockedError, match="already open"):
        TraceStore.open(tmp_path)


def test_the_cap_drops_the_oldest_segments_and_counts_their_entries(tmp_path: Path) -> None:
    options = TraceOptions(cap_bytes=40_000, segment_bytes=4096)
    total = 2000
    with TraceStore.open(tmp_path, options) as traces:
        for k in range(total):
            traces.append(frame(k))
            if k % 100 == 99:
                traces.flush()
        stats = traces.stats("ethernet")
        kept = traces.entries("ethernet")
    assert stats.bytes <= options.cap_bytes
    assert stats.bytes > options.cap_bytes - options.segment_limit   # only whole segments go
    assert stats.dropped > 0 and stats.dropped + stats.entries == total
    # What is left is the newest, unbroken up to the last entry.
    assert kept == [frame(k) for k in range(total - len(kept), total)]
    assert sum(p.stat().st_size for p in segments(tmp_path)) == stats.bytes
    with TraceStore.open(tmp_path, options) as traces:
        assert traces.entries("ethernet") == kept


def test_the_cap_is_per_interface(tmp_path: Path) -> None:
    options = TraceOptions(cap_bytes=40_000, segment_bytes=4096)
    with TraceStore.open(tmp_path, options) as traces:
        traces.append(frame(0, "serial1"))
        for k in range(3000):
            traces.append(frame(k))
        traces.flush()
        assert traces.stats("ethernet").dropped > 0
        assert traces.entries("serial1") == [frame(0, "serial1")]
        assert traces.stats("serial1").dropped == 0


def test_the_pending_bound_drops_the_oldest_unflushed(tmp_path: Path) -> None:
    line = len(encode_line(frame(0)))
    options = TraceOptions(max_pending_bytes=line * 10)
    with TraceStore.open(tmp_path, options) as traces:
        for k in range(30):
            traces.append(frame(k % 2 * 2))               # all the same size
        traces.flush()
        assert traces.stats("ethernet").dropped == 20
        assert len(traces.entries("ethernet")) == 10


def test_delivered_segments_are_deleted_oldest_first(tmp_path: Path) -> None:
    options = TraceOptions(segment_bytes=4096, cap_bytes=10**9)
    with TraceStore.open(tmp_path, options) as traces:
        for k in range(300):
            traces.append(frame(k))
            traces.append(frame(k, "tic"))
        traces.flush()
        cursor = T0 + 150_000_000
        asked: list[tuple[str, int]] = []

        def delivered(interface: str, newest_ns: int) -> bool:
            asked.append((interface, newest_ns))
            return interface == "ethernet" and newest_ns < cursor

        removed = traces.delete_delivered(delivered)
        left = traces.entries("ethernet")
        assert removed > 0 and removed + len(left) == 300
        assert left == [frame(k) for k in range(300 - len(left), 300)]
        assert left[0].ts_ns <= cursor                 # a segment straddling the cursor stays
        assert len(traces.entries("tic")) == 300
        # Everything delivered: the open segment goes too, and appends start a new one.
        traces.delete_delivered(lambda i, t: True)
        assert traces.entries("ethernet") == [] and segments(tmp_path) == []
        traces.append(frame(400))
    with TraceStore.open(tmp_path, options) as traces:
        assert traces.entries("ethernet") == [frame(400)]
        assert traces.entries("tic") == []


async def test_run_flushes_on_its_cadence_and_at_cancellation(tmp_path: Path) -> None:
    traces = await asyncio.to_thread(TraceStore.open, tmp_path, TraceOptions(flush_s=0.05))
    task = asyncio.create_task(traces.run())
    try:
        traces.append(frame(0))
        await wait_until(lambda: asyncio.to_thread(traces.entries, "ethernet"), 5)
        traces.append(frame(1))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await asyncio.to_thread(traces.entries, "ethernet") == [frame(0), frame(1)]
    await traces.aclose()


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=10_000), lines=st.integers(1, 20))
def test_any_truncation_keeps_every_whole_line_before_it(tmp_path_factory: pytest.TempPathFactory,
                                                         cut: int, lines: int) -> None:
    root = tmp_path_factory.mktemp("trunc")
    with TraceStore.open(root) as traces:
        for k in range(lines):
            traces.append(frame(k))
    seg = segments(root)[-1]
    data = seg.read_bytes()
    cut = min(cut, len(data))
    seg.write_bytes(data[:cut])
    whole = data[:cut].count(b"\n")
    with TraceStore.open(root) as traces:
        assert traces.entries("ethernet") == [frame(k) for k in range(whole)]
        assert seg.stat().st_size == len(b"\n".join(data.split(b"\n")[:whole])) + (1 if whole
                                                                                    else 0)


# --------------------------------------------------------------------------- SIGKILL

_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from store.traces import TraceEntry, TraceOptions, TraceStore
    traces = TraceStore.open(Path(sys.argv[1]), TraceOptions(segment_bytes=8192,
                                                             cap_bytes=10**9))
    start = int(sys.argv[2])
    k = start
    while True:
        for _ in range(int(sys.argv[3])):
            traces.append(TraceEntry(ts_ns=1_600_000_000_000_000_000 + k, interface="serial1",
                                     direction="=>", data=k.to_bytes(4, "big") * 3))
            k += 1
        traces.flush()
        sys.stdout.write(f"{k}\\n")
        sys.stdout.flush()
""")


@pytest.mark.slow
def test_acknowledged_entries_survive_sigkilled_writers(tmp_path: Path) -> None:
    """Twenty writers killed at random moments: every flushed entry is kept, in order, once."""
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    store = tmp_path / "store"
    rng = random.Random(7)
    acknowledged = 0
    torn = 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    for _ in range(20):
        proc = subprocess.Popen([sys.executable, str(script), str(store), str(acknowledged),
                                 str(rng.randint(1, 200))], stdout=subprocess.PIPE, text=True,
                                env=env)
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()               # the writer is up and flushing
            assert first, "writer did not start"
            time.sleep(rng.uniform(0.0, 0.05))
            proc.send_signal(signal.SIGKILL)
            out = first + proc.stdout.read()
        finally:
            proc.kill()
            proc.wait()
        acked = [int(line) for line in out.split()]
        # A kill leaves whole writes in the page cache; a power cut in the same place leaves a
        # part of the line being written: half the time, add one.
        tear = rng.random() < 0.5
        if tear:
            line = encode_line(TraceEntry(ts_ns=1, interface="serial1", direction="=>",
                                          data=bytes(12)))
            with open(segments(store, "serial1")[-1], "ab") as fh:
                fh.write(line[:rng.randint(1, len(line) - 1)])
        with TraceStore.open(store) as traces:
            reports = [r.kind for r in traces.reports]
            assert reports == ([ReportKind.TORN_TAIL] if tear else []), traces.reports
            torn += tear
            got = [e.ts_ns - 1_600_000_000_000_000_000 for e in traces.entries("serial1")]
        # Everything acknowledged is there; what was written but not yet acknowledged may be.
        assert got == list(range(len(got)))
        assert len(got) >= acked[-1]
        acknowledged = len(got)
    assert acknowledged > 0 and torn > 0
    print(f"kills=20 entries={acknowledged} torn_tails_cut={torn}")
