"""`sunpm discover` and `sunpm tic decode` run as the installed command, against loopback peers."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import sys
import termios
import time
from pathlib import Path

import pytest
from tic_ptys import repeating_meter

from pipeline.cli import main
from pipeline.drivers.tic import TicMode, encode_frame

sys.path.insert(0, str(Path(__file__).parents[1] / "drivers"))
from _sunspec_sim import SunSpecImage, common_model, modbus_server, model

DATA = Path(__file__).parents[1] / "drivers" / "data"
HISTORIC = [("ADCO", "031664001115"), ("OPTARIF", "BASE"), ("ISOUSC", "30"),
            ("BASE", "000002080"), ("PTEC", "TH.."), ("IINST", "004"), ("IMAX", "090"),
            ("PAPP", "00910"), ("HHPHC", "A"), ("MOTDETAT", "000000")]
SUNPM = str(Path(sys.executable).parent / "sunpm")


async def _sunpm(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        SUNPM, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _plant() -> dict[int, list[tuple[int, list[int]]]]:
    return {
        1: [(0, [7] * 10)],
        2: SunSpecImage([common_model("SMA", "Solar Inverter", "9301", "1.0", "A1"),
                         model(103, 50), model(123, 24)]).blocks(),
        4: SunSpecImage([common_model("SMA", "Solar Inverter", "9301", "1.0", "A2"),
                         model(101, 50), model(160, 48, [0, 0, 0, 0, 0, 0, 2, 0])]).blocks(),
    }


async def test_discover_imports_devices_whose_files_pass_config_validate(tmp_path: Path) -> None:
    site = tmp_path / "site"
    code, _, err = await _sunpm("config", "init", str(site), "--uid", "WPM00BDE4")
    assert code == 0, err
    async with modbus_server(_plant()) as port:
        code, out, err = await _sunpm("discover", "--protocol", "sunspec", "--ip", "127.0.0.1",
                                      "--port", str(port), "--first", "1", "--last", "5",
                                      "--timeout", "300", "--config", str(site), "--import",
                                      "--json")
        assert code == 0, err
        result = json.loads(out)
        # A second run finds the same devices, now configured, and adds nothing.
        code2, out2, err2 = await _sunpm("discover", "--ip", "127.0.0.1", "--port", str(port),
                                         "--first", "1", "--last", "5", "--timeout", "300",
                                         "--config", str(site), "--import", "--json")
    assert code2 == 0, err2
    assert result["found"] == 2
    assert [d["unitId"] for d in result["devices"]] == [2, 4]
    assert result["devices"][0]["models"] == [1, 103, 123]
    assert result["devices"][1]["models"] == [1, 101, 160]
    names = [d["definitionFile"] for d in result["devices"]]
    assert names == ["WPM00BDE4_SunSpec_inverter_SMA_Solar_Inverter_9301_modbusTCP.csv",
                     "WPM00BDE4_SunSpec_inverter_SMA_Solar_Inverter_9301_modbusTCP_2.csv"]
    assert all((site / "DEF" / name).is_file() for name in names)
    assert [d["alreadyConfigured"] for d in json.loads(out2)["devices"]] == [True, True]
    assert "0 devices added" in err2
    lines = err.splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:Start of SunSpec detection on "
                        r"ethernet1, addresses 1-5, estimated duration 2 s", lines[0])
    assert any(line.endswith(f":NON SUNSPEC device found at @1 127.0.0.1:{port}")
               for line in lines)
    assert any(line.endswith(f":Found table 160:48 at 40124@4 127.0.0.1:{port}")
               for line in lines)
    daq = (site / "CONFIG" / "WPM00BDE4_daq.csv").read_text()
    assert (f"1;127.0.0.1:{port};ethernet_127.0.0.1_{port}_2;2;600;300;;1;Inverter;"
            f"Solar_Inverter;{names[0]}") in daq.splitlines()
    assert daq.count(";Inverter;") == 2
    code, out, err = await _sunpm("config", "validate", str(site))
    assert code == 0, out + err
    assert out == ""          # no warning either


async def test_an_import_the_configuration_would_reject_writes_nothing(tmp_path: Path) -> None:
    site = tmp_path / "site"
    assert (await _sunpm("config", "init", str(site), "--uid", "WPM00BDE4"))[0] == 0
    async with modbus_server(_plant()) as port:
        scan = ("discover", "--ip", "127.0.0.1", "--port", str(port), "--timeout", "300",
                "--config", str(site), "--import")
        code, _, err = await _sunpm(*scan, "--first", "2", "--last", "2")
        assert code == 0, err
        # The next device would get index 65536, which daq.csv refuses.
        daq_path = site / "CONFIG" / "WPM00BDE4_daq.csv"
        daq_path.write_text(daq_path.read_text().replace("\n1;", "\n65535;"))
        before = {p.name: p.read_bytes() for p in (*site.glob("*/*"),)}
        code, out, err = await _sunpm(*scan, "--first", "4", "--last", "4")
    assert (code, out) == (1, ""), err
    assert err.endswith("WPM00BDE4_daq.csv:4: index: '65536' is not 0..65535, IO or TIC1; file "
                        f"rejected\nsunpm discover: the import would make {site} invalid; "
                        "nothing written\n")
    assert {p.name: p.read_bytes() for p in (*site.glob("*/*"),)} == before
    assert (await _sunpm("config", "validate", str(site)))[0] == 0


async def test_discover_on_a_serial_port_without_path_is_refused(tmp_path: Path) -> None:
    site = tmp_path / "site"
    assert (await _sunpm("config", "init", str(site), "--uid", "U1"))[0] == 0
    code, _, err = await _sunpm("discover", "--interface", "serial2", "--config", str(site))
    assert (code, err.strip()) == (2, "sunpm discover: serial2 has no path")


async def test_tic_decode_prints_one_json_line_per_frame() -> None:
    code, out, err = await _sunpm("tic", "decode", str(DATA / "tic_standard.bin"), "--json")
    assert code == 0, err
    frames = [json.loads(line) for line in out.splitlines()]
    assert [f["frame"] for f in frames] == [1, 2, 3, 4, 5]
    assert frames[1]["badGroups"] == {"checksum": 1, "malformed": 2}
    assert frames[0]["values"]["SINSTS"] == "00720"
    assert frames[0]["horodates"]["DATE"] == "E210205083002"
    assert frames[3]["interrupted"] is True
    assert json.loads(err) == {"frames": 5, "interrupted": 1, "validGroups": 124,
                               "checksumErrors": 1, "malformed": 2, "noise": 0,
                               "withoutValidGroup": 0}


async def test_tic_decode_text_keeps_frames_on_stdout_and_text_totals_on_stderr() -> None:
    code, out, err = await _sunpm("tic", "decode", str(DATA / "tic_standard.bin"))
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "frame 1 standard", "frame 2 standard", "frame 3 standard",
        "frame 4 standard interrupted", "frame 5 standard"]
    assert err == ("5 frames (1 interrupted), 124 valid groups, 1 checksum errors, 2 malformed "
                   "groups, 0 noise bytes; 0 STX…ETX spans without a valid group\n")


async def test_tic_decode_of_random_bytes_finds_no_frame(tmp_path: Path) -> None:
    noise = tmp_path / "noise.bin"
    # STX … ETX spans with nothing decodable inside, as random bytes hold.
    noise.write_bytes(bytes(range(256)) * 8 + b"\x02garbage\r\n\x03" * 12)
    code, out, err = await _sunpm("tic", "decode", str(noise))
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[0].startswith("0 frames (") and "spans without a valid group" in lines[0]
    assert lines[1] == f"sunpm tic decode: {noise}: no TIC frame found (2180 bytes)"


async def test_tic_decode_needs_a_file_or_a_port(tmp_path: Path) -> None:
    code, _, err = await _sunpm("tic", "decode")
    assert code == 2 and "either FILE or --port" in err
    code, _, err = await _sunpm("tic", "decode", str(tmp_path / "none.bin"))
    assert code == 1 and "No such file" in err


@pytest.mark.parametrize("speed", ["1200"])
async def test_tic_decode_reads_a_live_port_for_a_bounded_time(speed: str) -> None:
    master, slave = os.openpty()      # a port that opens, with no meter behind it
    try:
        port = os.ttyname(slave)
        code, out, err = await _sunpm("tic", "decode", "--port", port,
                                      "--speed", speed, "--duration", "0.5", "--json")
    finally:
        os.close(slave)
        os.close(master)
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert json.loads(lines[-2])["frames"] == 0
    assert lines[-1] == f"sunpm tic decode: {port}: no TIC frame received"


@pytest.mark.parametrize(("name", "reason"), [
    ("ttyMissing", "No such file or directory (errno 2)"), (".", "Is a directory (errno 21)"),
    ("capture.bin", "not a serial device")])
async def test_tic_decode_of_a_port_that_cannot_open_exits_2_at_once(
        tmp_path: Path, name: str, reason: str) -> None:
    # No frame or time limit: before, the command waited for ever for the port to appear.
    (tmp_path / "capture.bin").write_bytes(b"")
    path = tmp_path / name
    started = time.monotonic()
    code, out, err = await _sunpm("tic", "decode", "--port", str(path))
    assert (code, out) == (2, "")
    assert err == f"sunpm tic decode: {path}: cannot open: {reason}\n"
    # Waiting for ever is the defect, so the bound is far from a start-up's few seconds on a
    # loaded box (where `sunpm --help` alone waited up to 1.6 s for a core).
    assert time.monotonic() - started < 30


async def test_tic_decode_reads_a_meter_on_a_pty_as_the_gateway_does() -> None:
    # A pty (the demo's Linky, a software bridge) refuses 7E1; the gateway's reader opens it
    # 8N1, and so must the command: before, it gave up after 5 s on the port the demo prints.
    frame = encode_frame(HISTORIC, TicMode.HISTORIC)

    async with repeating_meter(frame) as port:
        code, out, err = await _sunpm("tic", "decode", "--port", port, "--speed", "1200",
                                      "--frames", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and all(" historic: ADCO=031664001115 " in line for line in lines)


async def test_discover_tic_finds_a_meter_on_a_pty_as_the_gateway_does(tmp_path: Path) -> None:
    frame = encode_frame(HISTORIC, TicMode.HISTORIC)

    async with repeating_meter(frame) as port:
        code, out, err = await _sunpm("discover", "--protocol", "tic", "--tic-port", port,
                                      "--uid", "U1", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["found"], doc["mode"], doc["definitionFile"]) == (1, "historic", "U1_TIC_LINKY.csv")


def _refusing_every_framing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A serial port the TIC reader can configure neither 7E1 nor 8N1 (a pty refuses only 7E1)."""
    import serial_asyncio

    async def refuse(**_: object) -> object:
        raise termios.error(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(serial_asyncio, "open_serial_connection", refuse)


def test_tic_decode_of_a_port_that_never_configures_gives_up_after_5_s(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _refusing_every_framing(monkeypatch)
    master, slave = os.openpty()      # a tty, so the command tries it
    try:
        started = time.monotonic()
        code = main(["tic", "decode", "--port", os.ttyname(slave)])
        elapsed = time.monotonic() - started
    finally:
        os.close(slave)
        os.close(master)
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert "cannot open: not usable as a TIC port (7E1 at 1200/9600 Bd) within 5 s" in err
    assert 5 <= elapsed < 15


async def test_discover_tic_on_a_port_that_cannot_open_exits_1(tmp_path: Path) -> None:
    code, out, err = await _sunpm("discover", "--protocol", "tic", "--tic-port",
                                  str(tmp_path / "ttyUSB9"), "--json")
    assert (code, out) == (1, "")
    assert err == (f"sunpm discover: nothing could be reached: {tmp_path / 'ttyUSB9'}: cannot "
                   "open: No such file or directory (errno 2)\n")
    code, _, err = await _sunpm("discover", "--protocol", "tic")
    assert (code, err.strip()) == (2, "sunpm discover: TIC_Port is not set; give --tic-port DEV")


def test_discover_tic_on_a_port_that_refuses_7e1_exits_1_not_no_meter(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "init", "--uid", "U1", str(tmp_path / "site")]) == 0
    daq = (tmp_path / "site" / "CONFIG" / "U1_daq.csv").read_bytes()
    _refusing_every_framing(monkeypatch)
    master, slave = os.openpty()
    port = os.ttyname(slave)
    capsys.readouterr()
    try:
        code = main(["discover", "--protocol", "tic", "--tic-port", port, "--config",
                     str(tmp_path / "site"), "--import", "--json"])
    finally:
        os.close(slave)
        os.close(master)
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err == (f"sunpm discover: nothing could be reached: {port}: cannot "
                   "open as a TIC port (7E1 at 9600/1200 Bd): Invalid argument (errno 22)\n")
    assert (tmp_path / "site" / "CONFIG" / "U1_daq.csv").read_bytes() == daq


async def test_discover_without_files_names_them_as_writing_would(tmp_path: Path) -> None:
    async with modbus_server(_plant()) as port:
        code, out, err = await _sunpm("discover", "--ip", "127.0.0.1", "--port", str(port),
                                      "--first", "2", "--last", "4", "--timeout", "300",
                                      "--uid", "U", "--json")
        assert code == 0, err
        code_w, out_w, err_w = await _sunpm("discover", "--ip", "127.0.0.1", "--port", str(port),
                                            "--first", "2", "--last", "4", "--timeout", "300",
                                            "--uid", "U", "--write-defs", str(tmp_path),
                                            "--json")
    assert code_w == 0, err_w
    devices = json.loads(out)["devices"]
    assert [d["definitionFile"] for d in devices] == [
        "U_SunSpec_inverter_SMA_Solar_Inverter_9301_modbusTCP.csv",
        "U_SunSpec_inverter_SMA_Solar_Inverter_9301_modbusTCP_2.csv"]
    assert devices[0]["definitionText"].startswith("modbusTCP;Inverter;SMA;Solar_Inverter\n")
    written = json.loads(out_w)["devices"]
    assert [d["definitionFile"] for d in written] == [d["definitionFile"] for d in devices]
    assert all("definitionText" not in d for d in written)
    for d in devices:
        assert (tmp_path / d["definitionFile"]).read_text() == d["definitionText"]
