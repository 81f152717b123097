"""The relay's last commanded state across restarts and journal quota drops
(pipeline/service/relay.py, docs/behaviour.md §2.10)."""

from __future__ import annotations

import socket
from decimal import Decimal
from pathlib import Path

import pytest
from _service_plant import running_gateway

from config import parse_definition
from config.model import Device
from pipeline.drivers.io import IoDriver, ModbusIoBackend, SimBackend
from pipeline.drivers.modbus.planner import plan_reads
from pipeline.drivers.modbus.tcp import ModbusTcpDriver
from pipeline.service.gateway import Gateway
from pipeline.service.relay import KIND, last_commanded, relay_body, restore_relay
from store import Log, StoreOptions, replay

OPTIONS = StoreOptions(flush_s=0.005, device_quota_bytes=40_000, journal_quota_bytes=20_000)


async def test_the_last_commanded_state_outlives_the_journal_quota(tmp_path: Path) -> None:
    async with await Log.open(tmp_path, OPTIONS) as log:
        log.set_state_provider(lambda: replay(log).to_body())
        await log.append_journal(KIND, relay_body(0))
        await log.append_journal(KIND, relay_body(1))
        for i in range(2_000):          # log lines until the quota dropped the relay events
            await log.append_journal("log", {"message": "x" * 40, "i": i})
            if i % 50 == 49:
                await log.commit()
                if log.journal(kinds=[KIND]).num_rows == 0:
                    break
        assert log.journal(kinds=[KIND]).num_rows == 0, "the quota never dropped the events"

    async with await Log.open(tmp_path, OPTIONS) as log:      # the restart
        backend = SimBackend()
        assert await restore_relay(log, IoDriver(backend)) == 1
        assert backend.relay == 1
        # A later command wins over the snapshot's copy.
        await log.append_journal(KIND, relay_body(0))
        await log.commit()
        assert await last_commanded(log) == 0


async def test_a_relay_never_commanded_is_left_alone(tmp_path: Path) -> None:
    async with await Log.open(tmp_path, OPTIONS) as log:
        await log.append_journal(KIND, {"state": "on"})       # damaged: skipped
        await log.commit()
        backend = SimBackend(relay=0)
        assert await restore_relay(log, IoDriver(backend)) is None
        assert backend.relay == 0


async def test_a_module_that_does_not_take_the_state_is_a_warning_not_a_failed_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    definition = parse_definition(b"modbusTCP;IO;Acme;IO-2\n1;1;5;;;Relay;io:RELAY;1;0;;4\n",
                                  "module.csv").value
    module = Device(line=3, index="12", interface=f"127.0.0.1:{port}", name="io_module",
                    address=7, timeout_ms=100)
    tcp = ModbusTcpDriver()
    backend = ModbusIoBackend(tcp, module, definition,
                              lambda d, vs: plan_reads(d, 0, variables=vs))
    try:
        async with await Log.open(tmp_path, OPTIONS) as log:
            await log.append_journal(KIND, relay_body(1))
            await log.commit()
            assert await restore_relay(log, IoDriver(backend)) == 1
    finally:
        await tcp.close()
    assert any(r.levelname == "WARNING" and r.getMessage().startswith("Relay state 1 not restored")
               for r in caplog.records)


def _sim_relay(gateway: Gateway) -> int:
    """The state the running gateway's simulated I/O module holds its relay in."""
    assert gateway.plant is not None
    io = next(d for d, _ in gateway.plant.drivers if isinstance(d, IoDriver))
    assert isinstance(io.backend, SimBackend)
    return io.backend.relay


async def _relay_after_a_restart(tmp_path: Path) -> int:
    async with running_gateway(tmp_path, inverters=0, site_written=True) as plant:
        return _sim_relay(plant.gateway)


async def test_a_gateway_restarted_drives_the_relay_it_was_last_commanded(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, inverters=0) as plant:
        assert _sim_relay(plant.gateway) == 0
        await plant.gateway.set_relay(1)
        assert _sim_relay(plant.gateway) == 1
    assert await _relay_after_a_restart(tmp_path) == 1


@pytest.mark.parametrize("written", [0, 1])
async def test_a_relay_written_as_a_variable_is_the_state_a_restart_drives(
        tmp_path: Path, written: int) -> None:
    # `writeVariable` on the IO relay (the command, the web UI, a script's wd.set) commands it
    # as `setRelay` does: the state it wrote is the last commanded one.
    async with running_gateway(tmp_path, inverters=0) as plant:
        await plant.gateway.set_relay(1 - written)
        await plant.gateway.write_variable("IO", 9, Decimal(written), raw=True)
        assert _sim_relay(plant.gateway) == written
    assert await _relay_after_a_restart(tmp_path) == written
