"""Damaged dumps: every command still answers, names the damage, and writes nothing to the dump.

Each case damages a private copy of the month's dump the way a card does (a card pulled mid-write,
flash that reads back zeros, a flipped bit, a lost snapshot, files that are not ours), then runs
every `sunpm sd` command on it and compares every file's hash, mode and mtime before and after.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from plant import Plant, hashes, sunpm

from sdcard.fsck import CLEAN, DAMAGED, UNREADABLE
from store import Log
from store._segment import write_ipc_file
from store.schema import JOURNAL_SCHEMA, RECORDS_SCHEMA


def _open_segment(dump: Path, stream: str) -> Path:
    folder = dump / "journal" if stream == "journal" else dump / "devices" / stream
    return max(folder.glob("*.arrows"), key=lambda p: int(p.name.split(".")[0]))


def _sealed(dump: Path, device: str, k: int = 3) -> Path:
    return sorted((dump / "devices" / device).glob("*.arrow"),
                  key=lambda p: int(p.name.split(".")[0]))[k]


def torn_tail(dump: Path) -> list[str]:
    seg = _open_segment(dump, "1")
    os.truncate(seg, seg.stat().st_size - 100)
    return [str(seg), "torn tail"]


def zero_filled_tail(dump: Path) -> list[str]:
    seg = _open_segment(dump, "2")
    with open(seg, "ab") as fh:
        fh.write(bytes(8192))
    return [str(seg), "torn tail of 8192 bytes"]


def flipped_byte(dump: Path) -> list[str]:
    seg = _open_segment(dump, "1")
    data = bytearray(seg.read_bytes())
    # Inside the second of the day's four batches: a trusted batch follows it.
    offset = len(data) * 3 // 8
    data[offset] ^= 0x10
    seg.write_bytes(bytes(data))
    return [str(seg), "damaged batch at byte"]


def missing_definition(dump: Path) -> list[str]:
    for path in (dump / "defs").glob("*.csv"):
        path.unlink()
    return ["meter.csv", "missing"]


def definition_lost_everywhere(dump: Path) -> list[str]:
    missing_definition(dump)
    for path in (dump / "config").glob("*/DEF/meter.csv"):
        path.unlink()
    return ["meter.csv", "configuration snapshot is damaged"]


def truncated_journal(dump: Path) -> list[str]:
    seg = _open_segment(dump, "journal")
    os.truncate(seg, seg.stat().st_size // 2)
    return [str(seg), "torn tail"]


def foreign_files(dump: Path) -> list[str]:
    (dump / "README.txt").write_text("copied from the unit in the field\n")
    (dump / "devices" / "1" / "notes.txt").write_text("?")
    (dump / "defs" / "photo.jpg").write_bytes(b"\xff\xd8")
    return [str(dump / "README.txt"), str(dump / "devices" / "1" / "notes.txt"),
            str(dump / "defs" / "photo.jpg")]


def _rewritten_in_version(path: Path, schema: pa.Schema, version: bytes) -> None:
    """The sealed file written again the store's way (every batch verifies), same fields, in
    a schema version this reader does not know."""
    # Read into memory (not a memory map: the file is replaced below).
    reader = pa.ipc.open_file(pa.py_buffer(path.read_bytes()))
    table = reader.read_all()
    path.unlink()
    write_ipc_file(path, table, schema.with_metadata(
        {**(reader.schema.metadata or {}), b"sunpm.schema_version": version}), compress=True)


def unknown_schema_version(dump: Path) -> list[str]:
    path = _sealed(dump, "2")
    _rewritten_in_version(path, RECORDS_SCHEMA, b"99")
    return [str(path), "unknown schema version '99'"]


def pulled_mid_write(dump: Path) -> list[str]:
    # The card left while a sealed file was being copied and the journal appended to.
    sealed = _sealed(dump, "1", 5)
    os.truncate(sealed, sealed.stat().st_size // 3)
    journal = _open_segment(dump, "journal")
    os.truncate(journal, journal.stat().st_size - 37)
    return [str(sealed), str(journal)]


def empty_segment(dump: Path) -> list[str]:
    # A segment created just before a power cut, before its first batch reached the card.
    last = _open_segment(dump, "1")
    empty = last.with_name(f"{int(last.name.split('.')[0]) + 4}.arrows")
    empty.touch()
    return [f"warning: {empty}: empty segment (0 bytes"]


def damaged_header(dump: Path) -> list[str]:
    # The first bytes of a segment (its schema message) overwritten: damage at byte 0, the
    # batches after it still read.
    seg = _open_segment(dump, "1")
    with open(seg, "r+b") as fh:
        fh.write(b"\xff" * 16)
    return [f"{seg}: damaged batch at byte 0"]


#: case: (damage, fsck's exit code, whether the delivered range can still be re-exported)
CASES: dict[str, tuple[Callable[[Path], list[str]], int, bool]] = {
    "torn_tail": (torn_tail, DAMAGED, True),
    "zero_filled_tail": (zero_filled_tail, DAMAGED, True),
    "flipped_byte": (flipped_byte, DAMAGED, True),
    "missing_definition": (missing_definition, DAMAGED, True),
    "definition_lost_everywhere": (definition_lost_everywhere, DAMAGED, False),
    "truncated_journal": (truncated_journal, DAMAGED, True),
    "foreign_files": (foreign_files, CLEAN, True),
    "unknown_schema_version": (unknown_schema_version, DAMAGED, True),
    "pulled_mid_write": (pulled_mid_write, DAMAGED, True),
    "damaged_header": (damaged_header, DAMAGED, True),
    # As a torn tail: nothing acknowledged lost, but the card was cut mid-write.
    "empty_segment": (empty_segment, DAMAGED, True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_command_answers_names_the_damage_and_writes_nothing(
        case: str, month: Plant, dump_copy: Path, tmp_path: Path) -> None:
    damage, fsck_code, renders = CASES[case]
    named = damage(dump_copy)
    before = hashes(dump_copy)

    fsck = sunpm("sd", "fsck", dump_copy)
    assert fsck.code == fsck_code, fsck.out + fsck.err
    for text in named:
        assert text in fsck.out, (text, fsck.out)
    assert "Traceback" not in fsck.err

    fsck_json = json.loads(sunpm("sd", "fsck", dump_copy, "--json").out)
    assert fsck_json["code"] == fsck_code
    # Everything readable is still read: both devices keep most of their month.
    assert min(v for k, v in fsck_json["readable_rows"].items() if k != "journal") > 25 * 144 * 4

    inspect = sunpm("sd", "inspect", dump_copy)
    assert inspect.code == 0, inspect.err
    for text in named:
        assert text in inspect.out, (text, inspect.out)
    assert json.loads(sunpm("sd", "inspect", dump_copy, "--json").out)["uid"] == "WPMSD0001"

    sql = sunpm("sd", "sql", dump_copy, "SELECT device, count(*) AS n FROM records GROUP BY ALL "
                "ORDER BY ALL", "--format", "csv")
    assert sql.code == 0, sql.err
    assert sql.out.splitlines()[1].startswith("1,")

    parquet = sunpm("sd", "export-parquet", dump_copy, tmp_path / "pq")
    assert parquet.code == 0, parquet.err
    assert (tmp_path / "pq" / "uid=WPMSD0001" / "device=2").is_dir()

    reexport = sunpm("sd", "reexport", dump_copy, "--server", "1", "--from", "2021-02-01",
                     "--to", "2021-03-03T23:40:00Z", "--out", tmp_path / "re", "--allow-partial")
    assert "Traceback" not in reexport.err
    if renders:
        assert reexport.code == 0, reexport.err
        assert len(list((tmp_path / "re" / "DATA").iterdir())) >= 30
    else:
        # No configuration and no definition left to render with: said, with the path.
        assert reexport.code == 1
        assert f"{dump_copy}: no configuration snapshot in the dump" in reexport.err
        ran = sunpm("sd", "reexport", dump_copy, "--server", "1", "--from", "2021-02-01",
                    "--to", "2021-02-02", "--out", tmp_path / "re2", "--config", month.config)
        assert ran.code == 1 and "definition snapshot of meter.csv is missing" in ran.err

    assert hashes(dump_copy) == before


def test_an_intact_file_of_an_unknown_schema_version_is_named_once_and_not_as_damage(
        dump_copy: Path) -> None:
    # The store's check reads every sealed file in its own schema: such a file's schema
    # message was a "damaged batch at byte 8", beside the finding that sets the file aside.
    path = _sealed(dump_copy, "2")
    _rewritten_in_version(path, RECORDS_SCHEMA, b"2")
    journal = sorted((dump_copy / "journal").glob("*.arrow"))[0]
    _rewritten_in_version(journal, JOURNAL_SCHEMA, b"2")
    for command in ("fsck", "inspect"):
        ran = sunpm("sd", command, dump_copy)
        for victim in (path, journal):
            assert ran.out.count(f"{victim}:") == 1, (command, ran.out)
            assert f"{victim}: unknown schema version '2' (this reader knows '1'); skipped" \
                in ran.out, (command, ran.out)
    assert sunpm("sd", "fsck", dump_copy).code == DAMAGED


def test_a_journal_file_of_an_unknown_schema_version_is_not_read_as_events(
        month: Plant, dump_copy: Path) -> None:
    # Named as skipped, its events were still decoded in this reader's schema by every
    # journal read: the journal view, fsck's count, inspect's cursors, reexport's state.
    journal = sorted((dump_copy / "journal").glob("*.arrow"))[0]
    aside = pa.ipc.open_file(pa.py_buffer(journal.read_bytes())).read_all().num_rows
    query = "SELECT count(*) AS n FROM journal"
    clean = int(sunpm("sd", "sql", month.dump, query, "--format", "csv").out.split()[1])
    _rewritten_in_version(journal, JOURNAL_SCHEMA, b"2")
    ran = sunpm("sd", "sql", dump_copy, query, "--format", "csv")
    assert ran.code == 0, ran.err
    assert int(ran.out.split()[1]) == clean - aside > 0
    said = [line for line in ran.err.splitlines() if str(journal) in line]
    assert said == [f"sunpm sd sql: error: {journal}: unknown schema version '2' (this reader "
                    "knows '1'); skipped"], ran.err
    log = Log.open_read_only(dump_copy)     # read-only: holds nothing to close
    assert log.journal().num_rows == clean - aside
    assert [str(r) for r in log.reports if r.path == journal] == [
        f"{journal}: unknown schema version '2' (this reader knows '1'); skipped"]


def test_a_directory_that_is_no_store_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    before = hashes(tmp_path)
    extras: dict[str, tuple[str | Path, ...]] = {
        "fsck": (), "inspect": (), "sql": ("SELECT 1",),
        "export-parquet": (tmp_path / "pq",),
        "reexport": ("--server", "1", "--from", "2021-02-01", "--to", "2021-02-02", "--out",
                     tmp_path / "re")}
    for command, extra in extras.items():
        ran = sunpm("sd", command, tmp_path / "photos", *extra)
        # fsck's UNREADABLE is the 2 of every other command.
        assert ran.code == 2 == UNREADABLE, (command, ran.code)
        assert f"{tmp_path / 'photos'}: not a sunpm store" in ran.err
    ran = sunpm("sd", "fsck", tmp_path / "nowhere")
    assert ran.code == UNREADABLE and "no such directory" in ran.err
    ran = sunpm("ingest", tmp_path / "photos", tmp_path / "out")
    assert ran.code == 1 and "not a server tree" in ran.err
    assert hashes(tmp_path) == before


def snapshots_lost(dump: Path) -> list[str]:
    named = []
    for snapshot in sorted((dump / "config").iterdir()):
        shutil.rmtree(snapshot)
        named.append(f"{snapshot}: configuration snapshot named by the journal is missing")
    return named


def journal_folder_lost(dump: Path) -> list[str]:
    shutil.rmtree(dump / "journal")
    return [f"{dump / 'journal'}: missing (alarms, logs, delivery cursors and configuration "
            "history lost)"]


def devices_folder_lost(dump: Path) -> list[str]:
    shutil.rmtree(dump / "devices")
    return [f"{dump / 'devices'}: missing (every device's records lost)"]


@pytest.mark.parametrize("damage", [snapshots_lost, journal_folder_lost, devices_folder_lost])
def test_a_missing_snapshot_or_store_folder_is_damage_not_a_clean_dump(
        damage: Callable[[Path], list[str]], dump_copy: Path) -> None:
    named = damage(dump_copy)
    before = hashes(dump_copy)
    fsck = sunpm("sd", "fsck", dump_copy)
    assert fsck.code == DAMAGED, fsck.out + fsck.err
    inspect = sunpm("sd", "inspect", dump_copy)
    assert inspect.code == 0, inspect.err
    for text in named:
        assert f"error: {text}" in fsck.out, (text, fsck.out)
        assert text in inspect.out, (text, inspect.out)
    if damage is journal_folder_lost:
        assert "\njournal   0 events\n" in inspect.out
    assert hashes(dump_copy) == before


def test_an_output_that_is_a_file_or_an_empty_range_is_refused_by_name(
        month: Plant, tmp_path: Path) -> None:
    taken = tmp_path / "taken.txt"
    taken.write_text("not a folder\n")
    before = hashes(month.dump)
    runs = {
        "sd export-parquet": sunpm("sd", "export-parquet", month.dump, taken),
        "sd reexport": sunpm("sd", "reexport", month.dump, "--server", "1", "--from",
                             "2021-02-01", "--to", "2021-02-02", "--out", taken),
        "ingest": sunpm("ingest", month.server, taken),
    }
    for command, ran in runs.items():
        assert (ran.code, ran.err) == (2, f"sunpm {command}: {taken}: exists and is not a "
                                          "directory\n"), command
    ran = sunpm("sd", "export-parquet", month.dump, tmp_path / "pq", "--uid", "a/../b")
    assert (ran.code, ran.err) == (2, "sunpm sd export-parquet: uid 'a/../b' is not 1..32 of "
                                      "A-Z a-z 0-9 -\n")
    assert not (tmp_path / "pq").exists()
    ran = sunpm("sd", "reexport", month.dump, "--server", "1", "--from", "2021-02-02",
                "--to", "2021-02-02", "--out", tmp_path / "re")
    assert (ran.code, ran.err) == (2, "sunpm sd reexport: --to must be after --from\n")
    assert not (tmp_path / "re").exists()
    assert taken.read_text() == "not a folder\n"
    assert hashes(month.dump) == before


def test_a_dump_whose_every_segment_header_is_damaged_is_unreadable(dump_copy: Path) -> None:
    segments = [*dump_copy.glob("devices/*/*.arrow*"), *dump_copy.glob("journal/*.arrow*")]
    for seg in segments:
        # A stream segment's batches verify on their own, read after a damaged schema
        # message: overwritten whole, nothing of it is the store's.
        size = 16 if seg.suffix == ".arrow" else seg.stat().st_size
        with open(seg, "r+b") as fh:
            fh.write(b"\xff" * size)
    before = hashes(dump_copy)
    fsck = sunpm("sd", "fsck", dump_copy)
    assert fsck.code == UNREADABLE, fsck.out
    assert fsck.out.count("segment unreadable") == len(segments)
    assert fsck.out.rstrip().endswith("unreadable")
    assert hashes(dump_copy) == before


def test_an_empty_segment_with_segments_after_it_is_lost_data(dump_copy: Path) -> None:
    sealed = _sealed(dump_copy, "2", 4)
    empty = sealed.with_name(f"{int(sealed.name.split('.')[0]) + 1}.arrows")
    empty.touch()
    fsck = sunpm("sd", "fsck", dump_copy)
    assert fsck.code == DAMAGED
    assert f"error: {empty}: empty segment with segments after it" in fsck.out
    assert f"error: {empty}: empty segment" in sunpm("sd", "inspect", dump_copy).out


def test_a_torn_tail_is_listed_once_by_inspect_with_the_batches_kept(dump_copy: Path) -> None:
    seg = torn_tail(dump_copy)[0]
    inspect = sunpm("sd", "inspect", dump_copy)
    torn = [line for line in inspect.out.splitlines() if "torn tail" in line]
    assert len(torn) == 1, inspect.out
    assert seg in torn[0] and "None" not in torn[0] and "complete batches kept" in torn[0]
    findings = json.loads(sunpm("sd", "inspect", dump_copy, "--json").out)["findings"]
    assert [f["kind"] for f in findings] == ["torn_tail"]


def test_a_file_reexported_from_fewer_records_is_said_partial_not_recompressed(
        dump_copy: Path, tmp_path: Path) -> None:
    damaged = _sealed(dump_copy, "1", 7)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x40
    damaged.write_bytes(bytes(data))
    ran = sunpm("sd", "reexport", dump_copy, "--server", "1", "--from", "2021-02-01",
                "--to", "2021-03-03T23:40:00Z", "--out", tmp_path / "re", "--allow-partial")
    assert ran.code == 0, ran.err
    partial = [line.split(":")[0] for line in ran.err.splitlines()
               if line.endswith("rebuilt from what is left, not the text delivered")]
    assert partial and all("_MODBUS_" in name for name in partial), ran.err
    assert "same text as delivered" not in ran.err
    # Refused without --allow-partial, naming the first of them.
    refused = sunpm("sd", "reexport", dump_copy, "--server", "1", "--from", "2021-02-01",
                    "--to", "2021-03-03T23:40:00Z", "--out", tmp_path / "re2")
    assert refused.code == 1 and f"{partial[0]}: rebuilt text differs" in refused.err
