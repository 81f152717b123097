"""SMS commands through the inbox folder (docs/formats.md §13): the grammar, allowed numbers,
replies (none on success, the error on failure, six parts for `status`)."""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from pathlib import Path

import pytest
from _service_plant import reconfigure, running_gateway, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st
from test_commands import Plant
from waiting import wait_until

from config.decimal_text import DECIMAL_SYNTAX
from pipeline.clock import NS_PER_S, ManualClock
from pipeline.service.commands import CommandExecutor
from pipeline.service.sms import (
    SmsCommands,
    SmsError,
    SmsInbox,
    parse_sms,
    split_arguments,
    status_parts,
)
from store import Log, StoreOptions

pytestmark = pytest.mark.usefixtures("no_task_left_behind")

T0 = 1_767_571_200 * NS_PER_S


@pytest.mark.parametrize(("text", "rpc", "parameters"), [
    ("connect", "sunpm.connect", {}),
    (" CONNECT=2 ", "sunpm.connect", {"server": 2}),
    ("factory", "sunpm.factory", {"confirm": True}),
    ("log=Serial2:30", "sunpm.log", {"interface": "serial2", "duration": 30}),
    ("setrelay=1", "sunpm.setRelay", {"state": 1}),
    ("writevariable=*:cmdPwrPercent:80", "sunpm.writeVariable",
     {"device": "*", "variable": "cmdPwrPercent", "value": 80}),
    ("writevariable=inv_a:12:0.5:1", "sunpm.writeVariable",
     {"device": "inv_a", "variable": "12", "value": 0.5, "raw": True}),
    ("ftp=1:SFTP:203.0.113.10:22:plant42:s3cr\\:et:/", "sunpm.ftp",
     {"server": 1, "type": "sftp", "host": "203.0.113.10", "port": 22, "user": "plant42",
      "password": "s3cr:et", "rootDir": "/"}),
    ("apn=plant.m2m", "sunpm.apn", {"apn": "plant.m2m"}),
    ("discoverdevices=ethernet1:192.168.10.23:502:1:240:5:1000", "sunpm.discoverDevices",
     {"interface": "ethernet1", "ip": "192.168.10.23", "port": 502, "firstAddress": 1,
      "lastAddress": 240, "maxDevices": 5, "timeout": 1000, "protocol": "sunspec"}),
    ("updatefirmware=ftp://203.0.113.30:2121/wgapp_1.2.0.spm:::9e107d9d372bb6826bd81d3542a419d6:",
     "sunpm.updateFirmware", {"url": "ftp://203.0.113.30:2121/wgapp_1.2.0.spm",
                              "checksum": "9e107d9d372bb6826bd81d3542a419d6"}),
    # The URL alone, or fewer than four fields after it: the fields are not cut out of it.
    ("updatefirmware=https://updates.example/wgapp_1.2.0.spm", "sunpm.updateFirmware",
     {"url": "https://updates.example/wgapp_1.2.0.spm"}),
    ("updatefirmware=ftp://u:p@203.0.113.30:2121/x.spm:::9e10", "sunpm.updateFirmware",
     {"url": "ftp://u:p@203.0.113.30:2121/x.spm", "checksum": "9e10"}),
    ("updatefirmware=sftp://203.0.113.30/x.spm:plant:s3cr\\:et", "sunpm.updateFirmware",
     {"url": "sftp://203.0.113.30/x.spm", "login": "plant", "password": "s3cr:et"}),
])
def test_grammar(text: str, rpc: str, parameters: dict[str, object]) -> None:
    assert parse_sms(text) == (rpc, parameters)


@pytest.mark.parametrize("text", ["NaN", "-Infinity", "inf", "1e999999999", "1" * 40])
def test_a_number_argument_no_command_can_take_stays_text(text: str) -> None:
    """Read as text (the command then refuses it by name), never as NaN or infinity (which no
    journal can hold) nor as an integer of a billion digits."""
    started = time.process_time()          # CPU seconds: a loaded box does not stretch them
    assert parse_sms(f"setrelay={text}") == ("sunpm.setRelay", {"state": text})
    assert parse_sms(f"writevariable=*:x:{text}")[1]["value"] == text
    assert time.process_time() - started < 1.0
    assert parse_sms("writevariable=*:x:1e29")[1]["value"] == 10**29


@pytest.mark.parametrize("text", ["\uff11", "1_0", "\u0663", "+1", "\u00b2", "0x1"])
def test_a_number_argument_is_ascii_digits_as_in_files(text: str) -> None:
    """docs/formats.md §1.1's number syntax: `Decimal()` alone read a full-width `1`, `1_0`
    and Arabic-Indic digits as numbers, so `connect=` a full-width 1 connected to server 1. Kept as text,
    the command refuses them by name."""
    assert parse_sms(f"connect={text}") == ("sunpm.connect", {"server": text})
    assert parse_sms(f"log=serial2:{text}")[1]["duration"] == text
    assert parse_sms(f"writevariable=*:x:{text}")[1]["value"] == text
    assert parse_sms("connect= 2 ")[1] == {"server": 2}


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.one_of(st.sampled_from("0123456789-+_.eE \t"),
                                  st.characters(categories=["Nd", "No"])), max_size=10))
