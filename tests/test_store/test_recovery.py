"""Torn tails and damage: 1,000 random truncations and corruptions of a segment.

Each trial damages a copy of one segment (truncation, zero-filled tail as flash leaves after a power
cut, flipped bytes, zeroed range, appended garbage) and runs the store's recovery on it. Every
complete batch before the damage must survive, and nothing but a report may come out.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from records_util import T0, records

from store import RECORDS_SCHEMA, Log, ReportKind, StoreOptions
from store._ipc import frame_batch, schema_message
from store._stream import Stream

TRIALS = 1000


def build_segment(rng: random.Random, n_frames: int = 12) -> tuple[bytes, list[tuple[int, int]]]:
    """A segment of framed batches of varied sizes; returns bytes and each frame's byte range."""
    data = bytearray(schema_message(RECORDS_SCHEMA))
    ranges: list[tuple[int, int]] = []
    seq = 1
    for k in range(n_frames):
        count = rng.randint(1, 4)
        times = [T0 + (seq + j) * 10**9 for j in range(count)]
        batch = records(times, n_vars=rng.randint(1, 6), first_value=seq * 100)
        seqs = []
        for j in range(count):
            seqs += [seq + j] * (batch.num_rows // count)
        cols = list(batch.columns)
        cols.insert(1, pa.array(seqs, pa.uint64()))
        full = pa.RecordBatch.from_arrays(cols, schema=RECORDS_SCHEMA)
        frame = frame_batch(RECORDS_SCHEMA, full, seq_first=seq, seq_last=seq + count - 1,
                            ts_min=times[0], ts_max=times[-1])
        ranges.append((len(data), len(data) + len(frame)))
        data += frame
        seq += count
        assert k >= 0
    return bytes(data), ranges


def mutate(rng: random.Random, data: bytes) -> tuple[bytes, int, int, str]:
    """Damaged copy and the damaged byte range [lo, hi) (hi = len for tail damage)."""
    n = len(data)
    mode = rng.choice(["truncate", "zero_tail", "flip", "zero_range", "garbage"])
    o = rng.randrange(0, n)
    if mode == "truncate":
        return data[:o], o, n, mode
    if mode == "zero_tail":
        return data[:o] + bytes(rng.randint(1, n - o + 64)), o, n, mode
    if mode == "flip":
        k = rng.randint(1, 4)
        out = bytearray(data)
        for i in range(o, min(o + k, n)):
            out[i] ^= rng.randint(1, 255)
        return bytes(out), o, min(o + k, n), mode
    if mode == "zero_range":
        k = rng.randint(1, 64)
        out = bytearray(data)
        out[o : o + k] = bytes(len(out[o : o + k]))
        changed = [i for i in range(o, min(o + k, n)) if data[i] != 0]
        if not changed:
            return bytes(out), n, n, mode
        return bytes(out), changed[0], changed[-1] + 1, mode
    return data + rng.randbytes(rng.randint(1, 300)), n, n, mode


def test_random_truncation_and_corruption_never_loses_a_batch_before_the_damage(
        tmp_path: Path) -> None:
    rng = random.Random(20210205)
    header = len(schema_message(RECORDS_SCHEMA))
    outcomes: dict[str, int] = {}
    headers = 0
    segments = [build_segment(rng) for _ in range(5)]
    for trial in range(TRIALS):
        data, ranges = segments[trial % len(segments)]
        damaged, lo, hi, mode = mutate(rng, data)
        directory = tmp_path / f"t{trial}"
        directory.mkdir()
        (directory / "1.arrows").write_bytes(damaged)
        stream = Stream("1", directory, RECORDS_SCHEMA)
        stream.load(read_only=False)  # the recovery Log.open runs; must not raise
        for report in stream.reports:
            assert str(report).startswith(str(directory)), report
        before = [r for r in ranges if r[1] <= lo]
        after = [r for r in ranges if r[0] >= hi]
        # Damage with a trusted batch after it, the schema message's included: never cut, the
        # batches after it read.
        middle = bool(after) and hi < len(data) and mode in ("flip", "zero_range")
        headers += lo < header and middle
        if not stream.segments:
            assert not before and not middle, (trial, mode, lo)
            outcomes["empty"] = outcomes.get("empty", 0) + 1
            continue
        seg = stream.segments[0]
        batches = stream.walk(seg)
        table = pa.Table.from_batches(batches, schema=RECORDS_SCHEMA)
        kept_seqs = set(pc.unique(table.column("seq")).to_pylist())
        want = _seqs_of(data, before)
        assert want <= kept_seqs, (trial, mode, lo)
        # Nothing but whole original batches: every kept value is the one written.
        for seq, value, var in zip(table.column("seq").to_pylist(),
                                   table.column("value").to_pylist(),
                                   table.column("var").to_pylist(), strict=True):
            assert value == _value_of(data, seq, var), (trial, mode)
        kinds = {r.kind for r in stream.reports}
        if middle:
            # A trusted batch follows the damage: skipped and reported, never cut.
            assert _seqs_of(data, after) <= kept_seqs, (trial, mode, lo, hi)
            assert ReportKind.DAMAGE in kinds
            outcomes["damage"] = outcomes.get("damage", 0) + 1
        elif len(damaged) > (before[-1][1] if before else header) and kinds:
            outcomes["torn"] = outcomes.get("torn", 0) + 1
        else:
            outcomes["clean"] = outcomes.get("clean", 0) + 1
        if trial % 25 == 0:
            asyncio.run(_reopen_and_append(directory.parent / f"log{trial}", damaged,
                                           max(kept_seqs, default=0)))
    assert sum(outcomes.values()) == TRIALS
    # Every kind of outcome was exercised, not only the easy ones.
    assert outcomes.get("damage", 0) > 50 and outcomes.get("torn", 0) > 200, outcomes
    assert headers > 5, headers


_VALUES: dict[bytes, dict[tuple[int, int], float]] = {}


def _decode_all(data: bytes) -> dict[tuple[int, int], float]:
    cached = _VALUES.get(data)
    if cached is None:
        table = pa.ipc.open_stream(data).read_all()
        cached = {(s, v): x for s, v, x in zip(table.column("seq").to_pylist(),
                                               table.column("var").to_pylist(),
                                               table.column("value").to_pylist(), strict=True)}
        _VALUES[data] = cached
    return cached


def _value_of(data: bytes, seq: int, var: int) -> float:
    return _decode_all(data)[(seq, var)]


def _seqs_of(data: bytes, ranges: list[tuple[int, int]]) -> set[int]:
    header = schema_message(RECORDS_SCHEMA)
    out: set[int] = set()
    for lo, hi in ranges:
        table = pa.ipc.open_stream(header + data[lo:hi]).read_all()
        out.update(table.column("seq").to_pylist())
    return out


async def _reopen_and_append(root: Path, damaged: bytes, last_seq: int) -> None:
    """Through the full Log: recovery, then appends go on gap-free, then a clean reopen."""
    (root / "devices" / "1").mkdir(parents=True)
    (root / "devices" / "1" / "1.arrows").write_bytes(damaged)
    async with await Log.open(root, StoreOptions(flush_s=0.01)) as log:
        journaled = log.journal(kinds=["storage"]).num_rows
        got = await log.append_records("1", records([T0 + 10**15], n_vars=2))
        assert got.first == (last_seq + 1 if last_seq else got.first)
        assert journaled == 0  # recovery events are journaled with the first commit
    async with await Log.open(root, StoreOptions(flush_s=0.01)) as log:
        assert [r for r in log.reports if r.kind is not ReportKind.DAMAGE] == []
        assert log.watermark().devices["1"] == got.last


@pytest.mark.parametrize("cut", [1, 7, 100])
async def test_torn_tail_is_cut_logged_and_journaled(tmp_path: Path, cut: int,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        for i in range(3):
            await log.append_records("1", records([T0 + i * 10**9]))
    seg = tmp_path / "devices" / "1" / "1.arrows"
    data = seg.read_bytes()
    seg.write_bytes(data + bytes(cut))
    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        assert [str(r) for r in log.reports] == [
            f"{seg}: torn tail of {cut} bytes truncated; 3 complete batches kept"]
        assert f"{seg}: torn tail of {cut} bytes truncated" in caplog.text
        assert seg.stat().st_size == len(data)
        await log.append_journal("heartbeat", {}, commit_now=True)
        bodies = log.journal(kinds=["storage"]).column("body").to_pylist()
        assert len(bodies) == 1 and '"event":"torn_tail"' in bodies[0]


async def test_check_finds_damage_in_a_sealed_segment_that_reads_skip(tmp_path: Path) -> None:
    options = StoreOptions(flush_s=0.01, compact_sealed=False, seal_bytes=4096)
    async with await Log.open(tmp_path, options) as log:
        for i in range(12):
            await log.append_records("1", records([T0 + i * 10**9]))
    segments = sorted((tmp_path / "devices" / "1").iterdir(), key=lambda p: int(p.stem))
    sealed = segments[0]
    data = bytearray(sealed.read_bytes())
    data[len(data) // 2] ^= 0xFF  # bit rot inside a sealed segment
    sealed.write_bytes(bytes(data))
    log = Log.open_read_only(tmp_path)
    assert log.reports == []  # sealed segments are not re-verified at open
    found = log.check()
    assert [r.kind for r in found] == [ReportKind.DAMAGE]
    assert found[0].path == sealed and "damaged batch at byte" in str(found[0])


@pytest.mark.parametrize("read_only", [False, True])
async def test_a_damaged_rewrite_left_by_a_cut_compaction_does_not_replace_its_source(
        tmp_path: Path, read_only: bool) -> None:
    """A crash between a compaction's rename and its unlink leaves the segment twice, as
    `<seq0>.arrows` and `<seq0>.arrow`; the open kept the `.arrow` and deleted the other even
    when the `.arrow` had rotted since, losing the records of its damaged batches. It keeps the
    source now, and names the rewrite."""
    days = [T0 + k * 10**9 for k in range(6)] + [T0 + 86_400 * 10**9]

    async def build(root: Path, compact: bool) -> None:
        async with await Log.open(root, StoreOptions(flush_s=60, compact_sealed=compact)) as log:
            for k, ts in enumerate(days):
                await log.append_records("1", records([ts], n_vars=3, first_value=k),
                                         commit_now=True)

    await build(tmp_path / "a", True)
    await build(tmp_path / "b", False)
    device = tmp_path / "a" / "devices" / "1"
    rewritten = device / "1.arrow"
    source = (tmp_path / "b" / "devices" / "1" / "1.arrows").read_bytes()
    (device / "1.arrows").write_bytes(source)
    blob = bytearray(rewritten.read_bytes())
    blob[len(blob) // 3] ^= 0x20  # inside its one batch
    rewritten.write_bytes(bytes(blob))
    if read_only:
        log = Log.open_read_only(tmp_path / "a")
        assert (device / "1.arrows").read_bytes() == source
    else:
        log = await Log.open(tmp_path / "a", StoreOptions(flush_s=60))
        await log.close()
        assert (device / "1.arrows").read_bytes() == source
        assert (device / "1.arrow.corrupt").read_bytes() == bytes(blob)
    assert any(r.kind is ReportKind.DAMAGE and r.path == rewritten for r in log.reports), \
        log.reports
    assert sorted(set(log.records("1").column("seq").to_pylist())) == list(range(1, 8))


async def test_a_rewrite_cut_short_is_named_so_and_its_segment_read(tmp_path: Path) -> None:
    """A card pulled in the middle of a compaction holds `<seq0>.arrow.tmp` beside the segment
    it was made from: a read-only open (`sunpm sd fsck`) says what it is instead of calling it
    not the store's, and a writer's open deletes it (any other `.tmp` is left alone)."""
    async with await Log.open(tmp_path, StoreOptions(flush_s=60)) as log:
        await log.append_records("1", records([T0]), commit_now=True)
    device = tmp_path / "devices" / "1"
    cut = device / "1.arrow.tmp"
    cut.write_bytes(b"ARROW1\0\0")
    other = device / "notes.tmp"
    other.write_bytes(b"x")
    found = {r.path.name: r.detail for r in Log.open_read_only(tmp_path).reports}
    assert found == {"1.arrow.tmp": "a rewrite cut short, its segment kept; a writer's open "
                                    "deletes it", "notes.tmp": "not a segment file name"}
    async with await Log.open(tmp_path, StoreOptions(flush_s=60)) as log:
        assert log.records("1").num_rows == 10
    assert not cut.exists() and other.exists()
