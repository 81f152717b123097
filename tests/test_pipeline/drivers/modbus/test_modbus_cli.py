"""`sunpm modbus read` end to end: the real command against a simulated device on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path

from waiting import wait_until

from pipeline.drivers.modbus.simulator import SimulatedDevice, TcpSimulator

DEFINITION = """modbusTCP;Inverter;Test;T1
Index;Info1;Info2;Info3;Info4;Name;Tag;CoefA;CoefB;Unit;Action
1;3;40000;U16;SF;Power;;0.1;0;W;4
2;3;40001;I16;;SF;;1;0;;1
3;3;40002;F32;;Freq;;1;0;Hz;4
4;3;40004_8;String;;Serial;;1;0;;1
5;1;3;;;Relay;;1;0;;4
6;4;7;U32_W;;Energy;;0.001;0;kWh;0
7;3;40010;U16;SF;Missing;;1;0;;4
"""


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_modbus_read_prints_raw_scaled_unit_and_quality(tmp_path: Path) -> None:
    path = tmp_path / "T1.csv"
    path.write_text(DEFINITION)
    device = SimulatedDevice()
    device.set_words(40000, [2305, 0xFFFF, 0x3F8C, 0xCCCD, 0x534D, 0x4100, 0, 0])
    device.set_words(40010, [0xFFFF])
    device.set_words(7, [0xE240, 0x0001], kind=4)
    device.coils[3] = 1
    async with TcpSimulator({5: device}) as sim:
        code, out, err = await run_cli("modbus", "read", f"127.0.0.1:{sim.port}", "--unit", "5",
                                       "--def", str(path), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["unit"] == 5 and result["definition"] == "T1.csv"
    rows = {row["name"]: row for row in result["variables"]}
    assert rows["Power"] == {"index": 1, "name": "Power", "raw": "230.5", "value": "23.05",
                             "unit": "W", "quality": 0}
    assert rows["SF"]["raw"] == "-1"
    assert rows["Freq"]["raw"] == "1.1" and rows["Freq"]["value"] == "1.1"
    assert rows["Serial"]["raw"] == "SMA"
    assert rows["Relay"]["raw"] == "1"
    assert rows["Energy"]["raw"] == "123456" and rows["Energy"]["value"] == "123.456"
    assert rows["Missing"] == {"index": 7, "name": "Missing", "raw": None, "value": None,
                               "unit": "", "quality": 6}
    assert result["requests"] == 4 and result["connection_error"] is None


async def test_modbus_read_of_a_silent_device_exits_1_with_timeouts(tmp_path: Path) -> None:
    path = tmp_path / "T1.csv"
    path.write_text(DEFINITION)
    async with TcpSimulator({}) as sim:
        code, out, _ = await run_cli("modbus", "read", f"127.0.0.1:{sim.port}", "--unit", "5",
                                     "--def", str(path), "--json", "--timeout", "100")
    assert code == 1
    assert {row["quality"] for row in json.loads(out)["variables"]} == {1}


async def test_modbus_read_to_a_closed_port_says_the_connection_was_refused(
        tmp_path: Path) -> None:
    path = tmp_path / "T1.csv"
    path.write_text(DEFINITION)
    with socket.socket() as sock:       # a port bound, never listened on: refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        code, out, err = await run_cli("modbus", "read", f"127.0.0.1:{port}", "--unit", "5",
                                       "--unit", "6", "--def", str(path))
        assert code == 1
        assert out.splitlines() == [
            f"unit 5 at 127.0.0.1:{port}: no connection (Connection refused); nothing read",
            f"unit 6 at 127.0.0.1:{port}: no connection (Connection refused); nothing read"]
        assert err == (f"sunpm modbus read: connection to 127.0.0.1:{port} failed "
                       "(Connection refused)\n")
        code, out, _ = await run_cli("modbus", "read", f"127.0.0.1:{port}", "--def", str(path),
                                     "--json")
    assert code == 1
    assert json.loads(out)["connection_error"] == "Connection refused"


async def test_modbus_read_rejects_a_bad_definition_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("modbusTCP;x;y;z\n1;3;40000;U17;;P;;1;0;;4\n")
    code, _, err = await run_cli("modbus", "read", "127.0.0.1:1", "--def", str(path))
    assert code == 2 and "bad.csv" in err


async def test_modbus_read_text_ends_with_a_summary_per_unit_and_a_legend(tmp_path: Path) -> None:
    path = tmp_path / "T1.csv"
    path.write_text(DEFINITION)
    device = SimulatedDevice()
    device.set_words(40000, [2305, 0xFFFF, 0x3F8C, 0xCCCD, 0x534D, 0x4100, 0, 0])
    device.set_words(40010, [0xFFFF])
    async with TcpSimulator({5: device}) as sim:
        code, out, err = await run_cli("modbus", "read", f"127.0.0.1:{sim.port}", "--unit", "5",
                                       "--unit", "6", "--def", str(path), "--timeout", "100")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["1", "Power", "23.05", "W", "quality", "0"]
    assert lines[7] == (f"unit 5 at 127.0.0.1:{sim.port}: 6 of 7 variables good, failed: "
                        "1 quality 6 (not implemented); 4 requests")
    # The silent unit gets its summary alone, not a row per variable.
    assert lines[8].startswith(f"unit 6 at 127.0.0.1:{sim.port}: 0 of 7 variables good, "
                               "failed: 7 quality 1 (timeout); ")
    assert lines[9] == ("quality codes: 0 good; 1 timeout: no answer in time; 6 not implemented "
                        "(SunSpec sentinel or invalid scale factor)")
    assert len(lines) == 10
    assert err == f"sunpm modbus read: nothing read good from unit 6 at 127.0.0.1:{sim.port}\n"


async def test_modbus_read_watch_refreshes_live_values_until_ctrl_c(tmp_path: Path) -> None:
    path = tmp_path / "T1.csv"
    path.write_text(DEFINITION)
    device = SimulatedDevice()
    device.set_words(40000, [100, 0])
    async with TcpSimulator({1: device}) as sim:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())",
            "modbus", "read", f"127.0.0.1:{sim.port}", "--def", str(path), "--watch", "0.2",
            "--timeout", "100", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(30):
                seen: list[str] = []
                while sum(line.startswith("     1 Power") for line in seen) < 2:
                    seen.append((await proc.stdout.readline()).decode())
                device.set_words(40000, [250])          # the next refresh shows the new value
                while not any("25 W" in line for line in seen):
                    seen.append((await proc.stdout.readline()).decode())
            proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(30):
                await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0
    powers = [line.split()[2:4] for line in seen if line.startswith("     1 Power")]
    assert powers[0] == ["10", "W"] and powers[-1] == ["25", "W"]
    headers = [line for line in seen if line.startswith(f"127.0.0.1:{sim.port} T1.csv at ")]
    assert len(headers) >= 3 and all(line.endswith("every 0.2 s (Ctrl-C to stop)\n")
                                     for line in headers)


async def test_modbus_read_watch_on_a_terminal_redraws_in_place(tmp_path: Path) -> None:
    path = tmp_path / "T1.csv"
    path.write_text(DEFINITION)
    master, slave = os.openpty()
    os.set_blocking(master, False)
    screen = b""
    async with TcpSimulator({1: SimulatedDevice(holding={40000: 100})}) as sim:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())",
            "modbus", "read", f"127.0.0.1:{sim.port}", "--def", str(path), "--watch", "0.2",
            stdout=slave, stderr=asyncio.subprocess.PIPE)
        try:
            def three_screens() -> bool:
                nonlocal screen
                with contextlib.suppress(BlockingIOError):
                    screen += os.read(master, 65536)
                return screen.count(b"\x1b[H\x1b[J") >= 3

            await wait_until(three_screens, 30, every=0.05)
            proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(30):
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            os.close(slave)
            os.close(master)
    assert proc.returncode == 0
    frames = screen.decode().split("\x1b[H\x1b[J")[1:3]
    for frame in frames:       # each redraw is the whole table, from the top of the screen
        assert frame.startswith(f"127.0.0.1:{sim.port} T1.csv at ")
        assert "     1 Power                            10 W" in frame


async def test_an_ipv6_address_in_brackets_is_read(tmp_path: Path) -> None:
    path = tmp_path / "T1.csv"
    path.write_text(DEFINITION)
    device = SimulatedDevice()
    device.set_words(40000, [2305, 0xFFFF])
    async with TcpSimulator({5: device}, host="::1") as sim:
        code, out, err = await run_cli("modbus", "read", f"[::1]:{sim.port}", "--unit", "5",
                                       "--def", str(path), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["target"] == f"[::1]:{sim.port}"
    assert {row["name"]: row["value"] for row in result["variables"]}["Power"] == "23.05"
