"""`sunpm modbus read --json` against the simulated inverter with the definition file `sunpm
discover` generated for it, and against the non-SunSpec meter with its hand-written file."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from e2e_support import (
    METER_DEF,
    METER_SETUP,
    inverter_expected,
    inverter_values,
    meter_numbers,
    meter_values,
    plain,
    sunpm,
    sunspec_image,
)

from config import parse_definition
from pipeline.drivers.modbus.simulator import SimulatedDevice, TcpSimulator

SECOND = 1_796_012_345

#: Points of the image that are neither moving nor 0 (raw text; None: missing, quality 6).
STATIC: dict[str, str | None] = {
    "1_tableId": "1", "1_tableSize": "66", "1_Mn": "ACME", "1_Md": "Solar Inverter",
    "1_Opt": "", "1_Vr": "1.0", "1_SN": "SN-42", "1_DA": "1", "1_Pad": "32768",
    "103_tableId": "103", "103_tableSize": "50", "123_tableId": "123", "123_tableSize": "24",
    "103_A_SF": "-2", "103_V_SF": "-1", "103_W_SF": "1", "103_Hz_SF": "-2", "103_Tmp_SF": "-1",
}


async def test_modbus_read_json_with_the_generated_definition(tmp_path: Path) -> None:
    image = sunspec_image()
    image.update(inverter_values(SECOND))
    meter = SimulatedDevice(holding={4354: METER_SETUP}, input=dict(meter_values(SECOND)))
    async with TcpSimulator({1: SimulatedDevice(holding=image), 2: meter}) as sim:
        defs = tmp_path / "defs"
        run = await sunpm("discover", "--ip", "127.0.0.1", "--port", str(sim.port), "--first",
                          "1", "--last", "1", "--write-defs", str(defs), "--uid", "WPMTEST01",
                          "--json")
        assert run.code == 0, run.err
        name = json.loads(run.out)["devices"][0]["definitionFile"]
        assert name == "WPMTEST01_SunSpec_inverter_ACME_Solar_Inverter_modbusTCP.csv"
        run = await sunpm("modbus", "read", f"127.0.0.1:{sim.port}", "--unit", "1", "--def",
                          str(defs / name), "--json")
        assert run.code == 0, run.err
        result = json.loads(run.out)

        (tmp_path / "meter.csv").write_bytes(METER_DEF)
        meter_run = await sunpm("modbus", "read", f"127.0.0.1:{sim.port}", "--unit", "2",
                                "--def", str(tmp_path / "meter.csv"), "--json")
        assert meter_run.code == 0, meter_run.err

    definition = parse_definition((defs / name).read_bytes(), name).value
    assert (result["unit"], result["definition"]) == (1, name)
    rows = {r["name"]: r for r in result["variables"]}
    # Every Modbus variable of the file, whatever its action, in file order.
    assert [r["index"] for r in result["variables"]] == [v.index for v in definition.variables]
    expected = {**STATIC, **inverter_expected(SECOND)}
    for var in definition.variables:
        row = rows[var.name]
        want = expected.get(var.name, "0")
        assert (row["raw"], row["value"]) == (want, want), var.name   # CoefA 1, CoefB 0
        assert row["quality"] == (6 if want is None else 0), var.name
        assert row["unit"] == var.unit

    v, p, e = meter_numbers(SECOND)
    meter_rows = {r["name"]: (r["raw"], r["value"], r["quality"])
                  for r in json.loads(meter_run.out)["variables"]}
    tenth = Decimal("0.1")
    assert meter_rows == {
        "V_L1": (str(v), plain(v * tenth), 0),
        "P_total": (str(p), plain(p * tenth), 0),
        "E_import": (str(e), plain(e * tenth), 0),
        "Setup": (str(METER_SETUP), str(METER_SETUP), 0),
    }
    assert meter_rows["V_L1"][1] == f"{v // 10}.{v % 10}"    # 230.x: the oracle itself checked
