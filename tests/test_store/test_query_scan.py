"""The lazy records view (`store.query.records_dataset`): what a scan returns, whatever columns and
filters DuckDB, polars or pyarrow push into it, equals the store's own reader; a file walked clean
by one `Log` is verified again, every byte, by the next one.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from records_util import T0, records

from store import Log, ReportKind, StoreOptions
from store._segment import scan_ipc_file, write_ipc_file
from store.query import duckdb_connection, records_dataset, records_lazy
from store.schema import RECORDS_SCHEMA

DEVICES = ("1", "2", "10")
VARS = 5
PER_DAY = 6  # records a day per device, over three days: sealed files and an open segment
DAY_NS = 86_400 * 10**9


async def _store(root: Path) -> None:
    async with await Log.open(root, StoreOptions(flush_s=60)) as log:
        for day in range(3):
            for k, device in enumerate(DEVICES):
                stamps = [T0 + day * DAY_NS + r * 3600 * 10**9 for r in range(PER_DAY)]
                await log.append_records(device, records(stamps, VARS, 100.0 * k + day),
                                         commit_now=True)
        await log.commit()
    assert len(list(root.glob("devices/*/*.arrow"))) == 2 * len(DEVICES)


def _truth(log: Log) -> pa.Table:
    """Every record through the store's reader, with its device (the reference)."""
    parts = []
    for device in log.devices():
        table = log.records(device)
        parts.append(table.add_column(0, "device", pa.array([device] * table.num_rows)))
    return pa.concat_tables(parts)


async def test_every_projection_and_filter_returns_what_the_store_reader_returns(
        tmp_path: Path) -> None:
    await _store(tmp_path)
    log = Log.open_read_only(tmp_path)
    truth = _truth(log)
    assert truth.num_rows == len(DEVICES) * 3 * PER_DAY * VARS
    con = duckdb_connection(log)
    cases = [
        ("SELECT count(*) FROM records", [(truth.num_rows,)]),
        ("SELECT count(*) FROM records WHERE device = '10'", [(truth.num_rows // 3,)]),
        ("SELECT device, count(*) FROM records GROUP BY ALL ORDER BY ALL",
         [(d, truth.num_rows // 3) for d in sorted(DEVICES)]),
    ]
    for sql, want in cases:
        assert con.sql(sql).fetchall() == want, sql
    # A filter on columns the query does not select: they are decoded for the filter only.
    got = sorted(con.sql("SELECT seq FROM records WHERE value > 150 AND var = 2 "
                         "AND device <> '1'").fetchall())
    mask = pc.and_(pc.and_(pc.greater(truth["value"], 150), pc.equal(truth["var"], 2)),
                   pc.not_equal(truth["device"], "1"))
    want_seqs = sorted((s,) for s in truth.filter(mask)["seq"].to_pylist())
    assert got == want_seqs and got
    everything = con.sql("SELECT device, ts, seq, var, value, quality, def::VARCHAR "
                         "FROM records ORDER BY device, seq, var").fetchall()
    reference = sorted(zip(truth["device"].to_pylist(), truth["ts"].to_pylist(),
                           truth["seq"].to_pylist(), truth["var"].to_pylist(),
                           truth["value"].to_pylist(), truth["quality"].to_pylist(),
                           truth["def"].cast(pa.string()).to_pylist(), strict=True),
                       key=lambda r: (r[0], r[2], r[3]))
    assert everything == reference
    con.close()
    # pyarrow and polars ask through the same scanner.
    dataset = records_dataset(log)
    table = dataset.to_table(columns=["seq"], filter=ds.field("device") == "2")
    assert table.column_names == ["seq"] and table.num_rows == truth.num_rows // 3
    assert dataset.count_rows() == truth.num_rows
    frame = records_lazy(log).filter(pl.col("var") == 2).select("device", "seq").collect()
    assert frame.height == truth.num_rows // VARS
    assert sorted(frame["seq"].to_list()) == sorted(
        truth.filter(pc.equal(truth["var"], 2))["seq"].to_pylist())
    with pytest.raises(pa.ArrowInvalid, match="no field"):
        dataset.to_table(columns=["nope"])


async def test_a_file_walked_clean_by_one_log_is_verified_again_by_the_next(
        tmp_path: Path) -> None:
    await _store(tmp_path)
    first = Log.open_read_only(tmp_path)
    rows = records_dataset(first).count_rows()
    victim = sorted((tmp_path / "devices" / "2").glob("*.arrow"), key=lambda p: int(p.stem))[0]
    scan, _ = scan_ipc_file(victim.read_bytes(), RECORDS_SCHEMA)
    lost = pa.ipc.open_file(pa.memory_map(str(victim))).read_all().num_rows
    blob = bytearray(victim.read_bytes())
    blob[scan.batches[0].end - 9] ^= 0x04  # inside the batch's body, its size unchanged
    victim.write_bytes(bytes(blob))
    second = Log.open_read_only(tmp_path)
    assert records_dataset(second).count_rows() == rows - lost
    assert any(r.path == victim for r in second.reports)
    con = duckdb_connection(second)
    assert con.sql("SELECT count(*) FROM records WHERE device = '2'").fetchall() == [
        (rows // 3 - lost,)]


async def test_a_file_walked_clean_is_not_walked_again_under_another_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from store import query

    store = tmp_path / "store"
    await _store(store)
    rows = records_dataset(Log.open_read_only(store)).count_rows()
    walked: list[int] = []
    walk = query.scan_ipc_file

    def counted(data: bytes, schema: pa.Schema) -> object:
        walked.append(len(data))
        return walk(data, schema)

    monkeypatch.setattr(query, "scan_ipc_file", counted)
    (tmp_path / "link").symlink_to(store)
    # The same files through a link: re-checked (every frame's CRC), not parsed again.
    assert records_dataset(Log.open_read_only(tmp_path / "link")).count_rows() == rows
    assert walked == []


async def test_a_sealed_file_of_another_schema_version_is_not_decoded_and_is_reported(
        tmp_path: Path) -> None:
    # Written the store's way (every batch verifies), same fields, but a schema version this
    # reader does not know: what it would decode is not what was meant.
    await _store(tmp_path)
    path = sorted((tmp_path / "devices" / "2").glob("*.arrow"))[0]
    reader = pa.ipc.open_file(pa.py_buffer(path.read_bytes()))
    meta = {**(reader.schema.metadata or {}), b"sunpm.schema_version": b"2"}
    table = reader.read_all()
    path.unlink()
    write_ipc_file(path, table, RECORDS_SCHEMA.with_metadata(meta), compress=True)
    log = Log.open_read_only(tmp_path)
    full = len(DEVICES) * 3 * PER_DAY * VARS
    assert records_dataset(log).to_table(columns=["seq"]).num_rows == full - table.num_rows
    assert [(r.kind, r.path) for r in log.reports] == [(ReportKind.SCHEMA, path)]
    assert "unknown schema version '2'" in str(log.reports[0])
    met: list[tuple[Path, str]] = []
    again = Log.open_read_only(tmp_path)
    scanned = records_dataset(again, unknown_version=lambda p, v: met.append((p, v)))
    assert scanned.to_table(columns=["seq"]).num_rows == full - table.num_rows
    assert met == [(path, "2")] and again.reports == []
