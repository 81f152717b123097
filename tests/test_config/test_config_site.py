"""The site (docs/formats.md §3, §6 cross-file checks): bad-input cases as data, planted mistakes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from config_support import CASES

import config
import config.defaults
from config import ConfigError, Severity

CASE_DIRS = sorted(p.name for p in CASES.iterdir() if p.is_dir())


def _snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASE_DIRS)
def test_bad_input_case_reports_exactly_its_expected_messages(
        case: str, request: pytest.FixtureRequest) -> None:
    directory = CASES / case
    if request.config.getoption("--update-golden"):
        lines = "".join(f"{p}\n" for p in config.check_site(directory))
        (directory / "expected.err").write_text(lines, encoding="utf-8")
    expected = (directory / "expected.err").read_text(encoding="utf-8").splitlines()
    before = _snapshot(directory)
    problems = config.check_site(directory)
    assert [str(p) for p in problems] == expected
    has_error = any(p.severity is Severity.ERROR for p in problems)
    if has_error:
        with pytest.raises(ConfigError) as exc:
            config.load_site(directory)
        assert [str(p) for p in exc.value.problems] == expected
    else:
        assert [str(w) for w in config.load_site(directory).warnings] == expected
    assert _snapshot(directory) == before  # checking never writes anything


def test_ten_planted_mistakes_are_all_reported_with_file_line_and_field() -> None:
    problems = config.check_site(CASES / "ten_mistakes")
    found = {(p.file, p.line, p.field) for p in problems}
    planted = {
        ("WPM00BDE4_config.ini", 17, "line"),
        ("WPM00BDE4_config.ini", 18, "LOG_Level"),
        ("WPM00BDE4_var.ini", 4, "Id"),
        ("WPM00BDE4_daq.csv", 11, "defFile"),
        ("WPM00BDE4_daq.csv", 12, "address"),
        ("WPM00BDE4_daq.csv", 13, "interface"),
        ("WPM00BDE4_daq.csv", 14, "name"),
        ("WPM00BDE4_scl.ini", 2, "SCRIPT_File[1]"),
        ("inv_small.csv", 7, "Index"),
        ("WPM00BDE4_SunSpec_inverter_SMA_Solar_Inverter_9301_modbusTCP.csv", 27, "Info3"),
    }
    assert planted <= found
    assert len(planted) == 10


def test_example_site_loads_with_every_file(example_site: Callable[[], Path]) -> None:
    site = config.load_site(example_site())
    assert site.uid == "WPM00BDE4"
    # The example keeps vendor keys of its own: kept, and reported so a typo cannot hide.
    assert [str(w) for w in site.warnings] == [
        "WPM00BDE4_config.ini:17: VENDOR_Extra: unknown key; ignored",
        "WPM00BDE4_var.ini:2: VENDOR_Note: unknown key; ignored"]
    assert site.settings.servers[0].host == "is.example.net"
    assert sorted(site.definitions) == sorted([
        "WPM00BDE4_IO.csv", "WPM00BDE4_TIC_LINKY.csv", "inv_small.csv", "meter_small.csv",
        "WPM00BDE4_SunSpec_inverter_SMA_Solar_Inverter_9301_modbusTCP.csv"])
    files = site.files()
    assert set(files) == {
        "CONFIG/WPM00BDE4_config.ini", "CONFIG/WPM00BDE4_var.ini", "CONFIG/WPM00BDE4_daq.csv",
        "CONFIG/WPM00BDE4_scl.ini", "SCRIPT/Test script 1.lua", "SCRIPT/Test script 2.lua",
        *(f"DEF/{name}" for name in site.definitions)}
    for rel, data in files.items():
        assert (site.directory / rel).read_bytes() == data
    assert site.definition_of(site.daq.device("2")) is site.definitions["meter_small.csv"]
    assert site.scripts.files == ("Test script 1.lua", "Test script 2.lua")


def test_device_on_a_port_without_driver_keeps_its_file_unparsed() -> None:
    site = config.load_site(CASES / "no_driver_port")
    assert "DEF/smanet_opaque.bin" in site.files()
    assert "smanet_opaque.bin" not in site.definitions
    assert [d.index for d in site.polled_devices] == ["IO", "TIC1", "1", "2", "3"]


def test_sci_ini_is_read_when_there_is_no_scl_ini(example_site: Callable[[], Path]) -> None:
    directory = example_site()
    os.rename(directory / "CONFIG/WPM00BDE4_scl.ini", directory / "CONFIG/WPM00BDE4_sci.ini")
    site = config.load_site(directory)
    assert site.scripts.files == ("Test script 1.lua", "Test script 2.lua")
    assert "CONFIG/WPM00BDE4_sci.ini" in site.files()


def test_uid_option_chooses_among_several_configurations() -> None:
    site = config.load_site(CASES / "several_uids", uid="WPM00C44F")
    assert site.uid == "WPM00C44F" and site.daq.devices == ()


@pytest.mark.parametrize("uid", ["../WPM00C44F", "WPM_00C44F", "", "x" * 33])
def test_a_uid_that_is_not_one_names_no_file(tmp_path: Path, uid: str) -> None:
    (tmp_path / "CONFIG").mkdir()
    (tmp_path / "WPM00C44F_config.ini").write_bytes(b"repeated=1\nrepeated=1\n")
    with pytest.raises(ConfigError) as caught:
        config.load_site(tmp_path, uid=uid)
    (problem,) = caught.value.problems
    assert str(problem) == f"CONFIG: uid: '{uid}' is not 1..32 of A-Z a-z 0-9 -"
    assert config.check_site(tmp_path, uid) == [problem]


def test_a_uid_without_files_beside_other_configurations_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "CONFIG").mkdir()
    (tmp_path / "CONFIG" / "WPM00C44F_config.ini").write_bytes(b"")
    (tmp_path / "CONFIG" / "WPM00BDE4_var.ini").write_bytes(b"")
    assert [str(p) for p in config.check_site(tmp_path, "WPM00C44E")] == [
        "CONFIG: uid: no file of 'WPM00C44E' (configurations here: WPM00C44F)"]
    # Any file of its own will do (a missing config.ini reads as empty), as will no other uid.
    assert config.check_site(tmp_path, "WPM00BDE4") == []
    (tmp_path / "CONFIG" / "WPM00C44F_config.ini").unlink()
    assert config.load_site(tmp_path, "WPM00C44E").uid == "WPM00C44E"


def test_every_unreadable_file_is_reported_with_the_other_problems(tmp_path: Path) -> None:
    uid = "WPM00BDE4"
    for rel, data in config.defaults.default_files(uid).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    # A folder where a file should be (an unpacked archive, a copy gone wrong).
    for rel in (f"CONFIG/{uid}_var.ini", f"DEF/{uid}_IO.csv", "SCRIPT/a.lua"):
        (tmp_path / rel).unlink(missing_ok=True)
        (tmp_path / rel).mkdir(parents=True)
    (tmp_path / "CONFIG" / f"{uid}_scl.ini").write_bytes(b"SCRIPT_File[0]=a.lua\n")
    with (tmp_path / "CONFIG" / f"{uid}_config.ini").open("ab") as cfg:
        cfg.write(b"LOG_Level=loud\n")
    assert [str(p) for p in config.check_site(tmp_path)] == [
        f"CONFIG/{uid}_var.ini: file: cannot be read (Is a directory); file rejected",
        "SCRIPT/a.lua: file: cannot be read (Is a directory); file rejected",
        f"DEF/{uid}_IO.csv: file: cannot be read (Is a directory); file rejected",
        f"{uid}_config.ini:2: LOG_Level: 'loud' is not one of debug, info, warning, error; "
        "default info used"]


def test_empty_config_folder_is_a_valid_site_of_the_default_uid(tmp_path: Path) -> None:
    (tmp_path / "CONFIG").mkdir()
    site = config.load_site(tmp_path)
    assert site.uid == config.default_uid() and site.daq.devices == ()
    assert site.warnings == ()


@pytest.mark.parametrize("layout", ["empty", "files_one_level_down", "not_a_directory"])
def test_directory_without_config_folder_is_not_a_site(tmp_path: Path, layout: str) -> None:
    directory = tmp_path / "site"
    if layout == "files_one_level_down":
        directory.mkdir()
        (directory / "WPM00BDE4_config.ini").write_text("SERVER_Type=none\n")
    elif layout == "empty":
        directory.mkdir()
    else:
        directory.write_text("not a folder\n")
    with pytest.raises(ConfigError) as exc:
        config.load_site(directory)
    expected = (f"{directory}: directory: is not a directory" if layout == "not_a_directory"
                else f"{directory}: no CONFIG/ folder (not a configuration directory)")
    assert [str(p) for p in exc.value.problems] == [expected]
    assert [str(p) for p in config.check_site(directory)] == [expected]


def test_a_rejected_file_changes_nothing_in_a_loaded_site(
        example_site: Callable[[], Path]) -> None:
    directory = example_site()
    good = config.load_site(directory)
    daq = directory / "CONFIG/WPM00BDE4_daq.csv"
    daq.write_bytes(daq.read_bytes().replace(b"inv_a;126", b"inv_a;999"))
    with pytest.raises(ConfigError):
        config.load_site(directory)
    assert good.daq.device("1").address == 126
    shutil.copy(CASES / "ten_mistakes/CONFIG/WPM00BDE4_daq.csv", daq)
    assert config.check_site(directory)


def test_default_uid_from_the_mac_rules(tmp_path: Path) -> None:
    net = tmp_path / "net"
    for name, mac in (("eth1", "00:8d:00:00:bd:e4"), ("eth0", "02:42:ac:11:00:02"),
                      ("lo", "00:00:00:00:00:00")):
        (net / name).mkdir(parents=True)
        (net / name / "address").write_text(mac + "\n")
    routes = tmp_path / "route"
    routes.write_text("Iface\tDestination\tGateway\neth1\t00000000\t0100A8C0\n")
    assert config.default_uid(net, routes) == "WPM00BDE4"
    routes.write_text("Iface\tDestination\tGateway\n")
    assert config.default_uid(net, routes) == "WPM110002"
    assert config.default_uid(tmp_path / "none", routes) == "WPM000000"
    assert config.uid_from_mac("00:8D:00:00:BD:E4") == "WPM00BDE4"


def test_certificates_the_server_types_use_are_loaded(example_site: Callable[[], Path]) -> None:
    directory = example_site()
    conf = directory / "CONFIG/WPM00BDE4_config.ini"
    conf.write_text(conf.read_text() + "MQTT2_CaFile=ca.pem\n")
    (directory / "CERT/ca.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    site = config.load_site(directory)
    assert site.files()["CERT/ca.pem"] == b"-----BEGIN CERTIFICATE-----\n"
    assert site.settings.servers[1].ca_file == "ca.pem"


def _tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != "expected.err"}


@pytest.mark.parametrize("case", CASE_DIRS)
def test_a_site_given_as_file_bytes_reads_as_its_directory(case: str) -> None:
    directory = CASES / case
    assert [str(p) for p in config.check_site_files(_tree(directory))] == \
        [str(p) for p in config.check_site(directory)]


# The uid is the directory's (the running gateway's): a change cannot add a second one.
@pytest.mark.parametrize("case", [case for case in CASE_DIRS if case != "several_uids"])
def test_a_change_laid_over_a_directory_reads_as_the_changed_directory(
        case: str, tmp_path: Path) -> None:
    """A valid site's own files laid over each case's tree give that case's problems, and the
    directory under the change is read, never written."""
    changed = CASES / case
    base = tmp_path / "base"
    shutil.copytree(CASES / "io_module_reference", base)
    before = _tree(base)
    change = {rel: data for rel, data in _tree(changed).items() if rel not in before
              or before[rel] != data}
    gone = [rel for rel in before if rel not in _tree(changed)]
    for rel in gone:  # a change adds and replaces files; the comparison tree loses them too
        (base / rel).unlink()
    expected = [str(p) for p in config.check_site(changed)]
    assert [str(p) for p in config.check_site_change(base, change)] == expected
    assert _tree(base) == {rel: data for rel, data in before.items() if rel not in gone}


def test_a_loaded_site_is_the_same_from_its_files(example_site: Callable[[], Path]) -> None:
    directory = example_site()
    site = config.load_site(directory)
    from_files = config.load_site_files(_tree(directory), site.uid, directory=directory)
    assert from_files == site
    # Only what the site reads is in `loaded`: a stray file in the mapping changes nothing.
    stray = config.load_site_files({**_tree(directory), "DEF/unused.csv": b"x"}, site.uid,
                                   directory=directory)
    assert stray == site


def test_referenced_files_name_the_definitions_scripts_and_certificates() -> None:
    files = {
        "CONFIG/U_daq.csv": b"index;interface;name;address;acqPeriod(s);timeout(ms);"
                            b"serialNumber;parameters;category;model;defFile\n"
                            b"1;192.168.1.2;inv;1;600;1000;;;;;inv_small.csv\n"
                            b"bad row;;;;;;;;;;back\\slash.csv\n",
        "CONFIG/U_scl.ini": b"SCRIPT_File[1]=limit.lua\n",
        "CONFIG/U_config.ini": b"FTP_CaFile=/etc/sunpm/CERT/ca.pem\nMQTT_CertFile=\n",
    }
    assert config.site.referenced_files(files, "U") == [
        ("DEF", "inv_small.csv", "daq.csv"), ("DEF", "back\\slash.csv", "daq.csv"),
        ("SCRIPT", "limit.lua", "scl.ini"), ("CERT", "ca.pem", "config.ini")]
    assert config.site.referenced_files({}, "U") == []


def test_a_file_that_is_no_regular_file_or_past_its_cap_is_refused_unread(tmp_path: Path) -> None:
    """A FIFO in a file's place hung `config validate` (and a gateway loading the folder)
    waiting for a writer; a link to a device (/dev/zero) or a file of gigabytes was read into
    memory whole. Each is one error, read no further than its folder's cap (docs/behaviour.md
    §4.5's caps), and the other files are still checked."""
    uid = "WPM00BDE4"
    for rel, data in config.defaults.default_files(uid).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    fifo = tmp_path / "CONFIG" / f"{uid}_var.ini"
    fifo.unlink()
    os.mkfifo(fifo)
    (tmp_path / "CONFIG" / f"{uid}_scl.ini").write_bytes(b"SCRIPT_File[0]=a.lua\n")
    (tmp_path / "SCRIPT").mkdir()
    # /dev/null, not /dev/zero: were the file read whole, the test must not fill memory.
    (tmp_path / "SCRIPT" / "a.lua").symlink_to("/dev/null")
    (tmp_path / "CONFIG" / f"{uid}_daq.csv").write_bytes(
        config.defaults.default_files(uid)[f"CONFIG/{uid}_daq.csv"] + b"#" * (1 << 20))
    with (tmp_path / "CONFIG" / f"{uid}_config.ini").open("ab") as cfg:
        cfg.write(b"LOG_Level=loud\n")
    found: list[list[str]] = []
    checking = threading.Thread(
        target=lambda: found.append([str(p) for p in config.check_site(tmp_path)]), daemon=True)
    checking.start()
    checking.join(30)
    if checking.is_alive():
        # Blocked opening the FIFO: a writer that comes and goes lets it through.
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        checking.join(30)
    assert found, "check_site blocked on a FIFO"
    problems = found[0]
    assert problems[:3] == [
        f"CONFIG/{uid}_var.ini: file: not a regular file; file rejected",
        f"CONFIG/{uid}_daq.csv: file: larger than 1 MiB; file rejected",
        "SCRIPT/a.lua: file: not a regular file; file rejected"]
    assert problems[3] == (f"{uid}_config.ini:2: LOG_Level: 'loud' is not one of debug, info, "
                           "warning, error; default info used")


