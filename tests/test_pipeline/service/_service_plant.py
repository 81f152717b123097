"""A gateway running in the test's own event loop, on a small plant on loopback.

    async with running_gateway(tmp_path, inverters=1) as plant:
        plant.gateway, plant.server_dir, plant.simulators

The configuration is the default one (`config init`) with a `dir` server 1 in `tmp/server`, no NTP
check, a one-second poll period and a flush every 0.2 s, plus `inverters` demo SunSpec inverters
(models 1 and 103), each on its own lean Modbus TCP simulator, polled every 10 s. Extra
definition files and scripts can be laid in with `extra_files`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from waiting import wait_until

from config import parse_config_ini, parse_daq, render_config_ini, render_daq
from config.defaults import default_files
from config.model import Device
from exporters.session.outcome import Trigger
from pipeline.drivers.modbus.simulator import TcpSimulator
from pipeline.service.demo import INVERTER_DEF, INVERTER_FILE, SERVER_TREE, DemoInverter
from pipeline.service.gateway import Gateway, Plugin
from pipeline.service.maintenance import change_config
from pipeline.service.scripts import ScriptsPlugin

UID = "TESTGW01"


@dataclass
class RunningPlant:
    gateway: Gateway
    config_dir: Path
    server_dir: Path
    simulators: list[TcpSimulator]
    stop: asyncio.Event
    task: asyncio.Task[None]


def write_site(config_dir: Path, server_dir: Path, ports: Sequence[int],
               extra_files: Mapping[str, bytes] | None = None) -> None:
    files = default_files(UID)
    cfg_name = f"CONFIG/{UID}_config.ini"
    cfg = parse_config_ini(files[cfg_name], cfg_name).value
    for key, value in {"SERVER_Type": "dir", "DIR_Path": str(server_dir), "NTP_Server1": "",
                       "NTP_Server2": "", "DAQ_PollPeriod": "1",
                       "STORE_FlushSeconds": "0.2"}.items():
        cfg = cfg.with_value(key, value)
    files[cfg_name] = render_config_ini(cfg)
    daq_name = f"CONFIG/{UID}_daq.csv"
    daq = parse_daq(files[daq_name], daq_name).value
    rows = list(daq.devices)
    for k, port in enumerate(ports, start=1):
        rows.append(Device(line=len(rows) + 2, index=str(k), interface=f"127.0.0.1:{port}",
                           name=f"inverter_{k}", address=1, acq_period_s=10, timeout_ms=1000,
                           parameters="1", category="Inverter", model="Demo",
                           def_file=INVERTER_FILE))
    files[daq_name] = render_daq(type(daq)(devices=tuple(rows), serial=daq.serial,
                                           blocks=daq.blocks | {"devices"}))
    files[f"DEF/{INVERTER_FILE}"] = INVERTER_DEF
    files.update(extra_files or {})
    for rel, data in files.items():
        (config_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (config_dir / rel).write_bytes(data)
    for sub in SERVER_TREE:
        (server_dir / sub).mkdir(parents=True, exist_ok=True)


async def wait_for(check: Callable[[], object], timeout_s: float, what: str) -> None:
    """`waiting.wait_until` asking every 0.1 s: the gateway's checks read its state."""
    await wait_until(check, timeout_s, what=what, every=0.1)


async def session_with_server_1(plant: RunningPlant) -> None:
    """A session asked of server 1 (a `connect` command), waited for; it must succeed. Right
    after a reload the gateway may not have started its schedulers yet: waited for too."""
    await wait_for(lambda: 1 in plant.gateway.schedulers, 20, "server 1's scheduler")
    scheduler = plant.gateway.schedulers[1]
    before = scheduler.sessions
    assert plant.gateway.request_session(1, Trigger.COMMAND)
    await wait_for(lambda: scheduler.sessions > before and not scheduler.running, 30,
                   "a session with server 1")
    assert scheduler.last_result is not None and scheduler.last_result.ok, \
        scheduler.last_result


async def reconfigure(plant: RunningPlant, values: Mapping[str, str | None]) -> None:
    """A local edit of config.ini's `values` (None removes a key), then the reload it makes."""
    gateway = plant.gateway
    loaded = gateway.site
    change_config(plant.config_dir, UID, dict(values))
    gateway.config_written()
    await wait_for(lambda: gateway.site is not loaded, 20, "the reload")


@contextlib.asynccontextmanager
async def running_gateway(tmp_path: Path, *, inverters: int = 1,
                          extra_files: Mapping[str, bytes] | None = None,
                          plugins: Sequence[Plugin] = (),
                          site_written: bool = False) -> AsyncIterator[RunningPlant]:
    """A gateway on a site written for it, or, `site_written`, on the one an earlier run of
    the same `tmp_path` left as it is now."""
    config_dir, server_dir = tmp_path / "config", tmp_path / "server"
    simulators = [TcpSimulator({1: DemoInverter(number=k)}) for k in range(1, inverters + 1)]
    ports = [await sim.start() for sim in simulators]
    if not site_written:
        write_site(config_dir, server_dir, ports, extra_files or {})
    gateway = Gateway(config_dir, tmp_path / "data", plugins=[ScriptsPlugin(), *plugins])
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop), name="gateway")
    plant = RunningPlant(gateway, config_dir, server_dir, simulators, stop, task)
    try:
        await wait_for(lambda: task.done() or (gateway.poller is not None
                                               and gateway.commands is not None
                                               and 1 in gateway.schedulers), 20,
                       "running gateway")
        if task.done():
            task.result()
        yield plant
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(20):
                await asyncio.shield(task)
        if not task.done():
            task.cancel()
        for sim in simulators:
            await sim.stop()
