"""A month of a plant: re-export equals what was delivered, ingest equals export-parquet.

The plant is written through the real store, delivered to a `dir` server by the real session and
outbox, and its store copied as a card dump (tests/test_sdcard/plant.py). Every command leaves the
dump (and the server tree) byte for byte as it was.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from plant import NS, Plant, hashes, sunpm, tree_files

from sdcard.dump import open_dump
from sdcard.reexport import reexport
from store.delivery import DeliveryState

COLUMNS = "device::VARCHAR AS device, time, var, name, unit, raw, scaled, min, max, text, " \
          "definition, def"


def iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns // NS, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_reexport_of_the_whole_month_is_the_delivered_tree(month: Plant, tmp_path: Path) -> None:
    before = hashes(month.dump)
    delivered = tree_files(month.server)
    assert len(delivered) > 80  # 31 days of DATA, ALARM and LOG files
    ran = sunpm("sd", "reexport", month.dump, "--server", "1", "--from", iso(month.start_s * NS),
                "--to", iso((month.end_s - 1200) * NS), "--out", tmp_path / "out")
    assert ran.code == 0, ran.err
    assert tree_files(tmp_path / "out") == delivered
    assert ran.out.endswith("; 0 of the files not delivered to server 1 yet)\n"), ran.out
    # Past the last session: the files its sessions would deliver next, and only those (a
    # window with nothing to send is not counted).
    later = sunpm("sd", "reexport", month.dump, "--server", "1", "--from",
                  iso(month.start_s * NS), "--to", iso((month.end_s + 86_400) * NS), "--out",
                  tmp_path / "later")
    new = set(tree_files(tmp_path / "later")) - set(delivered)
    assert len(new) == 2, new  # the day's last records, and today's: two DATA files
    assert later.out.endswith("; 2 of the files not delivered to server 1 yet)\n"), later.out
    assert hashes(month.dump) == before


def test_reexport_of_each_delivered_window_alone_gives_its_files(month: Plant,
                                                                  tmp_path: Path) -> None:
    before = hashes(month.dump)
    delivered = tree_files(month.server)
    dump = open_dump(month.dump)
    state = DeliveryState.from_table(dump.log.journal(kinds=["window", "delivered"]))
    windows = {(w.spec.start_ns, w.spec.end_ns)
               for sd in state.streams.values() for w in sd.windows if sd.is_delivered(w)}
    assert len(windows) >= 31
    rebuilt: dict[str, bytes] = {}
    for k, (start, end) in enumerate(sorted(windows)):
        out = tmp_path / str(k)
        reexport(dump, server=1, start_ns=start, end_ns=end, out=out)
        for name, data in tree_files(out).items():
            assert delivered[name] == data, name
            rebuilt[name] = data
    assert rebuilt == delivered
    assert hashes(month.dump) == before


def _server_tree_with_config(month: Plant, root: Path) -> Path:
    """The information system's copy of the server tree: what the unit uploaded, plus the
    configuration and definition files it synchronises (CONFIG/, DEF/)."""
    tree = root / "tree"
    shutil.copytree(month.server, tree)
    shutil.copytree(month.config / "CONFIG", tree / "CONFIG", dirs_exist_ok=True)
    shutil.copytree(month.config / "DEF", tree / "DEF", dirs_exist_ok=True)
    return tree


def test_ingest_of_the_delivered_files_equals_export_parquet_of_the_dump(
        month: Plant, tmp_path: Path) -> None:
    tree = _server_tree_with_config(month, tmp_path)
    dump_before, tree_before = hashes(month.dump), hashes(tree)
    exported, ingested = tmp_path / "exported", tmp_path / "ingested"
    ran = sunpm("sd", "export-parquet", month.dump, exported)
    assert ran.code == 0, ran.err
    ran = sunpm("ingest", tree, ingested)
    assert ran.code == 0, ran.err
    assert "0 already ingested" in ran.out

    # What was delivered: records before the last window's end.
    last_end = (month.end_s - 1200) * NS
    query = f"SELECT {COLUMNS} FROM read_parquet('{{}}/uid=*/device=*/date=*/*.parquet', " \
            "hive_partitioning = true) WHERE uid = 'WPMSD0001' {} ORDER BY ALL"
    from_dump = duckdb.sql(query.format(exported, f"AND epoch_ns(time) < {last_end}")).fetchall()
    from_files = duckdb.sql(query.format(ingested, "")).fetchall()
    # 144 records a day; the last window ends at 23:40 of day 31 (23:40, 23:50, 00:00 after).
    assert len(from_dump) == (31 * 144 - 3) * 2 * 4
    assert from_files == from_dump
    # Scaled values and names came from the definition: V_L1 is raw x 0.1 in volts.
    volts = [r for r in from_dump if r[3] == "V_L1"]
    assert volts and all(r[4] == "V" and abs(r[6] - r[5] * 0.1) < 1e-9 for r in volts)

    alarms = "SELECT * EXCLUDE (uid) FROM read_parquet('{}/_alarms/*/*/*.parquet', " \
             "hive_partitioning = true) ORDER BY ALL"
    assert duckdb.sql(alarms.format(ingested)).fetchall() \
        == duckdb.sql(alarms.format(exported)).fetchall()

    # pyarrow.dataset reads both as Hive datasets (device as text: `IO`, `TIC1` are devices).
    partitioning = ds.partitioning(pa.schema([("uid", pa.string()), ("device", pa.string()),
                                              ("date", pa.string())]), flavor="hive")
    for root in (exported, ingested):
        table = ds.dataset(root, format="parquet", partitioning=partitioning).to_table(
            filter=ds.field("date") == "2021-02-10")
        assert set(table.column("device").to_pylist()) == {"1", "2"}
        assert table.num_rows == 144 * 2 * 4
    assert hashes(month.dump) == dump_before
    assert hashes(tree) == tree_before


def test_export_parquet_again_rewrites_the_same_files_and_many_dumps_share_one_dataset(
        month: Plant, tmp_path: Path) -> None:
    out = tmp_path / "fleet"
    assert sunpm("sd", "export-parquet", month.dump, out).code == 0
    first = hashes(out)
    ran = sunpm("sd", "export-parquet", month.dump, out)
    assert ran.code == 0, ran.err
    assert {k: v.split()[0] for k, v in hashes(out).items()} \
        == {k: v.split()[0] for k, v in first.items()}
    # A second unit's dump lands beside the first.
    assert sunpm("sd", "export-parquet", month.dump, out, "--uid", "WPMSD0002").code == 0
    counts = dict(duckdb.sql(
        f"SELECT uid, count(*) FROM read_parquet('{out}/uid=*/device=*/date=*/*.parquet', "
        "hive_partitioning = true) GROUP BY uid").fetchall())
    assert counts["WPMSD0001"] == counts["WPMSD0002"] > 31 * 143 * 2 * 4


def test_a_dump_and_its_delivered_files_merge_into_one_dataset_in_either_order(
        month: Plant, tmp_path: Path) -> None:
    # The files carry no store seq or quality: ingested after the dump's export, their rows
    # replaced the dump's with both null (35,688 of 35,744 rows lost their quality).
    tree = _server_tree_with_config(month, tmp_path)
    first, second = tmp_path / "dump_first", tmp_path / "files_first"
    assert sunpm("sd", "export-parquet", month.dump, first).code == 0
    assert sunpm("ingest", tree, first).code == 0
    assert sunpm("ingest", tree, second).code == 0
    assert sunpm("sd", "export-parquet", month.dump, second).code == 0
    query = "SELECT * EXCLUDE (device), device::VARCHAR FROM read_parquet(" \
            "'{}/uid=*/device=*/date=*/*.parquet', hive_partitioning = true) ORDER BY ALL"
    rows = duckdb.sql(query.format(first)).fetchall()
    assert rows == duckdb.sql(query.format(second)).fetchall()
    assert duckdb.sql(f"SELECT count(*), count(seq), count(quality) FROM read_parquet("
                      f"'{first}/uid=*/device=*/date=*/*.parquet')").fetchall() \
        == [(len(rows), len(rows), len(rows))]


def test_ingest_skips_files_already_ingested(month: Plant, tmp_path: Path) -> None:
    tree = _server_tree_with_config(month, tmp_path)
    out = tmp_path / "out"
    assert sunpm("ingest", tree, out).code == 0
    first = {k: v.split()[0] for k, v in hashes(out).items()}
    ran = sunpm("ingest", tree, out)
    assert ran.code == 0
    assert ran.out.startswith("0 files ingested")
    assert {k: v.split()[0] for k, v in hashes(out).items()} == first


def test_sql_joins_names_units_and_scaled_values(month: Plant) -> None:
    before = hashes(month.dump)
    ran = sunpm("sd", "sql", month.dump,
                "SELECT device, date_trunc('day', time) AS day, max(scaled) - min(scaled) AS kwh "
                "FROM records WHERE name = 'E_import' GROUP BY ALL ORDER BY ALL", "--format", "csv")
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[0] == "device,day,kwh"
    assert len(lines) == 1 + 2 * 32  # two devices, 31 days and the midnight record of day 32
    # Device 1's counter moves 4 raw units per 600 s: 143 steps a day inside the day, x 0.1.
    assert abs(float(lines[2].split(",")[2]) - 57.2) < 1e-6
    ran = sunpm("sd", "sql", month.dump, "SELECT kind, count(*) AS n FROM journal GROUP BY ALL "
                "ORDER BY kind", "--format", "json")
    assert ran.code == 0, ran.err
    assert '"kind": "alarm", "n": 62' in ran.out
    ran = sunpm("sd", "sql", month.dump, "SELECT uid, name, unit FROM records LIMIT 1")
    assert "WPMSD0001" in ran.out and "(1 rows)" in ran.out
    assert sunpm("sd", "sql", month.dump, "SELECT nope FROM records").code == 1
    assert hashes(month.dump) == before


@pytest.mark.parametrize("query", ["", "   ", "-- the query", ";"])
def test_sql_without_a_statement_is_refused_by_name(month: Plant, query: str) -> None:
    ran = sunpm("sd", "sql", month.dump, query)
    assert ran.code == 2
    assert ran.err.strip() == f"sunpm sd sql: no SQL statement in {query!r}"
    assert "Traceback" not in ran.err


@pytest.mark.parametrize("statement,kind", [
    ("COPY (SELECT * FROM records) TO '{dump}/out.csv'", "COPY"),
    ("SELECT 1; EXPORT DATABASE '{dump}/db'", "EXPORT"),
    ("ATTACH '{dump}/x.duckdb'", "ATTACH"),
])
def test_sql_statements_that_write_files_are_refused(month: Plant, statement: str,
                                                     kind: str) -> None:
    before = hashes(month.dump)
    ran = sunpm("sd", "sql", month.dump, statement.format(dump=month.dump))
    assert ran.code == 2
    assert ran.err.startswith(f"sunpm sd sql: {kind} refused: sd sql only reads")
    assert hashes(month.dump) == before


def test_inspect_and_fsck_of_a_clean_dump(month: Plant) -> None:
    before = hashes(month.dump)
    ran = sunpm("sd", "inspect", month.dump)
    assert ran.code == 0, ran.err
    assert "uid       WPMSD0001" in ran.out
    assert "meter_a" in ran.out and "findings  none" in ran.out
    assert ran.out.splitlines()[2].endswith(" (1 snapshot)"), ran.out
    ran = sunpm("sd", "inspect", month.dump, "--json")
    import json

    report = json.loads(ran.out)
    # 31 days of 144 records, and 4 of today's in the open segment.
    assert [d["records"] for d in report["devices"]] == [31 * 144 + 4, 31 * 144 + 4]
    assert report["devices"][0]["first"] == "2021-02-01T00:10:00Z"
    assert {c["stream"]: c["cursor"] for c in report["cursors"]}["DATA"] \
        == iso((month.end_s - 1200) * NS)
    assert report["definitions_missing"] == []
    ran = sunpm("sd", "fsck", month.dump)
    assert ran.code == 0, ran.out + ran.err
    assert ran.out.rstrip().endswith("clean")
    assert hashes(month.dump) == before