def test_a_link_to_a_missing_file_is_no_missing_file(tmp_path: Path) -> None:
    """A config.ini linked to an unmounted card read as a missing file: the site ran on every
    default (no server), said valid."""
    (tmp_path / "CONFIG").mkdir()
    (tmp_path / "CONFIG" / "WPM00BDE4_config.ini").symlink_to(tmp_path / "card" / "config.ini")
    assert [str(p) for p in config.check_site(tmp_path)] == [
        "CONFIG/WPM00BDE4_config.ini: file: cannot be read (a link to a missing file); "
        "file rejected"]


def test_a_file_named_in_another_case_is_pointed_at(example_site: Callable[[], Path]) -> None:
    """`Inv_Small.csv` in daq.csv, `inv_small.csv` on disk: the error names the file there, from
    the folder, from its files given as bytes and from a change laid over the folder alike."""
    directory = example_site()
    (directory / "DEF/inv_small.csv").rename(directory / "DEF/Inv_Small.csv")
    script = directory / "SCRIPT/Test script 1.lua"
    script.rename(script.with_name("test script 1.lua"))
    expected = [
        "WPM00BDE4_daq.csv:12: defFile: 'inv_small.csv' is missing from /DEF (there is "
        "'Inv_Small.csv': names are case-sensitive); file rejected",
        "WPM00BDE4_scl.ini:1: SCRIPT_File[0]: 'Test script 1.lua' is missing from /SCRIPT "
        "(there is 'test script 1.lua': names are case-sensitive); file rejected"]
    assert [str(p) for p in config.check_site(directory) if "missing" in p.message] == expected
    assert [str(p) for p in config.check_site_files(_tree(directory))
            if "missing" in p.message] == expected
    daq = directory / "CONFIG/WPM00BDE4_daq.csv"
    change = {"CONFIG/WPM00BDE4_daq.csv": daq.read_bytes() + b"\n"}
    assert [str(p) for p in config.check_site_change(directory, change)
            if "missing" in p.message] == expected


def test_a_config_file_named_in_another_case_rejects_the_site(
        example_site: Callable[[], Path]) -> None:
    """`wpm00bde4_daq.csv` read as missing ran the site on no device at all, said nowhere."""
    directory = example_site()
    daq = directory / "CONFIG/WPM00BDE4_daq.csv"
    daq.rename(daq.with_name("wpm00bde4_daq.csv"))
    expected = ["wpm00bde4_daq.csv: file: not read: this configuration's file is "
                "'WPM00BDE4_daq.csv' (names are case-sensitive); rename it"]
    assert [str(p) for p in config.check_site(directory)
            if p.severity is Severity.ERROR] == expected
    assert [str(p) for p in config.check_site_files(_tree(directory))
            if p.severity is Severity.ERROR] == expected
    # Both there (a copy): the right one is read, the other one is no configuration file.
    shutil.copy(directory / "CONFIG/wpm00bde4_daq.csv", daq)
    assert not [p for p in config.check_site(directory) if p.severity is Severity.ERROR]