def test_only_ascii_number_text_becomes_a_number(text: str) -> None:
    duration = parse_sms(f"log=serial2:{text}")[1].get("duration")
    if isinstance(duration, (int, float)):
        assert DECIMAL_SYNTAX.fullmatch(text.strip(" \t"))
        assert duration == Decimal(text.strip(" \t"))


async def test_ftp_port_and_numbers_sent_by_sms_are_refused_by_their_key(tmp_path: Path) -> None:
    """`ftp=...:22.5` answered `ftp: port must be a string, got 22.5`; a full-width
    `21` and `1_000` were taken as 21 and 1000 and written to config.ini. Every bad port is now said by its key,
    as config validation says it, and config.ini is left as it was."""
    sender = "+33612345678"
    async with running_gateway(tmp_path, inverters=0) as plant:
        sms = SmsCommands(lambda: [sender], plant.gateway.commands)
        path = plant.config_dir / "CONFIG" / f"{plant.gateway.site.uid}_config.ini"
        before = path.read_bytes()
        for port in ("22.5", "\uff12\uff11", "1_000", "70000", "+21"):
            assert await sms.replies(sender, f"ftp=1:sftp:203.0.113.10:{port}:u:p:/") == [
                f"ftp: FTP_Port: '{port}' is not an integer from 1 to 65535"], port
        assert await sms.replies(sender, "ftp=2:sftp:203.0.113.10:0:u:p:/") == [
            "ftp: FTP2_Port: '0' is not an integer from 1 to 65535"]
        assert await sms.replies(sender, "discoverdevices=ethernet1:10.0.0.5:\uff15\uff10\uff12") == [
            'discoverDevices: port must be an integer, got "\uff15\uff10\uff12"']
        # `"²".isdigit()` holds and `int("²")` raises: an internal error, before.
        assert await sms.replies(sender, "discoverdevices=ethernet1:10.0.0.5:²") == [
            'discoverDevices: port must be an integer, got "²"']
        assert await sms.replies(sender, "writevariable=IO:\u00b2:1") == [
            "writeVariable: Io: unknown variable '\u00b2'"]
        assert path.read_bytes() == before
        assert await sms.replies(sender, "ftp=1:sftp:203.0.113.10:2222:u:p:/") == []
        assert b"FTP_Port=2222\n" in path.read_bytes()


def test_grammar_errors_and_escapes() -> None:
    assert split_arguments("a:b\\:c:d\\\\") == ["a", "b:c", "d\\"]
    with pytest.raises(SmsError, match="unknown command 'fly'"):
        parse_sms("fly=1")
    with pytest.raises(SmsError, match=r"setRelay: too many arguments \(2, at most 1\)"):
        parse_sms("setrelay=1:2")


def write_sms(inbox: Path, name: str, sender: str, text: str) -> None:
    (inbox / f"{name}.sms").write_text(f"{sender}\n{text}\n")


