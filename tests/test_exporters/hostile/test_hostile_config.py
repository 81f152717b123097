"""The configuration side of a hostile server (docs/formats.md §4, docs/behaviour.md §4.5):
local-only keys, names that are not plain file names, the cap on reported problems, and secrets
that `config show` must not print, misspelt keys included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config import ConfigError, parse_config_ini, parse_daq, parse_definition, parse_scl
from config.config_ini import LOCAL_ONLY_KEYS, local_only_changes
from config.defaults import default_files
from config.errors import Severity
from exporters.transports._base import is_plain_name
from pipeline.cli import main

NAME = "WPMTEST01_config.ini"
LOCAL_VALUES = {"SYSTEM_UpdateCommand": "/usr/local/bin/install-update", "STORE_Path": "/data/st",
                "SD_MirrorPath": "/media/sd", "DIR_Path": "/srv/tree", "DIR2_Path": "/srv/two",
                "SMS_InboxDir": "/var/spool/sms", "WEB_Bind": "192.168.1.5", "WEB_Port": "8081",
                "WEB_User": "operator", "WEB_PasswordHash": "scrypt$16384$8$1$73616c74$68617368",
                "WEB_Hosts": "gw.example", "WEB_TrustedProxies": "10.0.0.1"}


def _ini(values: dict[str, str]) -> bytes:
    return "".join(f"{k}={v}\n" for k, v in values.items()).encode()


def test_every_local_only_key_is_covered() -> None:
    assert set(LOCAL_VALUES) == set(LOCAL_ONLY_KEYS)


@pytest.mark.parametrize("key", sorted(LOCAL_ONLY_KEYS))
def test_a_changed_or_dropped_local_only_key_rejects_the_server_file(key: str) -> None:
    local = _ini(LOCAL_VALUES)
    changed = _ini({**LOCAL_VALUES, key: LOCAL_VALUES[key] + "9"})
    (problem,) = local_only_changes(local, changed, NAME)
    assert problem.severity is Severity.ERROR
    assert problem.line == list(LOCAL_VALUES).index(key) + 1
    assert str(problem).endswith(f": {key}: can only be changed locally; configuration rejected")
    # Left out, the key would fall back to its default once the server's file is applied.
    dropped = _ini({k: v for k, v in LOCAL_VALUES.items() if k != key})
    (problem,) = local_only_changes(local, dropped, NAME)
    assert problem.field == key and problem.line is None


def test_the_same_local_only_values_and_other_changes_pass() -> None:
    local = _ini(LOCAL_VALUES)
    assert local_only_changes(local, _ini({**LOCAL_VALUES, "LOG_Level": "debug"}), NAME) == []
    assert local_only_changes(b"", b"LOG_Level=debug\n", NAME) == []


@pytest.mark.parametrize("key,here,there", [
    ("WEB_Port", "8081", "08081"), ("WEB_Port", "08081", "8081"),
    ("WEB_Port", "8081", "0" * 5000 + "8081"), ("WEB_Bind", "::1", "0:0:0:0:0:0:0:1"),
    ("WEB_Bind", "fe80::1", "FE80::1")])
def test_a_local_only_value_written_otherwise_is_no_change(key: str, here: str,
                                                           there: str) -> None:
    # Compared as the gateway reads them (docs/formats.md §1.1: leading zeros allowed): the
    # same port or address in other words changes nothing, and the file is not rejected.
    local = _ini({**LOCAL_VALUES, key: here})
    assert local_only_changes(local, _ini({**LOCAL_VALUES, key: there}), NAME) == []
    (problem,) = local_only_changes(local, _ini({**LOCAL_VALUES, key: "9" + there}), NAME)
    assert problem.field == key


@given(st.text(max_size=300))
def test_a_plain_name_is_one_every_file_system_takes(name: str) -> None:
    try:
        name.encode()
    except UnicodeEncodeError:
        assert not is_plain_name(name)
        return
    if is_plain_name(name):
        assert name not in (".", "..") and "/" not in name and "\\" not in name
        assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in name)
        assert 0 < len(name.encode()) <= 255


@pytest.mark.parametrize("bad", ["in\0valid.csv", "L" * 10_000 + ".csv", "tab\there.csv",
                                 "é" * 130 + ".csv"])
def test_names_no_file_system_takes_reject_daq_and_scl(bad: str) -> None:
    daq = default_files("WPMTEST01")["CONFIG/WPMTEST01_daq.csv"].decode()
    daq += f"1;192.168.10.2:502;inv;1;600;1000;;;Inverter;M;{bad}\n"
    with pytest.raises(ConfigError) as caught:
        parse_daq(daq.encode(), "WPMTEST01_daq.csv")
    assert any(p.field == "defFile" for p in caught.value.errors)
    assert len(str(caught.value)) < 300
    with pytest.raises(ConfigError):
        parse_scl(f"SCRIPT_File[1]={bad[:-4]}.lua\n".encode(), "WPMTEST01_scl.ini")


def test_problems_past_1000_are_counted_not_kept() -> None:
    data = b"modbusTCP;x;y;z\n" + b"1;3;100;U16;;;;1;0;;0\n" * 2 + b"x\n" * 5000
    with pytest.raises(ConfigError) as caught:
        parse_definition(data, "bad.csv")
    problems = caught.value.problems
    assert len(problems) == 1001
    assert str(problems[-1]).startswith("bad.csv: ... and ") and str(problems[-1]).endswith(
        " more")
    assert problems[-1].severity is Severity.ERROR


def test_config_show_hides_secrets_of_misspelt_and_unknown_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for rel, data in default_files("WPMTEST01").items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    (tmp_path / "CONFIG" / NAME).write_text(
        "FTP_Password=plain-one\nFTP2_Pasword=hunter2\nMQTT_Passwd=swordfish\n"
        "API_Token=t0k3n\nMODEM_Pin=12ab\nFTP_Passive=1\n")
    assert main(["config", "show", str(tmp_path), "--json"]) == 0
    out = capsys.readouterr().out
    for secret in ("plain-one", "hunter2", "swordfish", "t0k3n", "12ab"):
        assert secret not in out
    shown = json.loads(out)
    assert shown["unknown_keys"]["FTP2_Pasword"] == "***"
    assert shown["config_ini"]["FTP_Passive"] == "1"


@pytest.mark.parametrize("server_type", ["ftp", "webdav"])
def test_config_show_hides_the_password_of_a_url(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], server_type: str) -> None:
    """`HTTP_Url` refuses userinfo, but the refused value is quoted in its problem line, and
    an unknown key may hold any URL: the password is hidden, the rest shown."""
    for rel, data in default_files("WPMTEST01").items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    (tmp_path / "CONFIG" / NAME).write_text(
        f"SERVER_Type={server_type}\nHTTP_Url=https://user:s3cret@dav.example.com/up/\n"
        "HTTP2_Url=https://bob:hunter2@dav.example.com:8443/x\nFTP_Host=files.example.com\n"
        "FTP_Login=u\nFTP_Password=p\nBACKUP_Link=sftp://al:pw%40x9@h.example.com/\n")
    code = main(["config", "show", str(tmp_path), "--json"])
    captured = capsys.readouterr()
    out = captured.out + captured.err
    for secret in ("s3cret", "hunter2", "pw%40x9", "x9@"):
        assert secret not in out
    assert "https://user:***@dav.example.com/up/" in out
    if server_type == "ftp":
        assert code == 0
        shown = json.loads(captured.out)
        assert shown["unknown_keys"]["BACKUP_Link"] == "sftp://al:***@h.example.com/"
        assert "https://bob:***@dav.example.com:8443/x" in "\n".join(shown["warnings"])


@pytest.mark.parametrize("value", ["/etc/passwd", "/dev/../etc/shadow", "ttyUSB0", "/dev/"])
def test_serial_ports_must_name_a_device_under_dev(value: str) -> None:
    for key in ("MODEM_Port", "TIC_Port"):
        with pytest.raises(ConfigError) as caught:
            parse_config_ini(f"{key}={value}\n".encode(), NAME)
        assert str(caught.value) == (f"{NAME}:1: {key}: '{value}' is not a device under /dev/; "
                                     "file rejected")
    daq = ("port;speed;dataBits;parity;stopBits;wires;protocol;interFrame(ms);forwardTcpPort;"
           f"path\nSERIAL1;9600;8;N;1;2;modbusRTU;0;;{value}\n")
    with pytest.raises(ConfigError) as caught:
        parse_daq(daq.encode(), "WPMTEST01_daq.csv")
    assert any(p.field == "path" for p in caught.value.errors)


def test_serial_devices_under_dev_pass() -> None:
    parsed = parse_config_ini(b"MODEM_Port=/dev/ttyACM0\nTIC_Port=/dev/serial/by-id/tic\n", NAME)
    assert parsed.value.settings("WPMTEST01").modem_port == "/dev/ttyACM0"


def test_a_server_file_that_cannot_be_read_is_said_so_not_to_change_local_only_keys() -> None:
    # A Latin-1 file keeping every local-only value: its encoding rejects it, and that is all
    # there is to say (read as all defaults it was also said to change WEB_Port...).
    local = _ini(LOCAL_VALUES)
    latin1 = _ini({**LOCAL_VALUES, "FTP_User": "op\xe9rateur"}).decode().encode("latin-1")
    assert local_only_changes(local, latin1, NAME) == []
    with pytest.raises(ConfigError) as caught:
        parse_config_ini(latin1, NAME)
    assert [str(p) for p in caught.value.errors] == [
        f"{NAME}:{len(LOCAL_VALUES) + 1}: encoding: not valid UTF-8 (byte 0xE9); file rejected"]
