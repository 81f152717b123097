"""Properties of the batch framing: round trips, and arbitrary bytes never crash the walker."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import RECORDS_SCHEMA
from store._ipc import FrameError, frame_batch, read_batch, read_message, schema_message
from store._segment import decode_frames, scan_stream

values = st.one_of(st.none(), st.floats(allow_nan=False))
texts = st.one_of(st.none(), st.text(max_size=20))


@st.composite
def batches(draw: st.DrawFn) -> pa.RecordBatch:
    n = draw(st.integers(1, 20))
    ts = draw(st.integers(0, 2**62))
    seq = draw(st.integers(1, 2**40))
    defs = draw(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=3))
    return pa.RecordBatch.from_arrays([
        pa.array([ts] * n, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        pa.array([seq] * n, pa.uint64()),
        pa.array(draw(st.lists(st.integers(-2**31, 2**31 - 1), min_size=n, max_size=n)),
                 pa.int32()),
        pa.array(draw(st.lists(values, min_size=n, max_size=n)), pa.float64()),
        pa.array(draw(st.lists(values, min_size=n, max_size=n)), pa.float64()),
        pa.array(draw(st.lists(values, min_size=n, max_size=n)), pa.float64()),
        pa.array(draw(st.lists(texts, min_size=n, max_size=n)), pa.string()),
        pa.array(draw(st.lists(st.integers(0, 7), min_size=n, max_size=n)), pa.uint8()),
        pa.array([defs[i % len(defs)] for i in range(n)], pa.string()).dictionary_encode(),
    ], schema=RECORDS_SCHEMA)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(batches(), min_size=1, max_size=4))
def test_framed_batches_read_back_identical(items: list[pa.RecordBatch]) -> None:
    data = bytearray(schema_message(RECORDS_SCHEMA))
    for batch in items:
        seq = batch.column(1)[0].as_py()
        ts = batch.column(0).cast(pa.int64())[0].as_py()
        data += frame_batch(RECORDS_SCHEMA, batch, seq_first=seq, seq_last=seq, ts_min=ts,
                            ts_max=ts)
    scan = scan_stream(bytes(data), RECORDS_SCHEMA)
    assert scan.torn is None and scan.damage == [] and len(scan.batches) == len(items)
    got = pa.Table.from_batches(decode_frames(memoryview(bytes(data)), RECORDS_SCHEMA,
                                              scan.batches))
    want = pa.Table.from_batches(items)
    assert _plain(got) == _plain(want)
    # A plain Arrow reader opens the same bytes.
    assert _plain(pa.ipc.open_stream(bytes(data)).read_all()) == _plain(want)


def _plain(table: pa.Table) -> list[dict[str, object]]:
    """Rows as Python values: time as int ns, dictionary strings decoded."""
    table = table.set_column(0, "ts", table.column("ts").cast(pa.int64()))
    table = table.set_column(8, "def", table.column("def").cast(pa.string()))
    rows: list[dict[str, object]] = table.to_pylist()
    return rows


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048), st.integers(0, 64))
def test_arbitrary_bytes_give_frame_errors_only(noise: bytes, at: int) -> None:
    data = b"\xff\xff\xff\xff" + noise
    for pos in (0, min(at, len(data))):
        try:
            read_message(memoryview(data), pos)
            read_batch(memoryview(data), pos)
        except FrameError:
            pass  # the only acceptable failure


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_scan_of_arbitrary_tail_never_raises(noise: bytes) -> None:
    scan = scan_stream(schema_message(RECORDS_SCHEMA) + noise, RECORDS_SCHEMA)
    assert scan.header_ok
    assert scan.batches == [] or all(b.rows >= 0 for b in scan.batches)
