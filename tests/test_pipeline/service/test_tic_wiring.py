"""TIC1's `parameters` in daq.csv fixes the Linky reader's speed (docs/behaviour.md §2.9 step 4:
`1200` historic, `9600` standard); empty, the reader detects the mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from _service_plant import UID, write_site

from config import load_site
from pipeline.service.wiring import build_plant
from store import Log

TIC_DEF = b"tic;Meter;Enedis;Linky\n1;ADCO;;;;ADCO;;1;0;;1\n2;BASE;;;;BASE;;1;0;Wh;4\n"


@pytest.mark.parametrize(("parameters", "baud"), [("1200", 1200), ("9600", 9600), ("", None)])
async def test_tic1_parameters_fix_the_readers_speed(tmp_path: Path, parameters: str,
                                                     baud: int | None) -> None:
    config = tmp_path / "config"
    write_site(config, tmp_path / "server", [], {f"DEF/{UID}_TIC.csv": TIC_DEF})
    daq = config / "CONFIG" / f"{UID}_daq.csv"
    daq.write_bytes(daq.read_bytes()
                    + f"TIC1;;Linky;;10;;;{parameters};Meter;Linky;{UID}_TIC.csv\n".encode())
    ini = config / "CONFIG" / f"{UID}_config.ini"
    ini.write_bytes(ini.read_bytes() + b"TIC_Port=/dev/ttyTIC0\n")
    site = load_site(config)
    async with await Log.open(tmp_path / "store") as log:
        plant = build_plant(site, log)
    assert plant.tic_reader is not None
    assert plant.tic_reader.fixed_baud == baud
