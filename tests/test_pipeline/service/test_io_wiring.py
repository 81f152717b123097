"""The gateway's I/O read through a Modbus I/O module (daq.csv `IO` row, `modbus:<index>`):
never through another driver than its module's."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from _service_plant import UID, write_site

from config import load_site
from pipeline.service.wiring import build_plant
from store import Log

MODULE_DEF = b"modbusRTU;IO;Acme;IO-8\n1;4;10;U16;;Counter 1;io:CNT1;1;0;;4\n"


async def test_an_io_module_on_a_port_without_path_leaves_the_io_unpolled(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "config"
    write_site(config, tmp_path / "server", [], {"DEF/module.csv": MODULE_DEF})
    daq = config / "CONFIG" / f"{UID}_daq.csv"
    daq.write_bytes(
        b"port;speed;dataBits;parity;stopBits;wires;protocol;interFrame(ms);forwardTcpPort;path\n"
        b"SERIAL1;9600;8;N;1;2;modbusRTU;0;;\n"
        b"index;interface;name;address;acqPeriod(s);timeout(ms);serialNumber;parameters;"
        b"category;model;defFile\n"
        + f"IO;;Io;;600;;;modbus:9;WebdynSunPM;ioSunPM;{UID}_IO.csv\n".encode()
        + b"9;SERIAL1;io_module;7;600;300;;;;;module.csv\n")
    site = load_site(config)
    caplog.set_level(logging.WARNING)
    async with await Log.open(tmp_path / "store") as log:
        plant = build_plant(site, log)
    # Read through the TCP driver, the module's registers went to no device at every poll.
    assert plant.links == [] and plant.devices == {}
    assert "IO: its module io_module is on SERIAL1, which has no path; not polled" in caplog.text
