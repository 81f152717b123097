"""Sealed records files in ranges of variables (`write_ipc_file(by_variable=True)`): a scan's
filter skips the batches whose verified bounds it cannot select, and returns exactly the rows,
in the same order, that the filter picks from a full read; every reader gets the records back
as appended, whichever layout (and old files, in record order, still read)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from records_util import DEF, T0

import store._decode as decode
import store._segment as segment
import store.query as query
from store import Log, ReportKind
from store._ipc import BatchFrame
from store._pushdown import frame_filter
from store._segment import ORDER_KEY, scan_ipc_file, write_ipc_file
from store.query import forget_walks, records_dataset, records_table
from store.schema import RECORDS_SCHEMA

PERIOD_NS = 600 * 10**9


OTHER_DEF = "1" * 64 + ":meter.csv"


def _day(first_seq: int, records: list[list[int]], value_base: float = 0.0,
         definition: str = DEF) -> pa.Table:
    """A device's records: one list of variables a record (rows in that order)."""
    ts, seq, var, value = [], [], [], []
    for k, variables in enumerate(records):
        for v in variables:
            ts.append(T0 + (first_seq + k) * PERIOD_NS)
            seq.append(first_seq + k)
            var.append(v)
            value.append(value_base + 1000 * k + v)
    n = len(ts)
    return pa.table([
        pa.array(ts, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        pa.array(seq, pa.uint64()),
        pa.array(var, pa.int32()),
        pa.array([None if i % 11 == 3 else x for i, x in enumerate(value)], pa.float64()),
        pa.nulls(n, pa.float64()),
        pa.nulls(n, pa.float64()),
        pa.array([f"t{i}" if i % 5 == 0 else None for i in range(n)], pa.string()),
        pa.array([i % 3 for i in range(n)], pa.uint8()),
        pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), pa.array([definition])),
    ], schema=RECORDS_SCHEMA)


def _write_store(root: Path, devices: dict[str, list[tuple[pa.Table, bool]]]) -> None:
    """A store of sealed files only, each written in the layout given (True: by variable)."""
    for device, days in devices.items():
        folder = root / "devices" / device
        folder.mkdir(parents=True)
        for table, by_variable in days:
            seq0 = table.column("seq")[0].as_py()
            write_ipc_file(folder / f"{seq0}.arrow", table, RECORDS_SCHEMA, compress=True,
                           by_variable=by_variable)
    (root / "journal").mkdir()


