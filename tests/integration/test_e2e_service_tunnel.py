"""`sunpm run` starts the RTU-over-TCP tunnel of a serial port with `forwardTcpPort`
(docs/behaviour.md §2.8): a pymodbus TCP client reads and writes a unit of the bus through it
while the service polls another unit on the same bus (a pty pair, the devices simulated on its
master side), and the tunnel closes with the service."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import tty
from pathlib import Path

import pytest
from e2e_support import UID, edit_config, sunpm
from pymodbus.client import AsyncModbusTcpClient
from service_support import STOP_LIMIT_S, start, wait_until

from config import parse_daq, render_daq
from config.model import Device
from pipeline.drivers.modbus.simulator import RtuResponder, SimulatedDevice
from store.log import Log

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_task_left_behind")]

UNIT_DEF = b"""modbusRTU;Meter;ACME;M1
1;3;0;U16;;R0;;1;0;;4
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_service_runs_the_rtu_tunnel(tmp_path: Path) -> None:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    units = {1: SimulatedDevice(), 2: SimulatedDevice()}
    units[1].set_words(0, [101])
    units[2].set_words(0, [201, 202, 203])
    responder = RtuResponder(master, units)
    responder.start()
    tunnel_port = free_port()
    cfg, store = tmp_path / "cfg", tmp_path / "store"
    try:
        assert (await sunpm("config", "init", str(cfg), "--uid", UID)).code == 0
        (cfg / "DEF" / "unit.csv").write_bytes(UNIT_DEF)
        daq_path = cfg / "CONFIG" / f"{UID}_daq.csv"
        daq = parse_daq(daq_path.read_bytes(), daq_path.name).value
        serial = tuple(dataclasses.replace(p, line=2, speed=115200, path=os.ttyname(slave),
                                           forward_tcp_port=tunnel_port)
                       if p.port == "SERIAL1" else p for p in daq.serial)
        devices = (*daq.devices, Device(line=10, index="1", interface="SERIAL1", name="meter",
                                        address=1, acq_period_s=1, timeout_ms=300,
                                        def_file="unit.csv"))
        daq_path.write_bytes(render_daq(dataclasses.replace(
            daq, serial=serial, devices=devices, blocks=daq.blocks | {"serial", "devices"})))
        edit_config(cfg, {"STORE_Path": str(store), "STORE_FlushSeconds": "0.2",
                          "DAQ_PollPeriod": "1", "NTP_Server1": "", "NTP_Server2": ""})
        check = await sunpm("config", "validate", str(cfg))
        assert check.code == 0, check.out + check.err
        service = await start(["--config", str(cfg), "--data", str(tmp_path / "data")],
                              tmp_path / "logs")
        try:
            await wait_until(service.logged(f"serial1: tunnel listening on 127.0.0.1:"
                                            f"{tunnel_port}"), 30, "the tunnel", service)
            client = AsyncModbusTcpClient("127.0.0.1", port=tunnel_port, timeout=2, retries=1)
            await client.connect()
            try:
                for _ in range(5):
                    reply = await client.read_holding_registers(0, count=3, device_id=2)
                    assert not reply.isError() and reply.registers == [201, 202, 203]
                written = await client.write_register(1, 77, device_id=2)
                assert not written.isError()
            finally:
                client.close()
            assert units[2].holding[1] == 77
            await wait_until(lambda: responder.frames_seen > 20, 20, "polls beside the tunnel",
                             service)
        finally:
            code, took = await service.stop(signal.SIGINT)
        assert code == 0 and took < STOP_LIMIT_S, service.stderr[-3000:]
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", tunnel_port), timeout=1).close()
        log = Log.open_read_only(store)
        try:
            values = log.records("1").column("value").to_pylist()
        finally:
            await log.close()
        # Polls went on beside the tunnel (one may time out on a loaded box: a null value).
        good = [int(float(v)) for v in values if v is not None]
        assert len(good) >= 3 and set(good) == {101}, values
    finally:
        await responder.stop()
        os.close(master)
        os.close(slave)
