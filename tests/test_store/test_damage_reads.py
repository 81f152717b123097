"""No damaged byte is read back as data, on every open, read-write or read-only.

1. Bytes flipped at random places in random batches of a device's open segment, then several
   read-write and read-only opens in a row with appends in between: every read (records by time
   and by seq, the DuckDB and polars views) returns only rows exactly as written, no seq that was
   not acknowledged, every intact acknowledged batch, and every open that meets the damage
   reports it.
2. A segment's tail zero-filled (flash that pre-allocates) or truncated from every offset of its
   last two batches: a read-only open keeps exactly the batches a read-write open keeps, and
   writes nothing.
3. A flipped byte in a sealed segment rewritten as an IPC file is caught the same way.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from records_util import T0, record, records

from store import JOURNAL_SCHEMA, RECORDS_SCHEMA, Log, ReportKind, StoreOptions
from store._ipc import RECORD_BATCH_MSG, read_message, schema_message
from store._segment import footer_matches, read_ipc_file, scan_stream
from store.query import duckdb_connection, records_dataset, records_lazy

VARS = 4
DEVICE = "7"


def _value(ident: int, var: int) -> float:
    return float(ident * 1000 + var - 1)


async def _append(log: Log, idents: range, acked: dict[int, int]) -> None:
    """One record per append, each its own commit (one batch each); acked: seq -> ident."""
    for ident in idents:
        got = await log.append_records(DEVICE, record(T0 + ident * 10**9, VARS,
                                                      _value(ident, 1)), commit_now=True)
        assert len(got) == 1
        acked[got.first] = ident


def _rows(table: pa.Table) -> list[tuple[int, int, float]]:
    return list(zip(table.column("seq").to_pylist(), table.column("var").to_pylist(),
                    table.column("value").to_pylist(), strict=True))


def _check_rows(rows: list[tuple[int, int, float]], acked: dict[int, int],
                must_have: set[int]) -> set[int]:
    """Every row as written for its seq, each (seq, var) once, every `must_have` seq whole."""
    seen: dict[int, set[int]] = {}
    for seq, var, value in rows:
        assert seq in acked, f"seq {seq} was never acknowledged"
        assert value == _value(acked[seq], var), (seq, var, value, acked[seq])
        assert var not in seen.setdefault(seq, set()), f"seq {seq} var {var} twice"
        seen[seq].add(var)
    for seq, variables in seen.items():
        assert variables == set(range(1, VARS + 1)), f"seq {seq} partly read: {variables}"
    missing = must_have - set(seen)
    assert not missing, f"acknowledged intact records lost: {sorted(missing)}"
    return set(seen)


def _read_everything(log: Log, acked: dict[int, int], must_have: set[int]) -> None:
    every = _check_rows(_rows(log.records(DEVICE)), acked, must_have)
    by_seq = _check_rows(_rows(log.records(DEVICE, seq_from=2, seq_to=10**6)), acked,
                         {s for s in must_have if s >= 2})
    assert by_seq == {s for s in every if s >= 2}
    start = T0 + 3 * 10**9
    by_time = _check_rows(_rows(log.records(DEVICE, start_ns=start)), acked,
                          {s for s in must_have if acked[s] >= 3})
    assert by_time == {s for s in every if acked[s] >= 3}
    con = duckdb_connection(log)
    view = con.sql("SELECT seq, var, value FROM records ORDER BY seq, var").fetchall()
    con.close()
    assert sorted(view) == sorted(_rows(log.records(DEVICE)))
    frame = records_lazy(log).select("seq", "var", "value").collect()
    assert sorted(frame.iter_rows()) == sorted(view)


def _flip(rng: random.Random, path: Path) -> tuple[set[int], set[int]]:
    """Flip 1-3 bytes in 1-2 random batches; returns (seqs of hit batches, of the last batch)."""
    data = bytearray(path.read_bytes())
    frames = scan_stream(bytes(data), RECORDS_SCHEMA).batches
    hit: set[int] = set()
    for frame in rng.sample(frames, rng.randint(1, min(2, len(frames)))):
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(frame.start, frame.end)] ^= rng.randint(1, 255)
        hit.update(range(frame.seq_first, frame.seq_last + 1))
    path.write_bytes(bytes(data))
    last = frames[-1]
    return hit, set(range(last.seq_first, last.seq_last + 1))


def _damage_reported(log: Log, path: Path) -> bool:
    return any(r.kind is ReportKind.DAMAGE and r.path.name == path.name for r in log.reports)


async def test_flipped_bytes_never_come_back_as_data_on_any_later_open(tmp_path: Path) -> None:
    rng = random.Random(13)
    trials = 12
    for trial in range(trials):
        root = tmp_path / f"t{trial}"
        acked: dict[int, int] = {}
        options = StoreOptions(flush_s=60, compact_sealed=rng.random() < 0.5)
        async with await Log.open(root, options) as log:
            await _append(log, range(1, 9), acked)
        segment = root / "devices" / DEVICE / "1.arrows"
        hit, last = _flip(rng, segment)
        # A flip in the last batch cannot be told from a torn write: cut as a torn tail, its
        # records are not counted on (they were damaged anyway).
        must_have = set(acked) - hit
        middle_damage = bool(hit - last)
        ident = 100
        for round_ in range(3):
            async with await Log.open(root, options) as log:
                if middle_damage:
                    assert _damage_reported(log, segment), (trial, round_, log.reports)
                await asyncio.to_thread(_read_everything, log, acked, must_have)
                await _append(log, range(ident, ident + 3), acked)
                must_have |= {s for s, i in acked.items() if i >= ident}
                ident += 3
                await asyncio.to_thread(_read_everything, log, acked, must_have)
            ro = Log.open_read_only(root)
            if middle_damage:
                assert _damage_reported(ro, segment), (trial, round_, ro.reports)
            _read_everything(ro, acked, must_have)
            assert not [r for r in ro.check() if r.kind is not ReportKind.DAMAGE]
            if middle_damage:
                assert any(r.kind is ReportKind.DAMAGE for r in ro.check())


def _store_with_one_segment(root: Path, batches: int
                            ) -> tuple[bytes, list[tuple[int, int, int]]]:
    acked: dict[int, int] = {}

    async def build() -> None:
        async with await Log.open(root, StoreOptions(flush_s=60)) as log:
            await _append(log, range(1, batches + 1), acked)

    asyncio.run(build())
    data = (root / "devices" / DEVICE / "1.arrows").read_bytes()
    frames = scan_stream(data, RECORDS_SCHEMA).batches
    return data, [(f.start, f.end, f.seq_last) for f in frames]


def _seqs(log: Log) -> list[int]:
    return sorted(set(log.records(DEVICE).column("seq").to_pylist()))


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_zero_filled_and_truncated_tails_read_only_keeps_what_read_write_keeps(
        tmp_path: Path) -> None:
    template = tmp_path / "template"
    data, ends = _store_with_one_segment(template, 4)
    (template / "lock").unlink()
    header = len(schema_message(RECORDS_SCHEMA))
    # Zero-filled and truncated from every offset of the last batch (and the bytes before its
    # start), zero-filled past the old end at a stride there, and a stride through the earlier
    # batches down to the schema message.
    last_start = ends[-1][0]
    cases = [(o, "zero") for o in range(last_start - 16, len(data))]
    cases += [(o, "truncate") for o in range(last_start - 16, len(data))]
    cases += [(o, "zero_beyond") for o in range(last_start - 16, len(data), 3)]
    cases += [(o, shape) for o in range(0, last_start - 16, 41)
              for shape in ("zero", "truncate", "zero_beyond")]
    assert header < last_start
    segment = Path("devices") / DEVICE / "1.arrows"
    # Thousands of opens, each writer open ending with a journaled (fsynced) report: on a tmpfs
    # when there is one, so the test stays quick.
    scratch = Path(tempfile.mkdtemp(dir="/dev/shm")) if os.path.isdir("/dev/shm") else tmp_path
    work = scratch / "work"
    checked = 0

    async def read_write(root: Path) -> tuple[list[int], list[ReportKind]]:
        async with await Log.open(root, StoreOptions(flush_s=60)) as log:
            return _seqs(log), [r.kind for r in log.reports]

    loop = asyncio.new_event_loop()
    try:
        for offset, shape in cases:
            if shape == "truncate":
                damaged = data[:offset]
            elif shape == "zero":
                damaged = data[:offset] + bytes(len(data) - offset)
            else:
                damaged = data[:offset] + bytes(len(data) - offset + 4096)
            if damaged == data:
                continue
            # Intact batches: bytes unchanged (zeroing a batch's zero padding changes none).
            kept = [seq for start, end, seq in ends if damaged[start:end] == data[start:end]]
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(template, work)
            (work / segment).write_bytes(damaged)
            before = _listing(work)
            ro = Log.open_read_only(work)
            ro_seqs = _seqs(ro)
            assert _listing(work) == before, "a read-only open wrote"
            assert ro_seqs == list(range(1, (kept[-1] if kept else 0) + 1)), \
                (offset, shape, ro_seqs, kept)
            assert not [r for r in ro.reports if r.kind is ReportKind.DAMAGE], ro.reports
            rw_seqs, kinds = loop.run_until_complete(read_write(work))
            assert rw_seqs == ro_seqs, (offset, shape, rw_seqs, ro_seqs)
            assert ReportKind.DAMAGE not in kinds
            # Opened again read-only after the writer cut it: still the same batches.
            assert _seqs(Log.open_read_only(work)) == ro_seqs
            checked += 1
    finally:
        loop.close()
        if scratch != tmp_path:
            shutil.rmtree(scratch)
    assert checked > len(data) - last_start


#: A small seal size: a few records make several sealed segments, each rewritten as an IPC file.
SMALL_SEALS = StoreOptions(flush_s=60, seal_bytes=3000)


async def _sealed_files(root: Path, acked: dict[int, int]) -> list[Path]:
    """Records 1 to 12 (their values in `acked`) in SMALL_SEALS: the sealed IPC files in
    order."""
    async with await Log.open(root, SMALL_SEALS) as log:
        await _append(log, range(1, 13), acked)
        await log.commit()
    files = sorted((root / "devices" / DEVICE).glob("*.arrow"), key=lambda p: int(p.stem))
    assert len(files) >= 2, list((root / "devices" / DEVICE).iterdir())
    return files


async def test_flip_in_a_sealed_ipc_file_is_reported_and_skipped(tmp_path: Path) -> None:
    root = tmp_path / "s"
    acked: dict[int, int] = {}
    files = await _sealed_files(root, acked)
    victim = files[0]
    table = pa.ipc.open_file(pa.memory_map(str(victim))).read_all()
    lost = set(table.column("seq").to_pylist())
    # A flip in the body of the value column: the Arrow reader alone reads a wrong value back.
    blob = bytearray(victim.read_bytes())
    needle = pa.array([_value(acked[min(lost)], 1)], pa.float64()).buffers()[1].to_pybytes()
    at = bytes(blob).find(needle)
    assert at > 0
    blob[at + 6] ^= 0x40
    victim.write_bytes(bytes(blob))
    wrong = pa.ipc.open_file(pa.memory_map(str(victim))).read_all()
    assert pc.min(wrong.column("value")).as_py() != _value(acked[min(lost)], 1)
    for _ in range(2):
        ro = Log.open_read_only(root)
        _check_rows(_rows(ro.records(DEVICE)), acked, set(acked) - lost)
        assert _damage_reported(ro, victim)
        # The lazy views scan sealed files through their footers, column by column: the
        # damaged batch is left out there too, and reported by the scan that met it.
        ro = Log.open_read_only(root)
        assert not _damage_reported(ro, victim)
        con = duckdb_connection(ro)
        _check_rows(con.sql("SELECT seq, var, value FROM records").fetchall(), acked,
                    set(acked) - lost)
        assert con.sql("SELECT count(*) FROM records WHERE value IS NULL").fetchall() == [(0,)]
        con.close()
        assert _damage_reported(ro, victim)
        frame = records_lazy(Log.open_read_only(root)).select("seq", "var", "value").collect()
        _check_rows(list(frame.iter_rows()), acked, set(acked) - lost)
        async with await Log.open(root, SMALL_SEALS) as log:
            got = await asyncio.to_thread(log.records, DEVICE)
            _check_rows(_rows(got), acked, set(acked) - lost)
            assert _damage_reported(log, victim)
    assert os.path.exists(victim)


async def test_views_read_a_sealed_file_whose_footer_lies_by_its_verified_batches(
        tmp_path: Path) -> None:
    """The footer of an IPC file is covered by no CRC: one that points elsewhere (a batch's
    offset moved, its body length changed) is not followed; the verified batches are read."""
    root = tmp_path / "s"
    acked: dict[int, int] = {}
    files = await _sealed_files(root, acked)
    # One log read through twice: the second scan re-checks what the first walked (by CRC and
    # the bytes around the frames), so changes made in between are still caught.
    same = Log.open_read_only(root)
    con = duckdb_connection(same)
    want = sorted(con.sql("SELECT seq, var, value FROM records").fetchall())
    _check_rows(want, acked, set(acked))
    blob = bytearray(files[0].read_bytes())
    footer_len = int.from_bytes(blob[-10:-6], "little", signed=True)
    footer = bytes(blob[-10 - footer_len : -10])
    batch_start = int(scan_ipc_batches(files[0])[0])
    at = footer.rfind(batch_start.to_bytes(8, "little"))
    assert at >= 0
    blob[len(blob) - 10 - footer_len + at] ^= 0x08  # the block's offset moves by 8 bytes
    files[0].write_bytes(bytes(blob))
    with pytest.raises((pa.ArrowInvalid, OSError)):  # what a reader trusting the footer meets
        pa.ipc.open_file(pa.memory_map(str(files[0]))).read_all()
    assert sorted(con.sql("SELECT seq, var, value FROM records").fetchall()) == want
    con.close()
    ro = Log.open_read_only(root)
    con = duckdb_connection(ro)
    assert sorted(con.sql("SELECT seq, var, value FROM records").fetchall()) == want
    assert con.sql("SELECT count(DISTINCT seq) FROM records").fetchall() == [(len(acked),)]
    con.close()
    # A flipped byte in a batch of a file the log walked before: that batch is left out.
    victim = files[-1]
    con = duckdb_connection(same)
    assert sorted(con.sql("SELECT seq, var, value FROM records").fetchall()) == want
    lost = set(pa.ipc.open_file(pa.memory_map(str(victim))).read_all().column("seq").to_pylist())
    blob = bytearray(victim.read_bytes())
    blob[scan_ipc_batches(victim)[0] + 8] ^= 0x01
    victim.write_bytes(bytes(blob))
    _check_rows(con.sql("SELECT seq, var, value FROM records").fetchall(), acked,
                set(acked) - lost)
    assert not lost & {r[0] for r in con.sql("SELECT seq FROM records").fetchall()}
    assert _damage_reported(same, victim)
    con.close()
    # A file deleted (by the quota) between listing and scan reads as empty.
    ro = Log.open_read_only(root)
    dataset = records_dataset(ro)
    files[1].unlink()
    gone = set(pa.ipc.open_file(pa.memory_map(str(files[0]))).schema.metadata or {})
    assert gone  # the first file is still there, its schema intact
    seqs = set(dataset.to_table(columns=["seq"]).column("seq").to_pylist())
    assert seqs < set(acked) and seqs


def scan_ipc_batches(path: Path) -> list[int]:
    """Start offsets of the record batch messages of a sealed file, by walking it."""
    from store._segment import scan_ipc_file

    scan, _ = scan_ipc_file(path.read_bytes(), RECORDS_SCHEMA)
    starts = []
    for frame in scan.batches:
        pos = frame.start
        while pos < frame.end:
            msg = read_message(memoryview(path.read_bytes()), pos)
            assert msg is not None
            if msg.kind == RECORD_BATCH_MSG:
                starts.append(msg.start)
            pos = msg.end
    return starts


async def test_record_batches_decode_only_the_asked_columns(tmp_path: Path) -> None:
    acked: dict[int, int] = {}
    async with await Log.open(tmp_path, StoreOptions(flush_s=60, seal_bytes=3000)) as log:
        await _append(log, range(1, 13), acked)
        await log.commit()
        assert list((tmp_path / "devices" / DEVICE).glob("*.arrow"))
        whole = pa.Table.from_batches(log.record_batches(DEVICE))
        some = pa.Table.from_batches(log.record_batches(DEVICE, ["value", "seq"]))
        assert some.column_names == ["seq", "value"]
        assert some.equals(whole.select(["seq", "value"]))
        with pytest.raises(ValueError, match="no record columns"):
            log.record_batches(DEVICE, ["nope"])


@pytest.mark.parametrize("sealed", [False, True])
async def test_a_damaged_schema_message_loses_no_batch_and_no_sequence_number(
        tmp_path: Path, sealed: bool) -> None:
    """A stream segment's schema message is always the store's own: a flip in it, with trusted
    batches after it, is damage at byte 0. The batches are read (with the store's schema
    message), the segment is never appended to again or compacted, and its seq numbers are
    not given again (they were: the segment was set aside as not ours, its records gone)."""
    root = tmp_path / "s"
    acked: dict[int, int] = {}
    options = StoreOptions(flush_s=60, compact_sealed=False, seal_bytes=3000 if sealed else 2**22)
    async with await Log.open(root, options) as log:
        await _append(log, range(1, 9), acked)
    segment = root / "devices" / DEVICE / "1.arrows"
    blob = bytearray(segment.read_bytes())
    blob[len(schema_message(RECORDS_SCHEMA)) // 2] ^= 0x04
    segment.write_bytes(bytes(blob))
    for round_ in range(2):
        ro = Log.open_read_only(root)
        _read_everything(ro, acked, set(acked))
        found = [r for r in ro.check() if r.path == segment]
        assert [(r.kind, r.offset) for r in found] == [(ReportKind.DAMAGE, 0)], found
        async with await Log.open(root, options) as log:
            _read_everything(log, acked, set(acked))
            before = max(acked)
            await _append(log, range(100 + round_ * 10, 103 + round_ * 10), acked)
            assert min(s for s in acked if s > before) == before + 1
            await asyncio.to_thread(_read_everything, log, acked, set(acked))
            assert _damage_reported(log, segment) or sealed
    assert segment.read_bytes() == bytes(blob)


def test_no_flipped_byte_of_a_sealed_file_raises_or_comes_back_as_data(tmp_path: Path) -> None:
    """Every byte of a sealed records file and a sealed journal file flipped in turn (the schema
    message three ways): the walk, the read and the footer check never
    raise (a schema message whose flip Arrow refuses with another error than ArrowInvalid
    stopped the writer's open), never return a row that was not written, and never call the
    file clean unless the flip is in its footer and leaves it saying the same."""
    root = tmp_path / "s"
    acked: dict[int, int] = {}

    async def build() -> None:
        async with await Log.open(root, StoreOptions(flush_s=60)) as log:
            await _append(log, range(1, 4), acked)
            for n in range(3):
                await log.append_journal("log", {"n": n}, ts_ns=T0 + n, commit_now=True)
            # The next day: both streams seal their first segment, rewritten as an IPC file.
            await log.append_records(DEVICE, record(T0 + DAY, VARS), commit_now=True)
            await log.append_journal("log", {"n": 9}, ts_ns=T0 + DAY, commit_now=True)

    asyncio.run(build())
    sealed = [(root / "devices" / DEVICE / "1.arrow", RECORDS_SCHEMA),
              (root / "journal" / "1.arrow", JOURNAL_SCHEMA)]
    for path, schema in sealed:
        data = path.read_bytes()
        written, written_meta, scan = read_ipc_file(path, schema)
        meta = written_meta
        assert scan.ended and not scan.damage and footer_matches(data, scan,
                                                                 schema.with_metadata(meta))
        rows = _all_rows(written)
        head = scan.batches[0].start
        flips = [(at, bit) for at in range(len(data)) for bit in (0x10,)]
        flips += [(at, bit) for at in range(head) for bit in (0x01, 0x80)]
        victim = tmp_path / path.name
        for at, bit in flips:
            blob = bytearray(data)
            blob[at] ^= bit
            victim.write_bytes(bytes(blob))
            got, meta, scan = read_ipc_file(victim, schema)
            assert _all_rows(got) <= rows, (path, at, bit)
            clean = scan.header_ok and scan.ended and not scan.damage and scan.torn is None
            if clean and at < scan.good_end:
                # No CRC covers the schema metadata; what the batches cannot confirm is a value
                # no reader decodes rows by (the size as written, the names of the stream and
                # the version, which the views check on their own).
                changed = {k for k in meta.keys() | written_meta.keys()
                           if meta.get(k) != written_meta.get(k)}
                assert changed and changed <= _UNCONFIRMED, (path, at, bit, changed)
                continue
            if clean and footer_matches(bytes(blob), scan, schema.with_metadata(meta)):
                # A flip in the footer (no CRC covers it) that leaves it listing the same
                # messages and schema: a reader following it reads what was written.
                footed = pa.ipc.open_file(pa.py_buffer(bytes(blob))).read_all()
                assert _all_rows(footed.to_batches()) == rows, (path, at, bit)


DAY = 86_400 * 10**9
_UNCONFIRMED = {b"sunpm.uncompressed_bytes", b"sunpm.stream", b"sunpm.schema_version"}


def _all_rows(batches: list[pa.RecordBatch]) -> set[tuple[object, ...]]:
    table = pa.Table.from_batches(batches).combine_chunks() if batches else None
    if table is None:
        return set()
    return set(zip(*(table.column(i).to_pylist() for i in range(table.num_columns)),
                   strict=True))


def test_check_names_a_damaged_footer_of_a_sealed_file(tmp_path: Path) -> None:
    """Reads walk a sealed file and never follow its footer, so they meet no damage there; the
    check (`sunpm sd fsck`) does: a footer that no longer lists the file's batches is named
    with its file and offset."""
    root = tmp_path / "s"
    acked: dict[int, int] = {}

    async def build() -> None:
        async with await Log.open(root, StoreOptions(flush_s=60)) as log:
            await _append(log, range(1, 4), acked)
            got = await log.append_records(DEVICE, record(T0 + DAY, VARS, _value(50, 1)),
                                           commit_now=True)
            acked[got.first] = 50

    asyncio.run(build())
    victim = root / "devices" / DEVICE / "1.arrow"
    assert Log.open_read_only(root).check() == []
    data = bytearray(victim.read_bytes())
    _, _, scan = read_ipc_file(victim, RECORDS_SCHEMA)
    # The first record batch block's offset, in the footer's block vector: moved by 8 bytes.
    block = data.rfind(scan.batches[0].start.to_bytes(8, "little"))
    assert block > scan.good_end
    data[block] ^= 0x08
    victim.write_bytes(bytes(data))
    ro = Log.open_read_only(root)
    _check_rows(_rows(ro.records(DEVICE)), acked, set(acked))
    found = ro.check()
    assert [(r.kind, r.path, r.offset) for r in found] == [
        (ReportKind.DAMAGE, victim, scan.good_end)], found


def _ranged_value(seq: int, var: int) -> float:
    return float((seq - 1) * 1000 + var - 1)


@pytest.mark.parametrize("where", ["schema message", "first batch", "dictionaries"])
async def test_a_sealed_file_damaged_in_its_first_frame_or_schema_keeps_its_other_batches(
        tmp_path: Path, where: str) -> None:
    """A sealed records file in ranges of variables, one byte flipped in its schema message, in
    the body of its first record batch, or in the dictionaries that its first frame carries for
    the whole file. Every read (records, the DuckDB view, a writer's open) and the check return
    the rows of every batch that verifies, exactly as written, and nothing of the damaged one;
    the damage is reported with the file and its offset; the file's seq numbers are not given
    again. The schema message and the first batch used to lose the whole file (reported as not
    ours, or unreadable without an offset); the dictionaries have no copy, so they still do."""
    from store._segment import scan_ipc_file

    root = tmp_path / "s"
    options = StoreOptions(flush_s=60)
    async with await Log.open(root, options) as log:
        got = await log.append_records(DEVICE, records([T0 + i * 10**9 for i in range(100)], 100),
                                       commit_now=True)
        assert (got.first, got.last) == (1, 100)
        # The next day's record seals the first day, rewritten as an IPC file.
        got = await log.append_records(DEVICE, record(T0 + DAY, 100, 100_000), commit_now=True)
        assert got.first == 101
    victim = root / "devices" / DEVICE / "1.arrow"
    assert victim.exists()
    data = bytearray(victim.read_bytes())
    scan, _ = scan_ipc_file(bytes(data), RECORDS_SCHEMA)
    frames = scan.batches
    assert len(frames) >= 3 and all(f.var_min is not None for f in frames)
    dictionary = read_message(memoryview(data), frames[0].start)
    assert dictionary is not None and dictionary.kind != RECORD_BATCH_MSG
    first_batch = read_message(memoryview(data), dictionary.end)
    assert first_batch is not None and first_batch.kind == RECORD_BATCH_MSG
    if where == "schema message":
        at, offset, lost_vars = 40, 8, set()
    elif where == "first batch":
        at, offset = first_batch.body_start + 40, frames[0].start
        lost_vars = set(range(frames[0].var_min or 0, (frames[0].var_max or 0) + 1))
    else:
        at, offset, lost_vars = dictionary.body_start + 8, frames[0].start, set(range(1, 101))
    data[at] ^= 0x08
    victim.write_bytes(bytes(data))
    want = {(seq, var, _ranged_value(seq, var)) for seq in range(1, 102)
            for var in range(1, 101) if var not in lost_vars or seq == 101}

    def check_reads(log: Log) -> None:
        rows = _rows(log.records(DEVICE))
        assert len(rows) == len(want) and set(rows) == want
        assert rows == sorted(rows)  # record order, as appended
        con = duckdb_connection(log)
        assert set(con.sql("SELECT seq, var, value FROM records").fetchall()) == want
        con.close()
        found = [(r.kind, r.offset) for r in log.check() if r.path == victim]
        assert found and found[0] == (ReportKind.DAMAGE, offset), found
        assert _damage_reported(log, victim)

    check_reads(Log.open_read_only(root))
    async with await Log.open(root, options) as log:
        check_reads(log)
        got = await log.append_records(DEVICE, record(T0 + 200 * 10**9, VARS), commit_now=True)
        assert got.first == 102  # no seq number given again
    assert victim.read_bytes() == bytes(data)


async def test_a_flipped_byte_in_a_sealed_journal_file_costs_a_few_events(tmp_path: Path) -> None:
    """A day of the journal rewritten as an IPC file is in batches of `JOURNAL_BATCH_ROWS`
    events: a flipped byte costs that batch, as it cost one commit's events in the live
    segment. It was one batch of up to 65,536 events: the whole day's windows, deliveries and
    `state` events went with one byte."""
    from store._segment import JOURNAL_BATCH_ROWS, scan_ipc_file

    root = tmp_path / "s"
    n = 3 * JOURNAL_BATCH_ROWS + 100
    async with await Log.open(root, StoreOptions(flush_s=0.05)) as log:
        await asyncio.gather(*[log.append_journal("log", {"n": i}, ts_ns=T0 + i)
                               for i in range(n)])
        await log.append_journal("log", {"n": n}, ts_ns=T0 + DAY, commit_now=True)
    victim = root / "journal" / "1.arrow"
    data = bytearray(victim.read_bytes())
    frames = scan_ipc_file(bytes(data), JOURNAL_SCHEMA)[0].batches
    assert len(frames) == 4
    hit = frames[1]
    data[(hit.start + hit.end) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    ro = Log.open_read_only(root)
    got = ro.journal(kinds=["log"]).column("seq").to_pylist()
    lost = set(range(hit.seq_first, hit.seq_last + 1))
    assert got == [s for s in range(1, n + 2) if s not in lost]
    assert len(lost) == JOURNAL_BATCH_ROWS
    assert [(r.kind, r.offset) for r in ro.check() if r.path == victim] == \
        [(ReportKind.DAMAGE, hit.start)]


async def test_two_state_events_never_share_a_batch_of_a_sealed_journal_file(
        tmp_path: Path) -> None:
    """The journal's quota keeps the history of the two latest `state` events so that a
    damaged one falls back to the other (the store asks for them a commit or two apart, so
    they are close). In a sealed journal file each is a batch of its own: a flipped byte in the
    latest one's batch leaves the one before it, which used to share the batch and go with it."""
    from store._segment import scan_ipc_file

    root = tmp_path / "s"
    now = time.time_ns() - 10**9  # the day of the `state` events, which are stamped now
    async with await Log.open(root, StoreOptions(flush_s=0.05)) as log:
        for i in range(5):
            await log.append_journal("log", {"n": i}, ts_ns=now + i, commit_now=True)
        older = await log.write_state_snapshot()
        await log.append_journal("log", {"n": 5}, ts_ns=now + 5, commit_now=True)
        latest = await log.write_state_snapshot()
        await log.append_journal("log", {"n": 6}, ts_ns=now + 6, commit_now=True)
        await log.append_journal("log", {"n": 7}, ts_ns=now + DAY, commit_now=True)
    victim = root / "journal" / "1.arrow"
    data = bytearray(victim.read_bytes())
    frames = scan_ipc_file(bytes(data), JOURNAL_SCHEMA)[0].batches
    holding = [f for f in frames if f.seq_first <= latest <= f.seq_last]
    assert [(f.seq_first, f.seq_last) for f in holding] == [(latest, latest)]
    data[(holding[0].start + holding[0].end) // 2] ^= 0x04
    victim.write_bytes(bytes(data))
    ro = Log.open_read_only(root)
    since = ro.journal_since_latest("state")
    assert since.column("seq").to_pylist()[:2] == [older, older + 1]
    assert since.column("kind").cast(pa.string()).to_pylist()[0] == "state"
    assert ro.journal().num_rows == 10 - 1
