"""Hostile content from an FTP server (`_hostile_ftp.py`, pyftpdlib with tricks): endless files and
listings, bytes trickling, a listing line past ftplib's 8,192 bytes (docs/behaviour.md §4.5). Each
case is a whole session in a child process: no crash, bounded memory, the control connection kept
in step, the canary and the records untouched (conftest.py)."""

from __future__ import annotations

import time

from hostile_support import MEMORY_CEILING_MB, UID, Outcome, Site, hostile_ftp


def run(site: Site, *tricks: tuple[str, str], operation_s: float = 5.0) -> Outcome:
    with hostile_ftp(site.tree, *tricks) as server:
        outcome = site.run_session(server.settings(), operation_s=operation_s)
    assert outcome.session_mb < MEMORY_CEILING_MB, outcome.session_mb
    return outcome


def test_an_endless_configuration_file_is_cut_at_1_mib_and_the_session_goes_on(
        site: Site) -> None:
    (site.tree / "CONFIG" / f"{UID}_var.ini").write_bytes(b"x")
    outcome = run(site, ("--endless", f"/CONFIG/{UID}_var.ini"))
    assert outcome.ok, outcome
    assert outcome.logged(f"ERROR {UID}_var.ini: larger than 1 MiB; not used")
    # The replies stayed in step: the uploads after the cut transfer all went through.
    assert any((site.tree / "DATA").iterdir())
    assert outcome.session_mb < 20


def test_an_endless_command_file_is_answered_and_deleted(site: Site) -> None:
    (site.tree / "CMD" / f"{UID}_cmd.json").write_bytes(b"[]")
    outcome = run(site, ("--endless", f"/CMD/{UID}_cmd.json"))
    assert outcome.ok, outcome
    assert outcome.results == [f"{UID}_cmd.json: larger than 1 MiB; not executed"]
    assert not (site.tree / "CMD" / f"{UID}_cmd.json").exists()


def test_a_trickling_server_is_a_stalled_one(site: Site) -> None:
    # 80 bytes a second never ends and never makes 1 KiB in an operation timeout of 3 s.
    (site.tree / "CMD" / f"{UID}_cmd.json").write_bytes(b"[]")
    started = time.monotonic()
    outcome = run(site, ("--trickle", f"/CMD/{UID}_cmd.json"), operation_s=3.0)
    elapsed = time.monotonic() - started
    assert not outcome.ok and outcome.retriable, outcome
    assert "timeout" in outcome.reason and "no progress for 3 s" in outcome.reason
    assert elapsed < 30, elapsed


def test_an_endless_listing_stops_at_10000_entries(site: Site) -> None:
    outcome = run(site, ("--endless-listing", "/CONFIG"))
    assert outcome.ok, outcome
    assert outcome.logged("listing stopped at 10000 entries")


def test_a_listing_line_past_8192_bytes_is_skipped_and_replies_stay_in_step(
        site: Site) -> None:
    local = (site.config / "CONFIG" / f"{UID}_var.ini").read_bytes()
    changed = local.replace(b"|60|24", b"|30|48", 1)
    assert changed != local
    (site.tree / "CONFIG" / f"{UID}_var.ini").write_bytes(changed)
    outcome = run(site, ("--long-line", "/CONFIG"))
    assert outcome.ok, outcome
    assert outcome.logged("1 listing lines over 8192 bytes; ignored")
    # The file listed after the long line was seen, fetched whole and applied.
    assert outcome.logged(f"{UID}_var.ini applied")
    assert (site.config / "CONFIG" / f"{UID}_var.ini").read_bytes() == changed
