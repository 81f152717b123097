"""Analysis over a store: DuckDB SQL views and polars lazy frames, with no database file.

The Arrow segments are the database (docs/architecture.md §3). `records_dataset` is a lazy
`pyarrow.dataset` over a store whose every scan reads verified batches only, a few files at a
time, decoding (and decompressing) only the columns a query reads or filters on, which DuckDB
and polars push down, and of a sealed file only the batches whose verified variable, time and
seq bounds the filter may select (store/_pushdown.py; sealed records files are written in
ranges of variables for this), its rows handed on in record order. A sealed `.arrow` file is decoded in place from the frames a walk of it
verified (every batch's CRC-32C over its compressed bytes, length and row count), its footer
never followed; a file walked once in this process is re-checked on every later read by its
frames' CRCs and a comparison of the bytes around them, every byte checked, none parsed. The
stream segments (today's, one small batch per commit) are read through the store's reader.
Nothing is written, so a store or a card dump can be queried while a writer appends (what a
scan sees is what was committed when it reached each device; a sealed file deleted by the
quota before the scan reaches it reads as empty).

    records   device (dictionary string), ts, seq, var, value, vmin, vmax, text, quality, def
    journal   ts, seq, kind, device, def, body
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from store import _memo
from store._decode import decode_sealed
from store._ipc import BatchFrame
from store._pushdown import FramePredicate, frame_filter
from store._segment import (
    IPC_FILE_MAGIC,
    CheckedFile,
    by_variable,
    checked_file,
    decode_frames,
    in_record_order,
    scan_ipc_file,
    still_verified,
)
from store.errors import ReportKind, StoreReport
from store.log import Log
from store.schema import JOURNAL_SCHEMA, RECORDS_SCHEMA
from store.schema import unknown_version as version_not_known

if TYPE_CHECKING:
    import duckdb
    import polars as pl

RECORDS_VIEW_SCHEMA: Final[pa.Schema] = pa.schema(
    # Nullable only as a dataset's partition column must be; never null.
    [pa.field("device", pa.dictionary(pa.int32(), pa.string())),
     *RECORDS_SCHEMA],
    metadata=RECORDS_SCHEMA.metadata,
)

#: `ts` in microseconds, as `records_dataset(..., micros=True)` gives it: DuckDB (2.0) pushes a
#: filter on a microsecond timestamp into a scan, and subtracts two of them, but does neither for
#: nanoseconds.
RECORDS_VIEW_SCHEMA_US: Final[pa.Schema] = RECORDS_VIEW_SCHEMA.set(
    RECORDS_VIEW_SCHEMA.get_field_index("ts"),
    RECORDS_VIEW_SCHEMA.field("ts").with_type(pa.timestamp("us", tz="UTC")))
_TS_US: Final = RECORDS_VIEW_SCHEMA_US.field("ts").type

# Live segments hold one small batch per commit; scans run far faster over fewer, larger batches.
_COALESCE_ROWS: Final = 65_536
_SMALL_ROWS: Final = 8_192


def _as_log(source: Path | str | Log) -> Log:
    return source if isinstance(source, Log) else Log.open_read_only(Path(source))


@dataclass(frozen=True, slots=True)
class _KnownFile:
    """A sealed file a full walk found clean: its frames and the bytes around them (checked
    again, every byte, on each read) and where its schema message lies (for decoding)."""

    checked: CheckedFile
    header: tuple[int, int]
    by_variable: bool  # rows ordered by variable (`write_ipc_file`)


# Sealed files walked clean, by identity (device and inode: the same file under any path that
# names it, a dump spelled otherwise or through a link), for every `Log` of this process: a later
# read re-checks each one by its frames' CRCs and a comparison of the bytes around them
# (`still_verified`), parsing nothing; what fails (another file since under that inode) is
# walked again. Entries are small (offsets, CRCs, ~2 KiB of schema message and footer).
_KNOWN: dict[tuple[int, int], _KnownFile] = {}
_KNOWN_MAX: Final = 200_000
_KNOWN_LOCK = threading.Lock()


def forget_walks() -> None:
    """Forget which sealed files were walked clean (each is walked again at its next read), as a
    new process starts: for cold-cache measurements."""
    with _KNOWN_LOCK:
        _KNOWN.clear()


#: Called with a sealed file whose schema metadata names a schema version this reader does not
#: know, and that version; the file is not decoded.
UnknownVersion = Callable[[Path, str], None]


_SORT_KEYS: Final = [RECORDS_SCHEMA.get_field_index("seq"), RECORDS_SCHEMA.get_field_index("var")]


def _sealed_batches(store: Log, path: Path, indexes: list[int],
                    unknown_version: UnknownVersion | None = None,
                    keep: FramePredicate | None = None) -> tuple[list[pa.RecordBatch], bool]:
    """The verified batches of a sealed `.arrow` file, only the `indexes` fields decoded (and
    decompressed), and whether its rows are ordered by variable (then, when it returns more
    than one batch, seq and var are decoded too, to put them back in record order). Of a clean
    file only the batches `keep` accepts are decoded. A clean file is decoded in place from the frames its walk found (its
    footer, which no CRC covers, is never followed); one with damage, an end missing or bytes
    not ours goes through `Log.verified_file`, which reports what failed and keeps the verified
    batches. A file of another schema version is not decoded: handed to `unknown_version`,
    else reported as foreign. A file gone since it was listed (deleted by the quota) reads as
    empty."""
    try:
        # Read, not mapped: one copy costs less than mapping and faulting in a small file, and
        # the bytes checked are the bytes decoded.
        with open(path, "rb", buffering=0) as fh:
            data = fh.read()
            st = os.fstat(fh.fileno())
    except FileNotFoundError:
        return [], False
    identity = (st.st_dev, st.st_ino)
    with _KNOWN_LOCK:
        known = _KNOWN.get(identity)
    if known is None or not still_verified(data, known.checked):
        scan, meta = scan_ipc_file(data, RECORDS_SCHEMA)
        version = version_not_known(meta)
        if scan.header_ok and version is not None:
            # Same fields, other meaning: what this reader would decode is not what was meant.
            if unknown_version is not None:
                unknown_version(path, version)
            else:
                store._note([StoreReport(kind=ReportKind.SCHEMA, path=path, detail=version)])
            return [], False
        ordered = by_variable(meta)
        if not scan.header_ok or not scan.ended or scan.damage or scan.torn is not None:
            with _KNOWN_LOCK:
                _KNOWN.pop(identity, None)
            rebuilt = store.verified_file(path)
            fields = sorted({*indexes, *_SORT_KEYS}) if ordered else indexes
            options = pa.ipc.IpcReadOptions(included_fields=fields, use_threads=False)
            reader = pa.ipc.open_file(pa.BufferReader(rebuilt), options=options)
            return [reader.get_batch(i) for i in range(reader.num_record_batches)], ordered
        # A clean file: its batches follow its schema message, which the walk read.
        header_end = scan.batches[0].start if scan.batches else scan.good_end
        known = _KnownFile(checked_file(data, scan), (len(IPC_FILE_MAGIC), header_end), ordered)
        with _KNOWN_LOCK:
            if len(_KNOWN) >= _KNOWN_MAX:
                _KNOWN.clear()
            _KNOWN[identity] = known
    frames = known.checked.frames
    several = known.by_variable
    if keep is not None:
        kept = {frame.start for frame in frames if keep(frame)}
        several = several and len(kept) > 1
        keep = functools.partial(_kept, kept)  # each frame judged once
    if several:
        indexes = sorted({*indexes, *_SORT_KEYS})  # rows of several batches: sorted back
    fast = decode_sealed(data, RECORDS_SCHEMA, frames, indexes, keep)
    if fast is not None:
        return fast, known.by_variable
    # pyarrow's reader needs the file's dictionaries, which the first frame carries: all decoded.
    if known.by_variable:
        indexes = sorted({*indexes, *_SORT_KEYS})
    return decode_frames(pa.py_buffer(data), RECORDS_SCHEMA, frames, header=known.header,
                         combine=False, columns=indexes), known.by_variable


def _kept(starts: set[int], frame: BatchFrame) -> bool:
    return frame.start in starts


class _VerifiedRecords(ds.InMemoryDataset):  # type: ignore[misc]  # pyarrow is untyped
    """The records of a store as a dataset whose every scan reads verified batches only.

    A `pyarrow.dataset` object (DuckDB and polars push their column selection and filters into
    its `scanner`), but the scan is ours: for each device, its sealed files decoded in place
    (`_sealed_batches`), then its stream segments through the store's reader, only the columns
    the query reads or filters on, device by device, a part or two ahead on a decoding thread
    while the consumer (DuckDB, polars) works on what it was handed. The filter and the final
    projection run in pyarrow on those batches.
    Built as an empty in-memory dataset so that it is one to every caller; every read goes
    through `scanner`.
    """

    def __init__(self, store: Log, devices: list[str], skip: frozenset[Path],
                 progress: Callable[[int], None] | None,
                 unknown_version: UnknownVersion | None, micros: bool = False) -> None:
        self._view = RECORDS_VIEW_SCHEMA_US if micros else RECORDS_VIEW_SCHEMA
        super().__init__(self._view.empty_table())
        self._micros = micros
        self._store = store
        self._devices = devices
        self._skip = skip
        self._progress = progress
        self._unknown_version = unknown_version

    def scanner(self, columns: list[str] | dict[str, pc.Expression] | None = None,
                filter: pc.Expression | None = None,  # pyarrow's name
                **_: object) -> ds.Scanner:
        wanted = _decoded_fields(columns, filter)
        schema = pa.schema([self._view.field(name) for name in wanted],
                           metadata=RECORDS_VIEW_SCHEMA.metadata)
        return ds.Scanner.from_batches(self._batches(wanted, schema, filter), schema=schema,
                                       columns=columns, filter=filter)

    def _batches(self, wanted: list[str], schema: pa.Schema, filter: pc.Expression | None
                 ) -> Iterator[pa.RecordBatch]:
        """Each device's sealed files, oldest first, then its stream segments, decoded a part
        or two ahead on the pool, device after device; of a sealed file, only the batches
        whose verified bounds `filter` may select (store/_pushdown.py), its rows in record
        order."""
        indexes = [RECORDS_SCHEMA.get_field_index(n) for n in wanted if n != "device"]
        wanted_here = [n for n in wanted if n != "device"]
        keep = frame_filter(filter, ts_step_ns=1000 if self._micros else 1)
        # Times truncated to the microsecond before any filter sees them: a row is selected
        # (and a frame skipped) by the time the query is given.
        micros = self._micros and "ts" in wanted_here

        def to_view(batch: pa.RecordBatch) -> pa.RecordBatch:
            if not micros:
                return batch
            at = batch.schema.get_field_index("ts")
            return batch.set_column(at, "ts", batch.column(at).cast(_TS_US, safe=False))

        def finish(device: str, found: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
            out = []
            for batch in found:
                if batch.num_rows == 0:
                    continue
                columns = to_view(batch).columns
                if "device" in wanted:
                    columns = [_device_column(device, batch.num_rows), *columns]
                out.append(pa.RecordBatch.from_arrays(columns, schema=schema))
            return out

        def in_order(device: str, found: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
            """A file ordered by variable: its rows the filter selects, back in record order
            (seq and var were decoded for this; dropped unless asked for)."""
            found = [b for b in found if b.num_rows]
            if len(found) <= 1:  # a batch holds its rows in record order
                return finish(device, [b.select(wanted_here) for b in found])
            table = pa.Table.from_batches([to_view(b) for b in found])
            if "device" in wanted:
                table = table.add_column(0, "device", pa.chunked_array(
                    [_device_column(device, b.num_rows) for b in found], _DEVICE_TYPE))
            if filter is not None:
                table = table.filter(filter)
            table = in_record_order(table).select(wanted).combine_chunks()
            return [pa.RecordBatch.from_arrays(b.columns, schema=schema)
                    for b in table.to_batches()]

        after = dict(itertools.pairwise(self._devices))

        def listing(device: str) -> _Part:
            # The next device's files are asked for now: they are read while this one's decode
            # (not under the memo, which reads few).
            if device in after and not _memo.enabled():
                _prefetch(self._store.sealed_files(after[device]))
            segments = self._store.live_segments(device)
            live_files = [path for path, _ in segments]

            def live_key() -> tuple[object, ...] | None:
                return _memo_key(device, live_files, wanted, filter, self._micros,
                                 lengths=tuple(length for _, length in segments))

            memo_key = live_key()
            remembered = None if memo_key is None else _memo.get(memo_key)
            if isinstance(remembered, _Part):
                paths, live = self._store.sealed_files(device), remembered
            else:
                paths, batches = self._store.record_sources(device, indexes)
                live = _Part(finish(device, _coalesce(batches)))
                named = {report.path for report in self._store.reports}
                if memo_key is not None and not named & set(live_files) \
                        and memo_key == live_key():
                    live = remember(memo_key, live.batches)
            paths = [p for p in paths if p not in self._skip]
            files: list[Callable[[], _Part]] = [
                functools.partial(sealed, device, paths[i : i + _FILES_A_PART])
                for i in range(0, len(paths), _FILES_A_PART)]
            return _Part([], [*files, lambda: live], listed=True)

        def sealed(device: str, paths: list[Path]) -> _Part:
            """The part's files, their batches in record order merged into one where no sort
            is needed between them (the scanner's filter and DuckDB cost about as much per
            batch as a small file's decoding). Under the server's memo (`store/_memo.py`), the
            rows the filter selects of files read clean are kept, for the next scan asking for
            the same columns and filter of the same files."""
            memo_key = _memo_key(device, paths, wanted, filter, self._micros)
            if memo_key is not None:
                remembered = _memo.get(memo_key)
                if isinstance(remembered, _Part):
                    return remembered
            batches = read_sealed(device, paths)
            if memo_key is None \
                    or _memo_key(device, paths, wanted, filter, self._micros) != memo_key:
                return _Part(batches)
            files = cast(tuple[_memo.FileKey, ...], memo_key[1])
            with _KNOWN_LOCK:  # else damage was reported
                clean = all((key[0], key[1]) in _KNOWN for key in files)
            return remember(memo_key, batches) if clean else _Part(batches)

        def remember(memo_key: tuple[object, ...], batches: list[pa.RecordBatch]) -> _Part:
            """The rows of `batches` the filter selects, kept in the memo (in buffers of their
            own, so no file's whole bytes stay alive with them)."""
            if filter is not None and batches:
                batches = pa.Table.from_batches(batches, schema=schema).filter(filter) \
                    .combine_chunks().to_batches()
            part = _Part([_memo.owned(batch) for batch in batches])
            _memo.put(memo_key, part, sum(b.nbytes for b in part.batches) + 4096)
            return part

        def read_sealed(device: str, paths: list[Path]) -> list[pa.RecordBatch]:
            out: list[pa.RecordBatch] = []
            plain: list[pa.RecordBatch] = []  # in record order as they are: merged
            for path in paths:
                found, ordered = _sealed_batches(self._store, path, indexes,
                                                 self._unknown_version, keep)
                found = [b for b in found if b.num_rows]
                if ordered and len(found) > 1:
                    out += finish(device, _merged(plain))
                    plain = []
                    out += in_order(device, found)
                elif ordered:
                    plain += [b.select(wanted_here) if b.num_columns != len(wanted_here)
                              else b for b in found]
                else:
                    plain += found
            out += finish(device, _merged(plain))
            return out

        if self._devices:
            _prefetch(self._store.sealed_files(self._devices[0]))
        listings: deque[Callable[[], _Part]] = deque(
            functools.partial(listing, d) for d in self._devices)
        parts: deque[Callable[[], _Part]] = deque()  # of the devices listed, in order
        running: deque[Future[_Part]] = deque()
        # Bounded read-ahead: at most this many parts decoded and not yet consumed.
        ahead = 2 * _WORKERS
        # A device's small batches (a file's, after skipping) are handed on merged: the
        # scanner's filter and DuckDB cost about as much per batch as a file's decoding.
        merging = _Merger()
        # Under the server's memo most parts are a lookup: handing them to a thread and back
        # would cost more than doing them here.
        executor = _Inline() if _memo.enabled() else ThreadPoolExecutor(
            _WORKERS, thread_name_prefix="store-scan")
        with executor as pool:
            try:
                while listings or parts or running:
                    while (listings or parts) and len(running) < ahead:
                        running.append(pool.submit((parts or listings).popleft()))
                    part = running.popleft().result()
                    # A device's parts go after those of the devices listed before it (a
                    # listing may run ahead of the parts before it), before the next listing:
                    # the batches come device by device, each device's in record order.
                    parts.extend(part.then)
                    if part.listed:
                        yield from merging.flush()  # the dictionary of `device` changes
                        if self._progress is not None:
                            self._progress(1)
                    for batch in part.batches:
                        yield from merging.add(batch)
                yield from merging.flush()
            finally:
                for future in running:
                    future.cancel()


class _Inline(contextlib.AbstractContextManager["_Inline"]):
    """An executor that runs each task as it is submitted (its failure raised there)."""

    def submit(self, task: Callable[[], _Part]) -> Future[_Part]:
        done: Future[_Part] = Future()
        done.set_result(task())
        return done

    def __exit__(self, *exc: object) -> None:
        return None


class _Merger:
    """Consecutive small batches merged into one of `_COALESCE_ROWS` rows or so; large ones
    passed on as they are, in order."""

    def __init__(self) -> None:
        self._held: list[pa.RecordBatch] = []
        self._rows = 0

    def add(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        if batch.num_rows >= _SMALL_ROWS:
            yield from self.flush()
            yield batch
            return
        self._held.append(batch)
        self._rows += batch.num_rows
        if self._rows >= _COALESCE_ROWS:
            yield from self.flush()

    def flush(self) -> Iterator[pa.RecordBatch]:
        if len(self._held) > 1:
            yield pa.concat_batches(self._held)
        elif self._held:
            yield self._held[0]
        self._held, self._rows = [], 0


def _merged(batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
    """Batches of the same columns as one (dictionaries unified), in order."""
    if len(batches) <= 1:
        return batches
    try:
        return [pa.concat_batches(batches)]
    except pa.ArrowInvalid:  # schemas that differ in their metadata (pyarrow's decoding)
        return [pa.RecordBatch.from_arrays(
            [pa.concat_arrays([b.column(i) for b in batches])
             for i in range(batches[0].num_columns)], names=batches[0].schema.names)]


def _prefetch(paths: list[Path]) -> None:
    """Ask the kernel to read a device's sealed files ahead, all at once: from a cold page
    cache the scan's threads would otherwise wait for one small read after another. A few
    microseconds a file when they are cached already; a device ahead at most, so a scan of a
    large store never asks for more than two devices' files at a time."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # deleted by the quota since listed: the read says so
        with contextlib.suppress(OSError):  # advice only
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        os.close(fd)


def _memo_key(device: str, paths: list[Path], wanted: list[str], filter: pc.Expression | None,
              micros: bool, lengths: tuple[int, ...] = ()) -> tuple[object, ...] | None:
    """The key of a part's rows in the server's memo: its device (the rows carry its name) and
    its files as they are now, by identity (`stat`: a file changed, replaced or deleted since is
    another key; of stream segments, the committed `lengths` read too), never by the path that
    named them (the dump spelled otherwise, through a link or another relative path, is the same
    files), the columns and the filter; None when the memo is off or a file is gone."""
    if not _memo.enabled():
        return None
    try:
        files = tuple(_memo.file_key(path) for path in paths)
    except FileNotFoundError:
        return None
    return (device, files, lengths, tuple(wanted), None if filter is None else str(filter),
            micros)


@dataclass(frozen=True, slots=True)
class _Part:
    """What one task of a scan read: batches, and the tasks to run next (a device's listing)."""

    batches: list[pa.RecordBatch]
    then: list[Callable[[], _Part]] = field(default_factory=list)
    listed: bool = False


# Sealed files a scan task reads, in order: a task's hand-over (a future, a thread woken) cost
# about as much as a small file's decoding.
_FILES_A_PART: Final = 16
# Decoding threads. One: the walk and the building of arrays hold the GIL, and a second thread
# cost more in hand-overs than it gained from decompressing beside it (measured on 2 cores: a
# one-variable query 10 % slower, a full scan no faster); the one decodes while the consumer
# (DuckDB, the scanner's filter) runs, and the kernel reads the next device's files ahead.
_WORKERS: Final = 1


def _decoded_fields(columns: list[str] | dict[str, pc.Expression] | None,
                    filter: pc.Expression | None) -> list[str]:
    """The view's fields a scan must decode, in view order: those selected and those the filter
    names. pyarrow does not list an expression's fields; its text names each one by its bare
    name, so a name found there as a word is decoded (a string literal holding a column's name
    only costs that column's decoding)."""
    names = RECORDS_VIEW_SCHEMA.names
    if columns is None or isinstance(columns, dict):
        return list(names)
    wanted = set(columns)
    if filter is not None:
        text = str(filter)
        wanted.update(n for n in names if re.search(rf"\b{n}\b", text))
    unknown = wanted - set(names)
    if unknown:
        raise pa.ArrowInvalid(f"no field {sorted(unknown)[0]!r} in the records view")
    if not wanted - {"device"}:
        wanted.add("quality")  # rows still have to be counted: the narrowest column (1 byte)
    return [n for n in names if n in wanted]


_DEVICE_TYPE: Final = RECORDS_VIEW_SCHEMA.field("device").type


def _device_column(device: str, rows: int) -> pa.DictionaryArray:
    # All-zero indexes over one shared zero buffer: the device column costs no decoding.
    return pa.DictionaryArray.from_buffers(_DEVICE_TYPE, rows, [None, _zeros(4 * rows)],
                                           _dictionary(device))


@functools.lru_cache(maxsize=4096)
def _dictionary(device: str) -> pa.Array:
    return pa.array([device], pa.string())


_ZEROS = [pa.py_buffer(b"")]
_ZEROS_LOCK = threading.Lock()


def _zeros(size: int) -> pa.Buffer:
    with _ZEROS_LOCK:
        if _ZEROS[0].size < size:
            _ZEROS[0] = pa.py_buffer(bytes(max(size, 1 << 20)))
        return _ZEROS[0].slice(0, size)


def records_dataset(source: Path | str | Log, devices: Iterable[str] | None = None, *,
                    skip: Iterable[Path] = (), progress: Callable[[int], None] | None = None,
                    unknown_version: UnknownVersion | None = None,
                    micros: bool = False) -> ds.Dataset:
    """Every committed record of the chosen devices (default all), with a `device` column, as
    a lazy dataset (see the module's docstring). `skip`: sealed files a caller set aside;
    `progress(1)` as each device's segments are listed by a scan; `unknown_version(path,
    version)` for each sealed file a scan meets written with another schema version (not
    decoded; by default reported as foreign in `Log.reports`). `micros`: `ts` truncated to
    microseconds (`RECORDS_VIEW_SCHEMA_US`), which DuckDB filters in the scan and subtracts."""
    store = _as_log(source)
    return _VerifiedRecords(store, store.devices() if devices is None else list(devices),
                            frozenset(skip), progress, unknown_version, micros)


def records_table(source: Path | str | Log, devices: Iterable[str] | None = None,
                  columns: list[str] | None = None) -> pa.Table:
    """All committed records of the chosen devices (default all), with a `device` column
    (`columns`: only those, each decoded alone)."""
    table: pa.Table = records_dataset(source, devices).to_table(columns=columns)
    return table


def _coalesce(batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
    """Runs of small batches (a live segment's, one per commit) merged; large ones kept as-is."""
    merging = _Merger()
    out = [merged for batch in batches for merged in merging.add(batch)]
    out += merging.flush()
    return out


def journal_table(source: Path | str | Log) -> pa.Table:
    store = _as_log(source)
    return pa.Table.from_batches(store.journal_batches(), schema=JOURNAL_SCHEMA)


def duckdb_connection(source: Path | str | Log, devices: Iterable[str] | None = None
                      ) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with views `records` and `journal` over the store."""
    import duckdb

    store = _as_log(source)
    con = duckdb.connect(":memory:")
    con.register("records", records_dataset(store, devices))
    con.register("journal", journal_table(store))
    return con


def records_lazy(source: Path | str | Log, devices: Iterable[str] | None = None) -> pl.LazyFrame:
    """The records as a polars lazy frame; column selections and filters reach the scan."""
    import polars as pl

    return pl.scan_pyarrow_dataset(records_dataset(source, devices))


def journal_lazy(source: Path | str | Log) -> pl.LazyFrame:
    import polars as pl

    frame = pl.from_arrow(journal_table(source))
    assert isinstance(frame, pl.DataFrame)
    return frame.lazy()
