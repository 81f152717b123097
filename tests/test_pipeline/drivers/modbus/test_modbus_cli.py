"""`sunpm modbus read` end to end: the real command against a simulated device on loopback."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

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
    assert result["requests"] == 4


async def test_modbus_read_of_a_silent_device_exits_1_with_timeouts(tmp_path: Path) -> None:
    path = tmp_path / "T1.csv"
    path.write_text(DEFINITION)
    async with TcpSimulator({}) as sim:
        code, out, _ = await run_cli("modbus", "read", f"127.0.0.1:{sim.port}", "--unit", "5",
                                     "--def", str(path), "--json", "--timeout", "100")
    assert code == 1
    assert {row["quality"] for row in json.loads(out)["variables"]} == {1}


async def test_modbus_read_rejects_a_bad_definition_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("modbusTCP;x;y;z\n1;3;40000;U17;;P;;1;0;;4\n")
    code, _, err = await run_cli("modbus", "read", "127.0.0.1:1", "--def", str(path))
    assert code == 2 and "bad.csv" in err
