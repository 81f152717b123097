"""Command file reading, referenced configuration files and the all-or-nothing apply."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporters.session.commands import parse_command_file, parse_command_message
from exporters.session.config_apply import apply_config_files, recover_config_apply
from exporters.session.config_sync import in_force_view, referenced_files
from store.events import Channel, CommandReceived, CommandResult

SPEC_FILE = b"""[
  {"rpcName": "sunpm.getParameters", "callerId": "c-0001"},
  {"rpcName": "sunpm.writeVariable", "parameters": {"device": "*", "variable": "cmdPwrPercent", "value": 80}, "callerId": "c-0002"},
  {"rpcName": "sunpm.setRelay", "parameters": {"state": 2}, "callerId": "c-0003"},
  {"rpcName": "test.testFunction", "parameters": {"text": "what is the answer ?"}, "callerId": "3d9311ed-0076-4f28-ac59-a2debfa35b86"}
]
"""


def test_spec_command_file_gives_its_four_commands_in_order() -> None:
    entries = parse_command_file(SPEC_FILE, "WPM00BDE4_cmd.json")
    assert all(isinstance(e, CommandReceived) for e in entries)
    assert [(e.rpc_name, e.caller_id) for e in entries] == [
        ("sunpm.getParameters", "c-0001"), ("sunpm.writeVariable", "c-0002"),
        ("sunpm.setRelay", "c-0003"),
        ("test.testFunction", "3d9311ed-0076-4f28-ac59-a2debfa35b86")]
    assert entries[1].parameters == {"device": "*", "variable": "cmdPwrPercent",  # type: ignore[union-attr]
                                     "value": 80}


def test_invalid_json_gives_the_spec_result_text() -> None:
    data = b'[\n  {"rpcName": "sunpm.status"\n    "callerId": 1}\n]'
    (entry,) = parse_command_file(data, "WPM00BDE4_cmd.json")
    assert isinstance(entry, CommandResult)
    assert json.dumps(entry.entry(), separators=(",", ":")) == (
        '{"error":"WPM00BDE4_cmd.json: invalid JSON at line 3 column 5: Expecting \',\' '
        'delimiter","callerId":null}')


@pytest.mark.parametrize(("entry", "text", "caller"), [
    ('3', "WPM00BDE4_cmd.json: entry 2: not a command object", None),
    ('{"callerId": "x"}', "WPM00BDE4_cmd.json: entry 2: rpcName is missing", "x"),
    ('{"rpcName": 5}', "WPM00BDE4_cmd.json: entry 2: rpcName is missing", None),
    ('{"rpcName": "a.b", "callerId": 1.5}',
     "WPM00BDE4_cmd.json: entry 2: callerId must be a string or an integer", None),
])
def test_bad_entries_are_answered_and_do_not_stop_the_others(entry: str, text: str,
                                                             caller: object) -> None:
    data = f'[{{"rpcName": "sunpm.reboot"}}, {entry}, {{"rpcName": "x.y", "callerId": 7}}]'
    first, bad, last = parse_command_file(data.encode(), "WPM00BDE4_cmd.json")
    assert isinstance(first, CommandReceived) and isinstance(last, CommandReceived)
    assert last.caller_id == 7
    assert isinstance(bad, CommandResult) and bad.error == text and bad.caller_id == caller


def test_oversized_command_file_is_not_executed() -> None:
    (entry,) = parse_command_file(b" " * (1 << 20) + b"{}", "WPM00BDE4_cmd.json")
    assert isinstance(entry, CommandResult)
    assert entry.error == "WPM00BDE4_cmd.json: larger than 1 MiB; not executed"


def test_single_object_file_and_mqtt_message_rules() -> None:
    (one,) = parse_command_file(b'{"rpcName": "sunpm.log"}', "f.json")
    assert isinstance(one, CommandReceived) and one.channel is Channel.FILE
    msg = parse_command_message(b'{"rpcName":"test.testFunction","callerId":"c"}', "cmd/t")
    assert isinstance(msg, CommandReceived) and msg.channel is Channel.MQTT
    arr = parse_command_message(b"[]", "cmd/t")
    assert isinstance(arr, CommandResult)
    assert arr.error == "cmd/t: one command object per message, got an array"


@given(st.binary(max_size=300))
def test_any_bytes_give_entries_never_an_exception(data: bytes) -> None:
    for entry in parse_command_file(data, "f.json"):
        assert isinstance(entry, (CommandReceived, CommandResult))


def test_referenced_files_come_from_daq_scl_and_config() -> None:
    files = {
        "CONFIG/U_daq.csv": b"index;interface;name;address;acqPeriod(s);timeout(ms);serialNumber;"
                            b"parameters;category;model;defFile\n"
                            b"1;192.168.1.2;inv;1;600;1000;;;;;inv_small.csv\nIO;;Io;;;;;;;;U_IO.csv\n",
        "CONFIG/U_scl.ini": b"SCRIPT_File[1]=limit.lua\n",
        "CONFIG/U_config.ini": b"FTP_CaFile=/etc/sunpm/CERT/ca.pem\nMQTT_CertFile=\n",
    }
    assert referenced_files(files, "U") == ["DEF/inv_small.csv", "DEF/U_IO.csv",
                                            "SCRIPT/limit.lua", "CERT/ca.pem"]


def test_the_configuration_in_force_is_mirrored_not_the_folder() -> None:
    on_disk = {"CONFIG/U_config.ini": b"rejected edit\n", "CONFIG/U_var.ini": b"new, rejected\n",
               "CONFIG/U_daq.csv": b"in force\n", "DEF/inv.csv": b"edited\n",
               "DEF/spare.csv": b"discovered\n", "SCRIPT/a.lua": b"in force\n"}
    in_force = {"CONFIG/U_config.ini": b"in force\n", "CONFIG/U_daq.csv": b"in force\n",
                "CONFIG/U_scl.ini": b"deleted locally\n", "DEF/inv.csv": b"in force\n",
                "SCRIPT/a.lua": b"in force\n"}
    view, differing = in_force_view(on_disk, in_force, "U")
    assert view == {"CONFIG/U_config.ini": b"in force\n", "CONFIG/U_daq.csv": b"in force\n",
                    "CONFIG/U_scl.ini": b"deleted locally\n", "DEF/inv.csv": b"in force\n",
                    "DEF/spare.csv": b"discovered\n", "SCRIPT/a.lua": b"in force\n"}
    assert differing == ["CONFIG/U_config.ini", "CONFIG/U_scl.ini", "CONFIG/U_var.ini",
                         "DEF/inv.csv"]


def test_apply_writes_every_file_and_leaves_no_staging(tmp_path: Path) -> None:
    (tmp_path / "CONFIG").mkdir()
    (tmp_path / "CONFIG" / "U_var.ini").write_bytes(b"old")
    apply_config_files(tmp_path, {"CONFIG/U_var.ini": b"new", "DEF/a.csv": b"def"})
    assert (tmp_path / "CONFIG" / "U_var.ini").read_bytes() == b"new"
    assert (tmp_path / "DEF" / "a.csv").read_bytes() == b"def"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["U_var.ini", "a.csv"]


def test_apply_keeps_a_name_holding_a_unicode_line_separator_whole(tmp_path: Path) -> None:
    """The marker lists one staged name a line; read back with `splitlines`, a name holding
    U+2028 came back as two, and its `.new` file was never put in place."""
    name = "SCRIPT/x\u2028y.lua"
    apply_config_files(tmp_path, {name: b"x = 1", "CONFIG/U_scl.ini": b"SCRIPT_File[0]=x"})
    assert (tmp_path / name).read_bytes() == b"x = 1"
    assert not list(tmp_path.rglob("*.new")) and not (tmp_path / ".apply").exists()


def test_apply_puts_the_files_a_configuration_names_in_place_before_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    renamed: list[str] = []
    real_replace = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        renamed.append(Path(dst).relative_to(tmp_path).as_posix())
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    apply_config_files(tmp_path, {"CONFIG/U_daq.csv": b"d", "DEF/a.csv": b"a",
                                  "SCRIPT/s.lua": b"s", "CERT/c.pem": b"c"})
    assert renamed == ["CERT/c.pem", "DEF/a.csv", "SCRIPT/s.lua", "CONFIG/U_daq.csv"]


def test_interrupted_apply_is_finished_whole_at_recovery(tmp_path: Path) -> None:
    (tmp_path / "CONFIG").mkdir()
    (tmp_path / "DEF").mkdir()
    (tmp_path / "CONFIG" / "U_var.ini").write_bytes(b"old")
    (tmp_path / "DEF" / "a.csv").write_bytes(b"old def")
    # A crash after staging and the marker, with one rename done.
    (tmp_path / "CONFIG" / "U_var.ini.new").write_bytes(b"new")
    (tmp_path / "DEF" / "a.csv").write_bytes(b"new def")
    (tmp_path / ".apply").write_text("CONFIG/U_var.ini\nDEF/a.csv\n")
    assert recover_config_apply(tmp_path) == ["CONFIG/U_var.ini", "DEF/a.csv"]
    assert (tmp_path / "CONFIG" / "U_var.ini").read_bytes() == b"new"
    assert (tmp_path / "DEF" / "a.csv").read_bytes() == b"new def"
    assert not (tmp_path / ".apply").exists()


def test_staged_files_without_marker_are_never_applied(tmp_path: Path) -> None:
    (tmp_path / "CONFIG").mkdir()
    (tmp_path / "CONFIG" / "U_var.ini").write_bytes(b"old")
    (tmp_path / "CONFIG" / "U_var.ini.new").write_bytes(b"new")
    assert recover_config_apply(tmp_path) == []
    assert (tmp_path / "CONFIG" / "U_var.ini").read_bytes() == b"old"
    assert os.path.exists(tmp_path / "CONFIG" / "U_var.ini.new")


def test_retries_follow_5_10_20_40_then_hourly_and_refusals_wait_an_hour() -> None:
    from exporters.session import retry_delay_s
    assert [retry_delay_s(k, retriable=True) // 60 for k in range(1, 8)] == [5, 10, 20, 40,
                                                                            60, 60, 60]
    assert retry_delay_s(1, retriable=False) == 3600