async def test_inbox_obeys_allowed_numbers_and_replies(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sunpm")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    plant = Plant()
    clock = ManualClock(T0)
    write_sms(inbox, "001", "+33 6 12 34 56 78", "getparameters")
    write_sms(inbox, "002", "+33700000000", "setrelay=1")
    write_sms(inbox, "003", "+33612345678", "setrelay=2")
    write_sms(inbox, "004", "+33612345678", "status")
    write_sms(inbox, "005", "+33612345678", "fly")
    async with await Log.open(tmp_path / "store", StoreOptions(flush_s=0.01)) as log:
        executor = CommandExecutor(log, plant, clock)
        running = asyncio.create_task(executor.run())
        sms = SmsInbox(lambda: (str(inbox), ["+33612345678"]), executor, clock)
        task = asyncio.create_task(sms.run())
        await wait_until(lambda: not list(inbox.glob("*.sms")), 10)
        task.cancel()
        running.cancel()
        await asyncio.gather(task, running, return_exceptions=True)
    replies = {p.name: p.read_text() for p in sorted((inbox / "out").iterdir())}
    assert plant.parameter_requests == 1 and plant.relay == []   # +337... was not obeyed
    # The LOG file line reads `WARNING sms: message from ...` (docs/formats.md §13.1, §11).
    assert [(r.name, r.getMessage()) for r in caplog.records if "ignored" in r.getMessage()] == [
        ("sunpm.sms", "message from +33700000000 ignored: number not allowed")]
    assert set(replies) == {"003.1.sms", "005.1.sms"} | {f"004.{k}.sms" for k in range(1, 7)}
    assert replies["003.1.sms"] == "+33612345678\nsetRelay: state must be 0 or 1, got 2\n"
    assert replies["005.1.sms"] == "+33612345678\nunknown command 'fly'\n"
    assert replies["004.1.sms"].startswith("+33612345678\n1/6\nuid=WPMTEST01")
    assert replies["004.6.sms"].startswith("+33612345678\n6/6\nsrv=2\n")


def test_status_in_six_parts_of_at_most_160_characters() -> None:
    status = {"uid": "WPM00BDE4", "version": "1.0.0", "date": "21/02/05-10:15:00",
              "timeZone": "Europe/Paris", "uptimeS": 86400,
              "clock": {"synced": True, "ntp": "192.168.10.1", "offsetS": 0.012},
              "modem": {"state": "ready", "rssiDbm": -71}, "ip": "192.168.10.37",
              "servers": [{"srv": 1, "status": "idle", "type": "sftp",
                           "mode": "strategy_wsun1_compliant", "addr": "203.0.113.10",
                           "port": 22, "last": "05/02 10:15 OK", "backlog": 0}],
              "scripts": [{"name": "limit", "file": "limit.lua", "enabled": True},
                          {"name": "off", "file": "off.lua", "enabled": False}],
              "devices": [{"index": "1", "state": "ok", "storeBytes": 123456,
                           "quotaBytes": 52428800},
                          {"index": "TIC1", "state": "fail", "storeBytes": 5,
                           "quotaBytes": 52428800}],
              "alarms24h": 2}
    parts = status_parts(status)
    assert len(parts) == 6 and all(len(p) <= 160 for p in parts)
    assert parts[0] == "1/6\nuid=WPM00BDE4\nver=1.0.0\ntime=21/02/05-10:15:00\ntz=Europe/Paris\n" \
                       "up=86400"
    assert parts[1] == "2/6\nclock=synced\nntp=192.168.10.1\nmodem=ready\nrssi=-71\n" \
                       "ip=192.168.10.37"
    # The meter is configured but not read: absent.
    assert parts[2] == "3/6\ndevices=2\nok=1\nfail=1\ntic=absent\nscripts=1/2"
    assert parts[3] == "4/6\nstore=1/100\nfull=0\nbacklog1=0\nbacklog2=0\nalarms=2"
    assert parts[4] == ("5/6\nsrv=1\nstatus=idle\ntype=sftp\nmode=strategy_wsun1_compliant\n"
                        "addr=203.0.113.10\nport=22\nlast=05/02 10:15 OK")
    assert parts[5] == ("6/6\nsrv=2\nstatus=disabled\ntype=none\nmode=none\naddr=\nport=\n"
                        "last=never")


async def test_sms_keys_apply_at_a_reload_without_a_restart(tmp_path: Path) -> None:
    """`SMS_InboxDir` and `SMS_AllowedNumbers` set, changed and cleared by a configuration
    reload take effect on the running gateway (neither is a restart key)."""
    inbox = tmp_path / "sms"
    inbox.mkdir()
    first, second = "+33612345678", "+33798765432"
    async with running_gateway(tmp_path, inverters=0) as plant:
        async def answered(name: str, sender: str, text: str) -> list[str]:
            write_sms(inbox, name, sender, text)
            await wait_for(lambda: not (inbox / f"{name}.sms").exists(), 20, f"SMS {name} read")
            return sorted(p.name for p in (inbox / "out").glob(f"{name}.*.sms"))

        # Not watched before the reload that sets the folder.
        write_sms(inbox, "000", first, "status")
        await asyncio.sleep(3)
        assert (inbox / "000.sms").exists()
        await reconfigure(plant, {"SMS_InboxDir": str(inbox), "SMS_AllowedNumbers": first})
        await wait_for(lambda: not (inbox / "000.sms").exists(), 20, "the inbox watched")
        assert len(list((inbox / "out").glob("000.*.sms"))) == 6
        assert await answered("001", second, "status") == []
        await reconfigure(plant, {"SMS_AllowedNumbers": second})
        assert await answered("002", first, "status") == []        # struck from the list
        assert len(await answered("003", second, "status")) == 6
        await reconfigure(plant, {"SMS_InboxDir": None})
        write_sms(inbox, "004", second, "status")
        await asyncio.sleep(3)
        assert (inbox / "004.sms").exists()



def test_a_long_status_value_is_cut_at_its_end_and_the_keys_after_it_stay() -> None:
    path = "/srv/sunpm/" + "plant-with-a-long-name/" * 6
    status = {"uid": "WPM00BDE4", "servers": [
        {"srv": 1, "status": "idle", "type": "dir", "mode": "strategy_wsun1_compliant",
         "addr": path, "port": None, "last": "05/02 10:15 OK", "backlog": 0}]}
    part = status_parts(status)[4]
    assert len(part) == 160
    assert part.startswith("5/6\nsrv=1\nstatus=idle\ntype=dir\nmode=strategy_wsun1_compliant\n"
                           "addr=/srv/sunpm/plant-with-a-long-name/")
    assert part.endswith("/plant-with-\nport=\nlast=05/02 10:15 OK")
