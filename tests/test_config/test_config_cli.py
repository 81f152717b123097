"""`sunpm config init|validate|show` (docs/formats.md §1.2 Decision, docs/architecture.md §6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from config_support import CASES

import config
from pipeline.cli import main


def test_init_output_passes_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "init", str(tmp_path / "cfg")]) == 0
    uid = config.default_uid()
    names = sorted(str(p.relative_to(tmp_path / "cfg")) for p in (tmp_path / "cfg").rglob("*")
                   if p.is_file())
    assert names == [f"CONFIG/{uid}_config.ini", f"CONFIG/{uid}_daq.csv",
                     f"CONFIG/{uid}_scl.ini", f"CONFIG/{uid}_var.ini", f"DEF/{uid}_IO.csv"]
    capsys.readouterr()
    assert main(["config", "validate", str(tmp_path / "cfg")]) == 0
    assert capsys.readouterr().out == ""
    site = config.load_site(tmp_path / "cfg")
    io_def = site.definitions[f"{uid}_IO.csv"]
    assert [v.name for v in io_def.variables] == [
        "AI1", "AI2", "AI3", "AI4", "DI1", "DI2", "DI3", "DI4", "Relay"]
    assert config.render_definition(io_def).splitlines()[1] == b"1;1;1;1;;AI1;;1;0;mA;0"
    assert config.render_definition(io_def).splitlines()[-1] == b"9;3;1;;;Relay;;1;0;;0"


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    assert main(["config", "init", "--uid", "PLANT-1", str(tmp_path)]) == 0
    conf = tmp_path / "CONFIG/PLANT-1_config.ini"
    conf.write_text("LOG_Level=debug\n")
    assert main(["config", "init", "--uid", "PLANT-1", str(tmp_path)]) == 1
    assert conf.read_text() == "LOG_Level=debug\n"
    assert main(["config", "init", "--uid", "PLANT-1", "--force", str(tmp_path)]) == 0
    assert conf.read_text() != "LOG_Level=debug\n"


def test_init_force_replaces_a_fifo_or_a_link_in_a_file_s_place(tmp_path: Path) -> None:
    """`--force` wrote into what it found: a FIFO blocked the command for ever, a symlink had
    the file it points at overwritten."""
    (tmp_path / "CONFIG").mkdir()
    os.mkfifo(tmp_path / "CONFIG" / "PLANT-1_config.ini")
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("keep me\n")
    (tmp_path / "CONFIG" / "PLANT-1_var.ini").symlink_to(elsewhere)
    done = subprocess.run([sys.executable, "-c", ("import sys; from pipeline.cli import main; "
                           "sys.exit(main())"), "config", "init", "--uid", "PLANT-1", "--force",
                           str(tmp_path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert elsewhere.read_text() == "keep me\n"
    for name in ("PLANT-1_config.ini", "PLANT-1_var.ini"):
        assert (tmp_path / "CONFIG" / name).is_file() and not (tmp_path / "CONFIG" / name).is_symlink()
    assert main(["config", "validate", str(tmp_path)]) == 0


def test_init_refuses_a_second_uid_in_a_configuration_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "init", "--uid", "PLANT-1", str(tmp_path)]) == 0
    before = sorted(p.name for p in (tmp_path / "CONFIG").iterdir())
    capsys.readouterr()
    for force in ([], ["--force"]):
        assert main(["config", "init", "--uid", "PLANT-2", *force, str(tmp_path)]) == 1
        assert capsys.readouterr().err == (
            f"sunpm config init: {tmp_path / 'CONFIG'} holds the configuration of PLANT-1; a "
            "second uid there would be refused by sunpm run (choose another DIR)\n")
    assert sorted(p.name for p in (tmp_path / "CONFIG").iterdir()) == before
    assert main(["config", "validate", str(tmp_path)]) == 0


def test_validate_prints_one_line_per_problem_and_exits_1(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", str(CASES / "ten_mistakes")]) == 1
    out = capsys.readouterr().out
    assert out == (CASES / "ten_mistakes" / "expected.err").read_text()


def test_validate_with_warnings_only_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", str(CASES / "warnings_only")]) == 0
    assert capsys.readouterr().out == (CASES / "warnings_only" / "expected.err").read_text()


def test_show_json_lists_every_variable_parsed(example_site: Callable[[], Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", str(example_site()), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["uid"] == "WPM00BDE4"
    assert shown["settings"]["servers"][0]["password"] == "***"
    assert shown["config_ini"]["FTP_Password"] == "***"
    assert shown["unknown_keys"] == {"VENDOR_Extra": "kept as written"}
    wh = shown["definitions"]["inv_small.csv"]["variables"][5]
    assert wh == {
        "index": 6, "name": "103_WH", "key": "103_WH", "tag": "", "kind": "holding_register",
        "address": 40094, "size": 2, "type": "U32", "byte_order": "big-endian", "byte": None,
        "bit": None, "nbits": None, "scale_factor": "103_WH_SF", "scale_factor_index": 7,
        "coefA": "1", "coefB": "0", "unit": "Wh", "action": 4}
    meter = shown["definitions"]["meter_small.csv"]["variables"][0]
    assert (meter["kind"], meter["byte_order"], meter["coefA"]) == ("input_register", "_W", "0.1")
    assert [d["index"] for d in shown["daq"]["devices"]] == ["IO", "TIC1", "1", "2", "3"]
    assert shown["schedules"]["server2"][0] == {"id": 7, "type": "everyday", "start": "01:30:00",
                                                "interval_min": 30, "count": 3}


def test_show_of_a_bad_site_prints_problems_and_exits_1(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", str(CASES / "protocol_mismatch"), "--json"]) == 1
    assert "is a tic file; device IO needs io" in capsys.readouterr().err


def test_entry_point_in_a_fresh_process_runs_validate() -> None:
    done = subprocess.run([sys.executable, "-c", ("import sys; from pipeline.cli import main; "
                           "sys.exit(main())"), "config", "validate",
                           str(CASES / "spreadsheet_commas")], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1
    assert "\nWPM00BDE4_daq.csv:1: separator: " in done.stdout


@pytest.mark.parametrize("action", ["validate", "show"])
def test_validate_of_a_missing_directory_is_a_path_that_cannot_be_used(
        action: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # docs/cli.md: exit 2 for a file given that cannot be used, not 1 (a configuration judged).
    assert main(["config", action, str(tmp_path / "nope")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"sunpm config {action}: {tmp_path / 'nope'}: no such directory\n"


@pytest.mark.parametrize("action", ["validate", "show"])
def test_folder_without_config_is_not_reported_valid(
        action: str, example_site: Callable[[], Path], capsys: pytest.CaptureFixture[str]) -> None:
    # The path typed one level too deep: CONFIG/ itself, which holds no CONFIG/ folder.
    typo = example_site() / "CONFIG"
    assert main(["config", action, str(typo)]) == 1
    captured = capsys.readouterr()
    message = f"{typo}: no CONFIG/ folder (not a configuration directory)\n"
    assert message in captured.out + captured.err
    assert "valid" not in captured.err.replace("not a configuration", "")


def test_validate_names_the_closest_key_of_a_misspelt_one(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", str(CASES / "misspelt_keys")]) == 0
    out = capsys.readouterr().out
    assert "WPM00BDE4_config.ini:4: FTP_Hots: unknown key (did you mean FTP_Host?); ignored\n" in out


def test_validate_masks_the_password_of_a_url(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A problem quoting a URL with a password (a refused `HTTP_Url`) prints it as
    `config show` does: `user:***@host`."""
    assert main(["config", "init", "--uid", "PLANT-1", str(tmp_path)]) == 0
    conf = tmp_path / "CONFIG/PLANT-1_config.ini"
    conf.write_text(conf.read_text() + "HTTP_Url=https://bob:s3cret@h/x\n"
                    "FOO_Bar=ftp://u:topsecret@h/\n")
    capsys.readouterr()
    assert main(["config", "validate", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "topsecret" not in out
    assert "HTTP_Url: 'https://bob:***@h/x' is not" in out