@pytest.fixture
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranges of 3 variables and 10 rows, so small files hold several."""
    monkeypatch.setattr(segment, "RANGE_VARIABLES", 3)
    monkeypatch.setattr(segment, "RANGE_ROWS", 10)


# -- the layout ------------------------------------------------------------------------------

def test_a_day_is_written_in_ranges_and_read_back_as_appended(tmp_path: Path,
                                                              small_ranges: None) -> None:
    table = _day(1, [list(range(1, 11))] * 8)
    path = tmp_path / "1.arrow"
    write_ipc_file(path, table, RECORDS_SCHEMA, compress=True, by_variable=True)
    scan, meta = scan_ipc_file(path.read_bytes(), RECORDS_SCHEMA)
    assert meta[ORDER_KEY] == b"var-ranges" and not scan.damage
    assert [(f.var_min, f.var_max, f.rows) for f in scan.batches] == [
        (1, 3, 24), (4, 6, 24), (7, 9, 24), (10, 10, 8)]
    assert all((f.seq_first, f.seq_last) == (1, 8) for f in scan.batches)
    batches, _, _ = segment.read_ipc_file(path, RECORDS_SCHEMA)
    assert pa.Table.from_batches(batches).equals(table.combine_chunks())
    some, _, _ = segment.read_ipc_file(path, RECORDS_SCHEMA, [0, 3])
    assert pa.Table.from_batches(some).equals(table.select(["ts", "value"]).combine_chunks())


def test_rows_not_in_record_and_variable_order_are_kept_as_they_are(tmp_path: Path,
                                                                    small_ranges: None) -> None:
    table = _day(1, [[5, 2, 9, 1]] * 6)
    path = tmp_path / "1.arrow"
    write_ipc_file(path, table, RECORDS_SCHEMA, compress=True, by_variable=True)
    scan, meta = scan_ipc_file(path.read_bytes(), RECORDS_SCHEMA)
    assert ORDER_KEY not in meta and all(f.var_min is None for f in scan.batches)
    batches, _, _ = segment.read_ipc_file(path, RECORDS_SCHEMA)
    assert pa.Table.from_batches(batches).equals(table.combine_chunks())


# -- pushdown --------------------------------------------------------------------------------

def _frame(var: tuple[int, int] | None, ts: tuple[int, int] = (100, 200),
           seq: tuple[int, int] = (10, 20)) -> BatchFrame:
    return BatchFrame(0, 0, 1, seq[0], seq[1], ts[0], ts[1], 0, 0,
                      *(var if var is not None else (None, None)))


def test_the_filter_is_read_from_its_structure() -> None:
    var, ts, seq, value = pc.field("var"), pc.field("ts"), pc.field("seq"), pc.field("value")
    stamp = pa.scalar(150, pa.timestamp("ns", tz="UTC"))
    cases: list[tuple[pc.Expression, list[bool]]] = [
        # frames: var 1-3, var 4-6, var unknown (an old file), var 4-6 later in time
        (var == 2, [True, False, True, False]),
        (pa.scalar(5) == var, [False, True, True, True]),
        (var.isin([3, 9]), [True, False, True, False]),
        # DuckDB's IN: if_else(is_valid(var), is_in(var, ...), null)
        (pc.if_else(pc.is_valid(var), var.isin([5]), pa.scalar(None, pa.bool_())),
         [False, True, True, True]),
        ((var >= 4) & (var <= 4), [False, True, True, True]),
        ((var == 1) | (var == 6), [True, True, True, True]),
        ((var == 1) | (value > 3), [True, True, True, True]),
        ((var == 1) & (value > 3), [True, False, True, False]),
        (var != 5, [True, True, True, True]),
        (ts > stamp, [True, True, True, True]),
        (ts >= pa.scalar(300, pa.timestamp("ns", tz="UTC")), [False, False, False, True]),
        ((seq < 15) & (var > 3), [False, True, True, False]),
        (~(var == 2), [True, True, True, True]),  # not read: may be true
        (var == pa.scalar(None, pa.int32()), [False, False, True, False]),
        (var == 3.5, [False, False, True, False]),
        (var == 4.5, [False, True, True, True]),
    ]
    frames = [_frame((1, 3)), _frame((4, 6)), _frame(None),
              _frame((4, 6), ts=(300, 400), seq=(30, 40))]
    for expression, expected in cases:
        keep = frame_filter(expression)
        assert keep is not None, expression
        assert [keep(f) for f in frames] == expected, expression
    assert frame_filter(None) is None
    assert frame_filter(value > 3) is None  # no bound can tell frames apart
    assert frame_filter(pc.field("text") == "a") is None


_COMPARE = {"==": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
            ">": pc.greater, ">=": pc.greater_equal}


@given(low=st.integers(0, 5_000), width=st.integers(0, 3_000), literal_us=st.integers(0, 9),
       op=st.sampled_from(sorted(_COMPARE)))
def test_a_frame_is_skipped_only_when_no_time_truncated_to_the_microsecond_matches(
        low: int, width: int, literal_us: int, op: str) -> None:
    # A scan in microseconds (`records_dataset(micros=True)`) truncates each time before the
    # filter sees it: a frame whose nanosecond bounds lie within the literal's microsecond may
    # hold a row equal to it (`<=`, `==` of bounds in ns alone would skip it).
    frame = _frame(None, ts=(low, low + width))
    literal = pa.scalar(literal_us, pa.timestamp("us", tz="UTC"))
    keep = frame_filter(_COMPARE[op](pc.field("ts"), literal), ts_step_ns=1000)
    assert keep is not None
    matches = any(_COMPARE[op](pa.scalar(t // 1000), literal_us).as_py()
                  for t in range(low, low + width + 1))
    if matches:
        assert keep(frame), (frame, op, literal_us)


# -- what a scan returns ---------------------------------------------------------------------

_variables = st.lists(st.integers(1, 12), min_size=1, max_size=8, unique=True)
# Mostly records in variable order (laid out in ranges); some days not (kept in record order).
_records = st.one_of(st.lists(_variables.map(sorted), min_size=1, max_size=12),
                     st.lists(_variables, min_size=1, max_size=12))
# Days in either layout, some under another definition (a file's dictionary of its own).
_device = st.lists(st.tuples(_records, st.booleans(), st.sampled_from([DEF, OTHER_DEF])),
                   min_size=1, max_size=5)


def _predicate() -> st.SearchStrategy[pc.Expression]:
    var, ts, seq, value = pc.field("var"), pc.field("ts"), pc.field("seq"), pc.field("value")
    stamp = st.integers(-2, 40).map(
        lambda k: pa.scalar(T0 + k * PERIOD_NS, pa.timestamp("ns", tz="UTC")))
    leaf = st.one_of(
        st.integers(0, 13).map(lambda v: var == v),
        st.integers(0, 13).map(lambda v: var != v),
        st.integers(0, 13).map(lambda v: var < v),
        st.integers(0, 13).map(lambda v: var >= v),
        st.lists(st.integers(0, 13), max_size=4).map(lambda vs: var.isin(vs)),
        st.lists(st.integers(0, 13), min_size=1, max_size=3).map(
            lambda vs: pc.if_else(pc.is_valid(var), var.isin(vs), pa.scalar(None, pa.bool_()))),
        stamp.map(lambda s: ts >= s),
        stamp.map(lambda s: ts < s),
        st.integers(0, 40).map(lambda s: seq > s),
        st.integers(0, 3000).map(lambda x: value > x),
        st.integers(0, 2).map(lambda q: pc.field("quality") == q),
        st.sampled_from(["a", "b"]).map(lambda d: pc.field("device") == d),
    )
    return st.recursive(leaf, lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda p: p[0] & p[1]),
        st.tuples(inner, inner).map(lambda p: p[0] | p[1]),
        inner.map(lambda p: ~p),
    ), max_leaves=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(devices=st.fixed_dictionaries({"a": _device, "b": _device}),
       predicates=st.lists(_predicate(), min_size=1, max_size=4),
       columns=st.sets(st.sampled_from(RECORDS_SCHEMA.names), min_size=1))
def test_a_filtered_scan_is_the_filtered_full_read(
        devices: dict[str, list[tuple[list[list[int]], bool, str]]],
        predicates: list[pc.Expression], columns: set[str]) -> None:
    """Over random days (several ranges a file; files in either layout, the old one included;
    definitions changing between days), random predicates and projections, a scan's files
    decoded two a task (each task's batches merged where no sort is needed between them): the
    scan returns what the filter picks from a full read (which skips nothing), same rows, same
    order."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(segment, "RANGE_VARIABLES", 2)
        patch.setattr(segment, "RANGE_ROWS", 5)
        patch.setattr(query, "_FILES_A_PART", 2)
        _check_filtered_scans(devices, predicates, columns)


def _check_filtered_scans(devices: dict[str, list[tuple[list[list[int]], bool, str]]],
                          predicates: list[pc.Expression], columns: set[str]) -> None:
    tables: dict[str, list[tuple[pa.Table, bool]]] = {}
    for name, days in devices.items():
        seq = 1
        tables[name] = []
        for records, by_variable, definition in days:
            tables[name].append((_day(seq, records, value_base=seq * 7.0,
                                      definition=definition), by_variable))
            seq += len(records)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        _write_store(root, tables)
        forget_walks()
        log = Log.open_read_only(root)
        appended = []
        for name in log.devices():
            days_appended = pa.concat_tables([t for t, _ in tables[name]])
            # Layout-independent record order.
            assert _plain(log.records(name)).equals(_plain(days_appended))
            appended.append(days_appended.add_column(
                0, "device", pa.array([name] * days_appended.num_rows, pa.string())))
        full = _plain(records_table(log))
        # The scan's full read is the records as appended, device by device.
        assert full.equals(_plain(pa.concat_tables(appended)))
        wanted = ["device", *(n for n in RECORDS_SCHEMA.names if n in columns)]
        for predicate in predicates:
            expected = full.filter(predicate).select(wanted)
            scanned = _plain(records_dataset(log).to_table(columns=wanted, filter=predicate))
            assert scanned.equals(expected), predicate
        assert log.reports == []


def _plain(table: pa.Table) -> pa.Table:
    """The device and definition as text (a scan's dictionary holds one device a batch, a
    file's one definition or two), in one chunk."""
    return pa.table({
        name: column.cast(kind.value_type) if pa.types.is_dictionary(kind) else column
        for name, column, kind in zip(table.column_names, table.columns, table.schema.types,
                                      strict=True)}).combine_chunks()


async def test_duckdb_decodes_only_the_batches_a_variable_can_be_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = [list(range(1, 101))] * 144  # 100 variables at 600 s: a day
    days = [_day(1, records), _day(145, records)]
    _write_store(tmp_path, {"1": [(day, True) for day in days]})
    appended = pa.concat_tables(days)
    decoded: list[int] = []
    plain = decode._Batch.__init__

    def counted(self: decode._Batch, header: object, body: memoryview) -> None:
        plain(self, header, body)  # type: ignore[arg-type]
        decoded.append(self.rows)

    monkeypatch.setattr(decode._Batch, "__init__", counted)
    con = duckdb.connect()
    con.register("records", records_dataset(tmp_path))
    energy = "SELECT seq, value FROM records WHERE var = {} ORDER BY seq"
    wanted = appended.filter(pc.field("var") == 1)
    assert con.sql(energy.format(1)).fetchall() == list(zip(
        wanted.column("seq").to_pylist(), wanted.column("value").to_pylist(), strict=True))
    frames = scan_ipc_file(next(tmp_path.glob("devices/1/*.arrow")).read_bytes(),
                           RECORDS_SCHEMA)[0].batches
    ranges = len(frames)
    assert ranges >= 4 and frames[0].var_min == 1
    # Of each of the 2 files, only the batch of variables 1 to ~30 was decoded.
    assert decoded == [frames[0].rows] * 2 and frames[0].rows < 14_400 // 3
    decoded.clear()
    assert con.sql("SELECT count(*) FROM records WHERE var IN (1, 100)").fetchall() == [(576,)]
    assert len(decoded) == 4
    decoded.clear()
    assert con.sql("SELECT count(*) FROM records WHERE quality < 9").fetchall() == [(28_800,)]
    assert len(decoded) == 2 * ranges and sum(decoded) == 28_800


async def test_a_damaged_range_is_skipped_and_reported_and_the_rest_in_order(
        tmp_path: Path, small_ranges: None) -> None:
    table = _day(1, [list(range(1, 11))] * 8)
    _write_store(tmp_path, {"1": [(table, True)]})
    victim = next(tmp_path.glob("devices/1/*.arrow"))
    scan, _ = scan_ipc_file(victim.read_bytes(), RECORDS_SCHEMA)
    middle = scan.batches[1]  # variables 4 to 6
    blob = bytearray(victim.read_bytes())
    blob[middle.end - 9] ^= 0x04
    victim.write_bytes(bytes(blob))
    forget_walks()
    log = Log.open_read_only(tmp_path)
    kept = table.filter(pc.invert(pc.field("var").isin([4, 5, 6])))
    assert records_dataset(log).to_table().drop_columns(["device"]).equals(
        kept.combine_chunks())
    assert records_dataset(log).to_table(
        filter=pc.field("var") == 5).num_rows == 0
    assert [(r.kind, r.path) for r in log.reports] == [(ReportKind.DAMAGE, victim)]
    assert log.records("1").equals(kept.combine_chunks())
