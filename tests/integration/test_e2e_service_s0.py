"""S0 pulses survive a restart of `sunpm run` (docs/formats.md §9.4, the S0 **Decision**).

The `IO` device takes its S0 channel from a Modbus I/O module (a simulated one on loopback). The
module counts 50 pulses while the service runs, then 20 more while it is stopped; after the
restart the recorded total goes on from 50 to 70, where a counter that forgot its state would
start again from 0. A module reset while stopped (its register back to 5) adds those 5.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from pathlib import Path

import pytest
from e2e_support import UID, edit_config, edit_daq, sunpm
from service_support import STOP_LIMIT_S, start, wait_until

from config.model import Device
from pipeline.drivers.modbus.simulator import SimulatedDevice, TcpSimulator
from store.log import Log

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_task_left_behind")]

# The counter is also recorded as the module's own variable (action 4): the Modbus driver keeps
# one read plan per device, and the module's own poll and the I/O backend's read of it must not
# disagree on it (a module polled with another plan than the backend's fails its reads).
MODULE_DEF = b"""modbusTCP;IO;Acme;IO-8
1;4;10;U16;;Counter 1;io:CNT1;1;0;;4
"""
S0_INDEX = 5        # the IO definition's variable of DI1 in S0 mode


async def s0_values(store: Path) -> list[int]:
    log = Log.open_read_only(store)
    try:
        table = log.records("IO").sort_by("ts")
    finally:
        await log.close()
    return [int(float(v)) for v, var, q in zip(table.column("value").to_pylist(),
                                               table.column("var").to_pylist(),
                                               table.column("quality").to_pylist(), strict=True)
            if var == S0_INDEX and q == 0]


async def run_once(args: list[str], logs: Path, name: str, module: SimulatedDevice,
                   counts: list[int]) -> str:
    service = await start(args, logs, name=name)
    try:
        await wait_until(service.logged("sunpm started"), 30, "start line", service)
        for count in counts:
            module.input[10] = count
            # Three 1 s periods: the value is polled and its record committed.
            await asyncio.sleep(3.5)
    finally:
        code, took = await service.stop(signal.SIGINT)
    assert code == 0 and took < STOP_LIMIT_S, service.stderr[-3000:]
    return service.stderr


async def test_s0_total_goes_on_after_a_restart(tmp_path: Path) -> None:
    module = SimulatedDevice(input={10: 100})
    sim = TcpSimulator({7: module})
    port = await sim.start()
    cfg, store = tmp_path / "cfg", tmp_path / "store"
    try:
        assert (await sunpm("config", "init", str(cfg), "--uid", UID)).code == 0
        (cfg / "DEF" / "module.csv").write_bytes(MODULE_DEF)
        io_def = cfg / "DEF" / f"{UID}_IO.csv"
        io_def.write_bytes(io_def.read_bytes().replace(b"5;2;1;1;;DI1;;1;0;;0",
                                                       b"5;2;1;2;;S0_1;;1;0;Wh;4"))

        def devices(rows: tuple[Device, ...]) -> list[Device]:
            io = [dataclasses.replace(d, parameters="modbus:9", acq_period_s=1)
                  for d in rows if d.index == "IO"]
            return [*io, Device(line=len(rows) + 2, index="9", interface=f"127.0.0.1:{port}",
                                name="io_module", address=7, acq_period_s=1, timeout_ms=300,
                                def_file="module.csv")]

        edit_daq(cfg, devices)
        edit_config(cfg, {"STORE_Path": str(store), "STORE_FlushSeconds": "0.2",
                          "DAQ_PollPeriod": "1", "NTP_Server1": "", "NTP_Server2": ""})
        check = await sunpm("config", "validate", str(cfg))
        assert check.code == 0, check.out + check.err
        args = ["--config", str(cfg), "--data", str(tmp_path / "data")]

        await run_once(args, tmp_path / "logs", "first", module, [100, 150])
        first = await s0_values(store)
        assert first[0] == 0 and first[-1] == 50, first

        module.input[10] = 170                     # 20 pulses while stopped
        err = await run_once(args, tmp_path / "logs", "second", module, [170, 180])
        assert "S0 counters restored. module=9" in err
        second = (await s0_values(store))[len(first):]
        assert second and second[0] == 70 and second[-1] == 80, second

        module.input[10] = 5                       # the module was reset while stopped
        await run_once(args, tmp_path / "logs", "third", module, [5])
        third = (await s0_values(store))[len(first) + len(second):]
        assert third and set(third) == {85}, third
    finally:
        await sim.stop()
