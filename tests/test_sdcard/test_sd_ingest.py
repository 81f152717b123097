"""`sunpm ingest` on the files of docs/formats.md §9.5 and §10 (the golden views), as a real
unit's server tree holds them: local times to UTC, action-2 triples, missing values, text, a
file without column header, `_P_` files, day-first dates, a missing definition file."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import duckdb
import pytest
from plant import hashes, sunpm

from sdcard.ingest import IngestError, ingest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "views"
CASE = ROOT / "tests" / "test_config" / "cases" / "warnings_only"
UID = "WPM00BDE4"


def _tree(root: Path, files: dict[str, str], *, config: bool = True) -> Path:
    tree = root / "tree"
    for sub in ("DATA", "ALARM", "DEF", "CONFIG"):
        (tree / sub).mkdir(parents=True)
    shutil.copytree(CASE / "DEF", tree / "DEF", dirs_exist_ok=True)
    if config:
        shutil.copytree(CASE / "CONFIG", tree / "CONFIG", dirs_exist_ok=True)
        ini = tree / "CONFIG" / f"{UID}_config.ini"
        ini.write_text(ini.read_text().replace("FTP_EuroDateFormat=1", "FTP_EuroDateFormat=0"))
    for target, golden in files.items():
        (tree / target).write_bytes(gzip.compress((GOLDEN / golden).read_bytes(), mtime=0))
    return tree


def _records(out: Path, where: str = "") -> list[tuple[object, ...]]:
    return duckdb.sql(
        f"SELECT device, strftime(time, '%Y-%m-%d %H:%M:%S'), var, name, unit, raw, scaled, "
        f"min, max, text FROM read_parquet('{out}/uid=*/device=*/date=*/*.parquet', "
        f"hive_partitioning = true, hive_types = {{'device': 'VARCHAR'}}) {where} "
        "ORDER BY ALL").fetchall()


def test_the_example_files_of_the_format_read_back_in_utc_named_and_scaled(
        tmp_path: Path) -> None:
    tree = _tree(tmp_path, {
        f"DATA/{UID}_MODBUS_210205_091500.csv.gz": f"{UID}_MODBUS_210205_091500.csv",
        # The same rows without column header (HeaderOption=0): columns from the definition.
        f"DATA/{UID}_MODBUS_210205_101500.csv.gz": f"{UID}_MODBUS_210205_091500.noheader.csv",
        f"DATA/{UID}_TIC_210205_091500.csv.gz": f"{UID}_TIC_210205_091500.csv",
        f"DATA/{UID}_IO_210205_091500.csv.gz": f"{UID}_IO_210205_091500.csv",
        f"DATA/{UID}_MODBUS_P_210205_091500.csv.gz": f"{UID}_MODBUS_P_210205_091500.csv",
        f"ALARM/{UID}_AL_210212_081500.csv.gz": f"{UID}_AL_210212_081500.csv",
    })
    before = hashes(tree)
    out = tmp_path / "out"
    ran = sunpm("ingest", tree, out)
    assert hashes(tree) == before
    # The alarm file names a definition the tree does not hold: said, the rest ingested.
    assert ran.code == 1
    alarms = tree / "ALARM" / f"{UID}_AL_210212_081500.csv.gz"
    assert (f"error: {alarms}: definition file {tree / 'DEF'}/MODBUS_DELTA_M88H-COM1.20-Sunspec"
            ".csv is missing; its alarms are ingested without their variable's name\n") in ran.err
    assert ran.out.startswith("6 files ingested")

    meter = _records(out, "WHERE device = '2' AND var = 2")
    # 09:50 in Paris is 08:50 UTC; P_total is action 2 (min;max;mean), CoefA 0.1, in W.
    assert meter[0] == ("2", "2021-02-05 08:50:00", 2, "P_total", "W", -1500.0, -150.0,
                        -1520.0, -1480.0, None)
    assert len(meter) == 3  # the header-less copy of the same rows merged, not doubled
    inverter = _records(out, "WHERE device = '1' AND var = 2")
    assert [r[5] for r in inverter] == [8.12, None, 7.99]  # the failed period stays missing
    tic = _records(out, "WHERE device = 'TIC1' AND var = 5")
    assert tic[0][9] == "TH.." and tic[0][5] is None  # TIC data is text
    # ... and, where it reads as a number, that number too, as the gateway records it.
    index = _records(out, "WHERE device = 'TIC1' AND var = 4")
    assert index[0][5:] == (12345678.0, 12345678.0, None, None, "012345678")
    power = _records(out, "WHERE device = 'TIC1' AND var = 8")
    assert power[0][3:] == ("PAPP", "VA", 931.25, 931.25, 640.0, 1250.0, None)
    params = _records(out, "WHERE device = '1' AND var = 1")
    assert [r[1] for r in params] == ["2021-02-05 09:00:20", "2021-02-05 09:12:07"]

    alarms = duckdb.sql(f"SELECT strftime(time, '%H:%M:%S'), source, alarm, device_name, var, "
                        f"value FROM read_parquet('{out}/_alarms/*/*/*.parquet') "
                        "ORDER BY ALL").fetchall()
    assert ("06:00:49", "MODBUS", None, "OndA", 48, "3") in alarms
    assert ("06:05:00", "TIC", None, "Linky", 5, "HP..") in alarms
    assert ("06:06:10", "GATEWAY", "Power OFF", None, None, None) in alarms

    again = sunpm("ingest", tree, out)
    # The alarm file is read again (its alarms are named once the definition is there); the
    # rest is skipped.
    assert again.out.startswith("1 files ingested (1 with errors: read again next time)")
    assert "5 already ingested" in again.out


def test_day_first_dates_without_configuration_are_recognised(tmp_path: Path) -> None:
    tree = _tree(tmp_path, {
        f"DATA/{UID}_MODBUS_210205_091500.csv.gz": f"{UID}_MODBUS_210205_091500.euro.csv",
    }, config=False)
    out = tmp_path / "out"
    ran = sunpm("ingest", tree, out, "--tz", "Europe/Paris")
    assert ran.code == 0, ran.err
    assert _records(out, "WHERE device = '2' AND var = 1")[0][1] == "2021-02-05 08:50:00"


def test_damaged_and_foreign_files_are_named_and_the_rest_read(tmp_path: Path) -> None:
    tree = _tree(tmp_path, {
        f"DATA/{UID}_IO_210205_091500.csv.gz": f"{UID}_IO_210205_091500.csv",
    })
    (tree / "DATA" / f"{UID}_MODBUS_210205_091500.csv.gz").write_bytes(
        gzip.compress((GOLDEN / f"{UID}_MODBUS_210205_091500.csv").read_bytes())[:40])
    (tree / "DATA" / "notes.txt").write_text("?")
    (tree / "DATA" / f"{UID}_TIC_210205_091500.csv.gz").write_bytes(gzip.compress(
        b"SNTIC;041676011381;001\nTypeTIC;WPM00BDE4_TIC_LINKY.csv\n4;4;5;6;8\n"
        b"21/02/05-09:50:00;1;2\nyesterday;1;2;3;4;5;6\n"))
    before = hashes(tree)
    out = tmp_path / "out"
    ran = sunpm("ingest", tree, out)
    assert ran.code == 1
    assert f"{tree / 'DATA' / (UID + '_MODBUS_210205_091500.csv.gz')}: not a readable gzip" \
        in ran.err
    assert f"{tree / 'DATA' / 'notes.txt'}: not a DATA file name; skipped" in ran.err
    assert f"{UID}_TIC_210205_091500.csv.gz:4: 2 fields where WPM00BDE4_TIC_LINKY.csv gives 6" \
        in ran.err
    assert f"{UID}_TIC_210205_091500.csv.gz:5: date 'yesterday' unreadable" in ran.err
    # Every file of the tree counted: the unreadable one is not among the ingested.
    assert ran.out.startswith("2 files ingested (1 with errors: read again next time) "), ran.out
    assert ", 1 unreadable (read again next time), 0 already ingested" in ran.out
    assert len(_records(out, "WHERE device = 'IO'")) == 3 * 5
    assert hashes(tree) == before


def test_an_unknown_time_zone_is_refused_not_read_as_utc(tmp_path: Path) -> None:
    tree = _tree(tmp_path, {f"DATA/{UID}_TIC_210205_091500.csv.gz":
                            f"{UID}_TIC_210205_091500.csv"}, config=False)
    ran = sunpm("ingest", tree, tmp_path / "out", "--tz", "Europe/Pariss")
    assert ran.code == 2
    assert "'Europe/Pariss' is not a known IANA time zone" in ran.err
    with pytest.raises(IngestError, match="'Europe/Pariss' is not a known IANA time zone"):
        ingest(tree, tmp_path / "out", tz="Europe/Pariss")
    assert not (tmp_path / "out").exists()


def test_plain_files_are_read_and_a_definition_default_is_said(tmp_path: Path) -> None:
    # An information system that unzipped what it received; meter_small.csv's CoefA `0,1`
    # falls back to 1, which every scaled value of the meter then carries.
    tree = _tree(tmp_path, {})
    (tree / "DATA" / f"{UID}_MODBUS_210205_091500.csv").write_bytes(
        (GOLDEN / f"{UID}_MODBUS_210205_091500.csv").read_bytes())
    # ... and saved again by a spreadsheet, with a BOM.
    (tree / "ALARM" / f"{UID}_AL_210212_081500.csv").write_bytes(
        b"\xef\xbb\xbf" + (GOLDEN / f"{UID}_AL_210212_081500.csv").read_bytes())
    # A `.csv.gz` a server unzipped on its way: read by its bytes.
    (tree / "DATA" / f"{UID}_IO_210205_091500.csv.gz").write_bytes(
        (GOLDEN / f"{UID}_IO_210205_091500.csv").read_bytes())
    out = tmp_path / "out"
    ran = sunpm("ingest", tree, out)
    assert ran.out.startswith("3 files ingested"), ran.out + ran.err
    assert "not a DATA file name" not in ran.err and "not a ALARM file name" not in ran.err
    assert len(_records(out, "WHERE device = '2' AND var = 1")) == 3
    assert len(_records(out, "WHERE device = 'IO'")) == 3 * 5
    assert (f"warning: {tree / 'DEF' / 'meter_small.csv'}:2: CoefA: '0,1' is not a number "
            "(use '.' as decimal point); default 1 used (in its scaled values too)") in ran.err
    alarms = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/_alarms/*/*/*.parquet')"
                        ).fetchall()
    lines = (GOLDEN / f"{UID}_AL_210212_081500.csv").read_text().splitlines()
    assert alarms[0][0] == len(lines)  # the first line too, BOM and all
    assert "not an alarm line" not in ran.err and "unreadable" not in ran.err


def test_a_block_without_definition_is_one_finding_and_its_file_is_read_again(
        tmp_path: Path) -> None:
    tree = _tree(tmp_path, {})
    rows = "".join(f"21/02/05-{h:02d}:00:00;1;2;3;4;5\n" for h in range(10, 20))
    (tree / "DATA" / f"{UID}_MODBUS_210205_200000.csv.gz").write_bytes(gzip.compress(
        (GOLDEN / f"{UID}_MODBUS_210205_091500.csv").read_bytes()
        + f"DEVICEINDEX;3\nmodbusTCP;other_meter.csv\n3;1;2;3\n{rows}".encode()))
    out = tmp_path / "out"
    ran = sunpm("ingest", tree, out)
    assert ran.code == 1
    data = tree / "DATA" / f"{UID}_MODBUS_210205_200000.csv.gz"
    # The missing file, and the lines it left out: two errors, not one a line.
    assert ran.err.count(": error: ") == 2, ran.err
    assert (f"{data}:16: device 3: 10 data lines skipped: no definition file other_meter.csv "
            "and its column header lists fewer variables") in ran.err
    assert "1 with errors: read again next time" in ran.out
    assert len(_records(out, "WHERE device = '1'")) > 0  # the other blocks are read

    # The definition put in place: the file is read again, its device 3 now named.
    (tree / "DEF" / "other_meter.csv").write_bytes(
        (tree / "DEF" / "meter_small.csv").read_bytes().replace(b"0,1", b"0.1"))
    again = sunpm("ingest", tree, out)
    assert again.code == 0, again.err
    assert again.out.startswith("1 files ingested (")
    named = _records(out, "WHERE device = '3' AND var = 2")
    assert len(named) == 10 and named[0][3:7] == ("P_total", "W", 4.0, 0.4)
    assert sunpm("ingest", tree, out).out.startswith("0 files ingested")


def test_lines_of_a_wrong_width_are_one_finding_per_block(tmp_path: Path) -> None:
    tree = _tree(tmp_path, {})
    rows = "".join(f"21/02/05-{h:02d}:00:00;2305;1\n" for h in range(10, 20))
    (tree / "DATA" / f"{UID}_MODBUS_210205_200000.csv.gz").write_bytes(gzip.compress(
        f"DEVICEINDEX;2\nmodbusRTU;meter_small.csv\n3;1;2;3\n{rows}".encode()))
    ran = sunpm("ingest", tree, tmp_path / "out")
    data = tree / "DATA" / f"{UID}_MODBUS_210205_200000.csv.gz"
    assert (f"error: {data}:4: 2 fields where meter_small.csv gives 5; line skipped (and 9 "
            "more lines like it in this block)") in ran.err
    assert ran.err.count(f"{data}:") == 1, ran.err


def test_a_tree_without_configuration_says_its_times_are_read_as_utc(tmp_path: Path) -> None:
    tree = _tree(tmp_path, {f"DATA/{UID}_IO_210205_091500.csv.gz":
                            f"{UID}_IO_210205_091500.csv"}, config=False)
    ran = sunpm("ingest", tree, tmp_path / "out")
    assert ran.code == 0, ran.err
    assert (f"warning: {tree / 'CONFIG' / (UID + '_config.ini')}: missing; the times of "
            f"{UID}'s files are read as UTC (give --tz for the unit's time zone)") in ran.err
    assert _records(tmp_path / "out", "WHERE device = 'IO' AND var = 1")[0][1] \
        == "2021-02-05 09:50:00"
    given = sunpm("ingest", tree, tmp_path / "out2", "--tz", "Europe/Paris")
    assert (given.code, given.err) == (0, "")
    assert _records(tmp_path / "out2", "WHERE device = 'IO' AND var = 1")[0][1] \
        == "2021-02-05 08:50:00"


def test_each_device_block_of_a_window_inside_the_repeated_hour_reads_its_own_times(
        tmp_path: Path) -> None:
    # A session at 01:30 UTC on the night DST ends in Paris (cursor 00:30 UTC): every block
    # runs from 02:40 CEST through 02:30 CET. The second block starts again at 02:40 CEST; read
    # after the first block's last time (the second 02:30), its times went an hour late.
    local = ["02:40", "02:50", "02:00", "02:10", "02:20", "02:30"]
    block = "".join(f"21/10/31-{t}:00;2305;-1;1;0;{k}\n" for k, t in enumerate(local))
    tree = _tree(tmp_path, {})
    (tree / "DATA" / f"{UID}_MODBUS_211031_013000.csv.gz").write_bytes(gzip.compress(
        (f"DEVICEINDEX;1\nmodbusRTU;meter_small.csv\n3;1;2;3\n{block}"
         f"DEVICEINDEX;2\nmodbusRTU;meter_small.csv\n3;1;2;3\n{block}").encode()))
    out = tmp_path / "out"
    ran = sunpm("ingest", tree, out)
    assert "error" not in ran.err, ran.err
    utc = ["00:40:00", "00:50:00", "01:00:00", "01:10:00", "01:20:00", "01:30:00"]
    for device in ("1", "2"):
        rows = _records(out, f"WHERE device = '{device}' AND var = 1")
        assert [r[1][11:] for r in rows] == utc, device


def test_a_file_of_another_definition_version_is_ingested_by_its_column_header(
        tmp_path: Path) -> None:
    # Written when meter_small.csv still had an Index 7 (a counter since removed); DEF/ holds
    # the later version. The values keep their Index; the known ones are named and scaled.
    tree = _tree(tmp_path, {})
    rows = "".join(f"21/02/05-{h:02d}:00:00;2305;-1520;-1480;-1500;{h}\n" for h in range(10, 13))
    data = tree / "DATA" / f"{UID}_MODBUS_210205_130000.csv.gz"
    data.write_bytes(gzip.compress(
        f"DEVICEINDEX;2\nmodbusRTU;meter_small.csv\n3;1;2;7\n{rows}".encode()))
    out = tmp_path / "out"
    ran = sunpm("ingest", tree, out)
    assert ran.code == 0, ran.err
    assert (f"warning: {data}:3: Index 7 not in meter_small.csv (written with another version "
            "of it?); ingested without name, unit or scaled value") in ran.err
    assert [r[2:7] for r in _records(out, "WHERE device = '2' AND var IN (2, 7) AND "
                                          "time = '2021-02-05 09:00:00'")] == [
        (2, "P_total", "W", -1500.0, -150.0), (7, None, None, 10.0, None)]


def test_an_hourly_window_inside_the_repeated_hour_reads_its_rows_an_hour_later(
        tmp_path: Path) -> None:
    # Hourly sessions the night DST ends in Paris: the window [01:00, 02:00) UTC holds the
    # second 02:00..02:50 (CET). Read forwards from the first reading of 02:00 (CEST), every
    # row went an hour early, onto the rows of the window before, which the merge replaced.
    before = "".join(f"21/10/31-02:{m}0:00;2305;-1;1;0;{m}\n" for m in range(6))
    after = "".join(f"21/10/31-02:{m}0:00;2306;-2;2;0;{m}\n" for m in range(6))
    tree = _tree(tmp_path, {})
    head = "DEVICEINDEX;2\nmodbusRTU;meter_small.csv\n3;1;2;3\n"
    (tree / "DATA" / f"{UID}_MODBUS_211031_010000.csv.gz").write_bytes(
        gzip.compress((head + before).encode()))
    (tree / "DATA" / f"{UID}_MODBUS_211031_020000.csv.gz").write_bytes(
        gzip.compress((head + after).encode()))
    out = tmp_path / "out"
    ran = sunpm("ingest", tree, out)
    assert ran.code == 0, ran.err
    rows = _records(out, "WHERE device = '2' AND var = 1")
    assert [(r[1][11:], r[5]) for r in rows] == (
        [(f"00:{m}0:00", 2305.0) for m in range(6)] + [(f"01:{m}0:00", 2306.0) for m in range(6)])


def test_a_block_that_ends_in_the_first_pass_of_the_repeated_hour_reads_in_it(
        tmp_path: Path) -> None:
    # Two-hourly sessions the night DST ends in Paris: the window [00:30, 02:30) UTC runs from
    # 02:40 CEST through 03:20 CET. Meter 2 stopped recording at 02:50 CEST, its alarm too; read
    # from the window's end back alone, both went to the second 02:40 and 02:50 (CET).
    head = "modbusRTU;meter_small.csv\n3;1;2;3\n"

    def rows(times: list[str], value: int) -> str:
        return "".join(f"21/10/31-{t}:00;{value};-1;1;0;{k}\n" for k, t in enumerate(times))

    tree = _tree(tmp_path, {})
    (tree / "DATA" / f"{UID}_MODBUS_211031_003000.csv.gz").write_bytes(gzip.compress(
        (f"DEVICEINDEX;2\n{head}" + rows(["02:00", "02:10", "02:20"], 2300)).encode()))
    later = ["02:40", "02:50", "02:00", "02:10", "02:20", "02:30", "02:40", "02:50", "03:00",
             "03:10", "03:20"]
    (tree / "DATA" / f"{UID}_MODBUS_211031_023000.csv.gz").write_bytes(gzip.compress(
        (f"DEVICEINDEX;1\n{head}" + rows(later, 2301)
         + f"DEVICEINDEX;2\n{head}" + rows(["02:40", "02:50"], 2302)).encode()))
    (tree / "ALARM" / f"{UID}_AL_211031_003000.csv.gz").write_bytes(
        gzip.compress(b"21/10/31-02:10:00;GATEWAY;Power ON\n"))
    (tree / "ALARM" / f"{UID}_AL_211031_023000.csv.gz").write_bytes(
        gzip.compress(b"21/10/31-02:50:00;GATEWAY;Power OFF\n"))
    out = tmp_path / "out"
    ran = sunpm("ingest", tree, out)
    assert ran.code == 0, ran.err
    assert [(r[1][11:], r[5]) for r in _records(out, "WHERE device = '2' AND var = 1")] == [
        ("00:00:00", 2300.0), ("00:10:00", 2300.0), ("00:20:00", 2300.0),
        ("00:40:00", 2302.0), ("00:50:00", 2302.0)]
    assert [r[1][11:16] for r in _records(out, "WHERE device = '1' AND var = 1")] == [
        "00:40", "00:50", "01:00", "01:10", "01:20", "01:30", "01:40", "01:50", "02:00",
        "02:10", "02:20"]
    assert duckdb.sql(f"SELECT strftime(time, '%H:%M:%S'), alarm FROM read_parquet("
                      f"'{out}/_alarms/*/*/*.parquet') ORDER BY time").fetchall() == [
        ("00:10:00", "Power ON"), ("00:50:00", "Power OFF")]

    # The first file of its tree: meter 1's rows, which cross into the second pass, say the
    # window started by 00:40 UTC; meter 2 goes on from there.
    for older in (tree / "DATA").glob("*_003000.csv.gz"):
        older.unlink()
    ran = sunpm("ingest", tree, tmp_path / "alone")
    assert ran.code == 0, ran.err
    assert [r[1][11:16] for r in _records(tmp_path / "alone", "WHERE device = '2' AND var = 1")
            ] == ["00:40", "00:50"]


def test_a_device_s_next_block_in_the_repeated_hour_goes_on_from_its_block_before(
        tmp_path: Path) -> None:
    # The window [00:30, 02:30) UTC the night DST ends in Paris; meter 2's recorded variables
    # change at 01:40 UTC (the second 02:40, CET), which starts a new block. Its first row goes
    # on from the block before, not from the window's start (its first 02:40, CEST, is taken).
    first = ["02:40", "02:50", "02:00", "02:10", "02:20", "02:30"]
    tree = _tree(tmp_path, {})
    head = "DEVICEINDEX;2\nmodbusRTU;meter_small.csv\n"
    (tree / "DATA" / f"{UID}_MODBUS_211031_003000.csv.gz").write_bytes(gzip.compress(
        f"{head}3;1;2;3\n21/10/31-02:20:00;2300;-1;1;0;0\n".encode()))
    (tree / "DATA" / f"{UID}_MODBUS_211031_023000.csv.gz").write_bytes(gzip.compress(
        (f"{head}3;1;2;3\n" + "".join(f"21/10/31-{t}:00;2301;-1;1;0;0\n" for t in first)
         + f"{head}2;1;3\n" + "".join(f"21/10/31-{t}:00;2302;0\n"
                                       for t in ("02:40", "02:50", "03:00"))).encode()))
    out = tmp_path / "out"
    ran = sunpm("ingest", tree, out)
    assert ran.code == 0, ran.err
    assert [(r[1][11:16], r[5]) for r in _records(out, "WHERE device = '2' AND var = 1")] == [
        ("00:20", 2300.0), ("00:40", 2301.0), ("00:50", 2301.0), ("01:00", 2301.0),
        ("01:10", 2301.0), ("01:20", 2301.0), ("01:30", 2301.0), ("01:40", 2302.0),
        ("01:50", 2302.0), ("02:00", 2302.0)]


def test_a_block_that_enters_the_repeated_hour_goes_on_from_its_row_before(
        tmp_path: Path) -> None:
    # The only file of the tree, its window ending at 02:30 UTC (03:30 CET): the meter's rows
    # run from 01:50 CEST into the first 02:00..02:50 and stop. Each row follows the one before
    # it, not the window's end (read from there back, 02:00..02:50 went an hour late).
    local = ["01:50", "02:00", "02:10", "02:20", "02:30", "02:40", "02:50"]
    block = "".join(f"21/10/31-{t}:00;2305;-1;1;0;{k}\n" for k, t in enumerate(local))
    tree = _tree(tmp_path, {})
    (tree / "DATA" / f"{UID}_MODBUS_211031_023000.csv.gz").write_bytes(gzip.compress(
        f"DEVICEINDEX;2\nmodbusRTU;meter_small.csv\n3;1;2;3\n{block}".encode()))
    out = tmp_path / "out"
    ran = sunpm("ingest", tree, out)
    assert ran.code == 0, ran.err
    assert [r[1] for r in _records(out, "WHERE device = '2' AND var = 1")] == [
        "2021-10-30 23:50:00"] + [f"2021-10-31 00:{m}0:00" for m in range(6)]


def test_alarms_of_a_window_inside_the_repeated_hour_read_back_in_utc(tmp_path: Path) -> None:
    # The window [01:00, 01:30) UTC: its one alarm is at the second 02:10 (CET).
    tree = _tree(tmp_path, {})
    (tree / "ALARM" / f"{UID}_AL_211031_013000.csv.gz").write_bytes(
        gzip.compress(b"21/10/31-02:10:00;GATEWAY;Power ON\n"))
    out = tmp_path / "out"
    assert sunpm("ingest", tree, out).code == 0
    assert duckdb.sql(f"SELECT strftime(time, '%H:%M:%S'), alarm FROM read_parquet("
                      f"'{out}/_alarms/*/*/*.parquet')").fetchall() == [("01:10:00", "Power ON")]


TEXT_DEF = "modbusTCP;Inverter;ACME;T\n1;3;1_8;String;;Label;;1;0;;4\n2;3;5;U16;;W;;1;0;W;4\n"


def test_text_values_keep_their_line_and_an_empty_one_is_missing(tmp_path: Path) -> None:
    # Writers replace `;`, CR and LF in text (§1.1); any other character stays, those that
    # `str.splitlines` also breaks at (form feed, U+0085, U+2028) included.
    tree = _tree(tmp_path, {})
    (tree / "DEF" / "text.csv").write_text(TEXT_DEF)
    (tree / "DATA" / f"{UID}_MODBUS_210205_091500.csv.gz").write_bytes(gzip.compress(
        ("DEVICEINDEX;3\nmodbusTCP;text.csv\n2;1;2\n"
         "21/02/05-09:50:00;a\x0cb\x85c\u2028d;10\n"
         "21/02/05-10:00:00;;\n").encode()))
    out = tmp_path / "out"
    ran = sunpm("ingest", tree, out)
    assert ran.code == 0, ran.err
    assert [(r[1][11:], r[2], r[5], r[9]) for r in _records(out, "WHERE device = '3'")] == [
        ("08:50:00", 1, None, "a\x0cb\x85c\u2028d"), ("08:50:00", 2, 10.0, None),
        ("09:00:00", 1, None, None), ("09:00:00", 2, None, None)]


def test_a_server_2_tree_with_its_own_date_order_is_read_in_it(tmp_path: Path) -> None:
    # Server 1 writes `21/02/05-...`, server 2 (FTP2_EuroDateFormat=1) `05/02/21-...`; a tree
    # does not say which server it is, so the order is told by the file, not taken from server 1.
    tree = _tree(tmp_path, {f"DATA/{UID}_MODBUS_210205_091500.csv.gz":
                            f"{UID}_MODBUS_210205_091500.euro.csv"})
    ini = tree / "CONFIG" / f"{UID}_config.ini"
    ini.write_text(ini.read_text().replace("SERVER2_Type=mqtts", "SERVER2_Type=ftp\n"
                                           "FTP2_Host=is2.example.net\nFTP2_EuroDateFormat=1"))
    out = tmp_path / "out"
    ran = sunpm("ingest", tree, out)
    assert ran.code == 0, ran.err
    assert [r[1] for r in _records(out, "WHERE device = '2' AND var = 1")] == [
        "2021-02-05 08:50:00", "2021-02-05 09:00:00", "2021-02-05 09:10:00"]


def test_an_alarm_on_a_text_variable_keeps_its_text(tmp_path: Path) -> None:
    # Numbers are written `%f` (`3.000000`) and read back shortest (`3`); a text value is
    # written as is, and a String reading `1.50` (a firmware version) stays `1.50`.
    tree = _tree(tmp_path, {})
    (tree / "DEF" / "text.csv").write_text(TEXT_DEF.replace(";4\n2;", ";8\n2;"))
    (tree / "ALARM" / f"{UID}_AL_210205_091500.csv.gz").write_bytes(gzip.compress(
        b"21/02/05-09:50:00;MODBUS;text.csv;inv_c;1;1.50\n"
        b"21/02/05-09:51:00;TIC;WPM00BDE4_TIC_LINKY.csv;Linky;5;1.50\n"
        b"21/02/05-09:52:00;MODBUS;inv_small.csv;inv_a;8;3.000000\n"))
    out = tmp_path / "out"
    assert sunpm("ingest", tree, out).code == 0
    assert duckdb.sql(f"SELECT value FROM read_parquet('{out}/_alarms/*/*/*.parquet') "
                      "ORDER BY time").fetchall() == [("1.50",), ("1.50",), ("3",)]


def test_numbers_of_a_server_tree_are_read_in_ascii_digits_only(tmp_path: Path) -> None:
    """A column header cell that is no Index ended the run with a ValueError traceback, and an
    alarm's Index `\u00b2` too (`"\u00b2".isdigit()` holds, `int()` refuses it); values that
    `float()` alone reads (`1_0`, `nan`, `infinity`, full-width digits) became numbers. The
    header is said and not used, the alarm line skipped, such values kept as text."""
    tree = _tree(tmp_path, {})
    (tree / "DEF" / "text.csv").write_text(TEXT_DEF)
    (tree / "DATA" / f"{UID}_MODBUS_210205_091500.csv.gz").write_bytes(gzip.compress(
        ("DEVICEINDEX;3\nmodbusTCP;text.csv\n2;1;x\n"
         "21/02/05-09:50:00;a;1_0\n"
         "21/02/05-10:00:00;b;nan\n"
         "21/02/05-10:10:00;c;\uff11\uff12\n"
         "21/02/05-10:20:00;d;12.5\n").encode()))
    (tree / "ALARM" / f"{UID}_AL_210205_091500.csv.gz").write_bytes(gzip.compress(
        "21/02/05-09:50:00;MODBUS;text.csv;inv_c;\u00b2;1\n"
        "21/02/05-09:51:00;MODBUS;text.csv;inv_c;2;1_0.5\n".encode()))
    out = tmp_path / "out"
    ran = sunpm("ingest", tree, out)
    assert ran.code == 1 and "Traceback" not in ran.err, ran.err
    assert f"{UID}_MODBUS_210205_091500.csv.gz:3: column header: 'x' is not an Index; header " \
        "not used" in ran.err
    assert f"{UID}_AL_210205_091500.csv.gz:1: not an alarm line; skipped" in ran.err
    assert [(r[2], r[5], r[9]) for r in _records(out, "WHERE device = '3' AND var = 2")] == [
        (2, None, "1_0"), (2, None, "nan"), (2, None, "\uff11\uff12"), (2, 12.5, None)]
    assert duckdb.sql(f"SELECT var, value FROM read_parquet('{out}/_alarms/*/*/*.parquet')"
                      ).fetchall() == [(2, "1_0.5")]
