"""rtu_bus: the sweep time of a simulated RS-485 bus against its theoretical minimum.

The simulated devices run in a child process behind a pty (`simulator.serve_rtu_bus`), where
every frame takes its real time on the wire at the port's speed, so the gateway side measured here
is only our driver. Ours: one sweep of `units` devices through `ModbusRtuDriver`, each device one
read of `registers` holding registers, after an idle pause longer than the timeout (as between
poll cycles). Two baselines, one line each, per speed (9600 and 19200 baud) and bus (every unit
on; the middle unit switched off):

- the theoretical minimum of the same sweep, computed from the frames it put on the wire (the bus
  trace): every frame's characters, 3.5 characters of 11 bits before each request that follows a
  reply, the timeout after each unanswered request. speedup = theoretical / measured: 1.0 is the
  wire's own speed, the target is >= 0.95.
- pymodbus' serial client doing the same block reads with the same timeout and no retry.
  `baseline_min_silence_ms` beside `required_silence_ms` shows whether it keeps the silence the
  standard requires before a request (`min_silence_ms` is ours); what it skips, it gains.

    python benchmarks/rtu_bus.py [--units 8] [--registers 40] [--timeout-ms 200] [--n 5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

import pymodbus
from _defs import u16_block
from _report import emit, figure_line
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusException

from config.model import (
    Device,
    Protocol,
    Quality,
    SerialPort,
)
from pipeline.drivers._base import ReadPlan
from pipeline.drivers.modbus.planner import plan_reads
from pipeline.drivers.modbus.rtu import ModbusRtuDriver, RtuBus
from pipeline.drivers.modbus.simulator import SimulatedDevice, serve_rtu_bus
from pipeline.drivers.modbus.trace import Direction, FrameTrace, TraceError

SPEEDS = (9600, 19200)
#: 8N1, the framing a pty can keep: 10 bits a character on the wire.
CHAR_BITS = 10
BASELINE = "theoretical minimum of the frames on the wire"
PYMODBUS = f"pymodbus {pymodbus.__version__} AsyncModbusSerialClient, same block reads, no retry"


def theoretical_sweep_s(frames: Sequence[FrameTrace], speed: int, timeout_s: float) -> float:
    """The least time the traced exchanges can take on the wire at `speed` (docs/behaviour.md
    §2.4): the characters of every frame, 3.5 characters of 11 bits before a request that follows
    a reply (1.75 ms above 19200 baud), the timeout after a request left unanswered (it is longer
    than the silence, so the next request may follow at once)."""
    char_s = CHAR_BITS / speed
    silence_s = 0.00175 if speed > 19200 else 38.5 / speed
    total = 0.0
    after_reply = False
    for frame in frames:
        if frame.direction is Direction.SENT:
            total += (silence_s if after_reply else 0.0) + len(frame.data) * char_s
            after_reply = False
        elif frame.error is TraceError.TIMEOUT:
            total += timeout_s
        else:
            total += len(frame.data) * char_s
            after_reply = True
    return total


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _sweep(driver: ModbusRtuDriver, devices: list[Device], switched_off: int | None,
                 plan: ReadPlan) -> None:
    for device in devices:
        readings = await driver.read(device, plan)
        expected = Quality.TIMEOUT if device.address == switched_off else Quality.GOOD
        qualities = {reading.quality for reading in readings.values.values()}
        if qualities != {expected}:
            raise RuntimeError(f"unit {device.address}: qualities {sorted(qualities)}, "
                               f"expected {expected!r}")


@dataclass
class _Ours:
    sweeps_s: list[float]
    theoretical_s: list[float]
    cpu_s: list[float]
    frames: list[FrameTrace]          # of the last sweep


async def _measure_ours(path: str, speed: int, devices: list[Device], registers: int,
                        timeout_ms: int, switched_off: int | None, n: int) -> _Ours:
    frames: list[FrameTrace] = []
    driver = ModbusRtuDriver()
    driver.attach(RtuBus(SerialPort(line=1, port="SERIAL1", speed=speed), path=path,
                         trace=frames.append))
    ours = _Ours([], [], [], frames)
    plan = plan_reads(u16_block(registers, Protocol.MODBUS_RTU))      # once per definition, as the poll loop does
    try:
        await _sweep(driver, devices, switched_off, plan)           # warm-up: opens the port
        for _ in range(n):
            await asyncio.sleep(1.5 * timeout_ms / 1000)            # the pause between polls
            frames.clear()
            started, cpu_started = time.perf_counter(), time.process_time()
            await _sweep(driver, devices, switched_off, plan)
            ours.sweeps_s.append(time.perf_counter() - started)
            ours.cpu_s.append(time.process_time() - cpu_started)
            ours.theoretical_s.append(theoretical_sweep_s(frames, speed, timeout_ms / 1000))
    finally:
        await driver.close()
    return ours


async def _sweep_pymodbus(client: AsyncModbusSerialClient, units: int, registers: int,
                          switched_off: int | None) -> None:
    for unit in range(1, units + 1):
        try:
            reply = await client.read_holding_registers(0, count=registers, device_id=unit)
        except ModbusException:
            if unit == switched_off:
                continue
            raise
        if unit == switched_off or reply.isError() or \
                reply.registers != [(unit + r) & 0xFFFF for r in range(registers)]:
            raise RuntimeError(f"pymodbus: unit {unit}: unexpected {reply}")


async def _measure_pymodbus(path: str, speed: int, units: int, registers: int, timeout_ms: int,
                            switched_off: int | None, n: int) -> list[float]:
    """The same sweeps through pymodbus' serial client: block reads, no retry (a switched-off
    unit costs one timeout, as ours), the same timeout."""
    # It logs every timeout at ERROR with a frame dump; the switched-off unit's are expected.
    pymodbus_log = logging.getLogger("pymodbus")
    level = pymodbus_log.level
    pymodbus_log.setLevel(logging.CRITICAL)
    client = AsyncModbusSerialClient(path, baudrate=speed, timeout=timeout_ms / 1000, retries=0)
    sweeps = []
    try:
        if not await client.connect():
            raise RuntimeError(f"pymodbus: cannot open {path}")
        await _sweep_pymodbus(client, units, registers, switched_off)
        for _ in range(n):
            await asyncio.sleep(1.5 * timeout_ms / 1000)
            started = time.perf_counter()
            await _sweep_pymodbus(client, units, registers, switched_off)
            sweeps.append(time.perf_counter() - started)
    finally:
        client.close()
        pymodbus_log.setLevel(level)
    return sweeps


def _min_silence_ms(pipe: Connection) -> float | None:
    """The shortest silence the simulated devices saw before a request since the last ask."""
    pipe.send("silences")
    if not pipe.poll(10):
        raise RuntimeError("simulated bus did not answer within 10 s")
    silences: list[float] = pipe.recv()
    return round(min(silences) * 1000, 3) if silences else None


def run_one(speed: int, units: int, registers: int, timeout_ms: int, switched_off: int | None,
            n: int) -> list[dict[str, object]]:
    """The lines of one bus: against the theoretical minimum, then against pymodbus. The
    simulated bus runs in a child process for the run's length."""
    fleet = {u: SimulatedDevice() for u in range(1, units + 1) if u != switched_off}
    for u, device in fleet.items():
        device.set_words(0, [(u + r) & 0xFFFF for r in range(registers)])
    devices = [Device(line=u, index=str(u), interface="SERIAL1", name=f"inv{u}", address=u,
                      timeout_ms=timeout_ms) for u in range(1, units + 1)]
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=serve_rtu_bus, args=(fleet, speed, child), name="rtu-bus-sim")
    server.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("simulated bus did not start within 60 s")
        path: str = parent.recv()
        ours = asyncio.run(_measure_ours(path, speed, devices, registers, timeout_ms,
                                         switched_off, n))
        our_silence_ms = _min_silence_ms(parent)
        peak_rss_mb = round(_peak_rss_mb(), 1)      # before pymodbus runs in this process
        theirs = asyncio.run(_measure_pymodbus(path, speed, units, registers, timeout_ms,
                                               switched_off, n))
        their_silence_ms = _min_silence_ms(parent)
        parent.send("stop")
    finally:
        server.join(10)
        if server.is_alive():
            server.kill()
            server.join()
    sent = [f for f in ours.frames if f.direction is Direction.SENT]
    common: dict[str, object] = {
        "speed": speed, "units": units, "registers": registers, "timeout_ms": timeout_ms,
        "switched_off_unit": switched_off, "requests_per_sweep": len(sent),
        "bytes_on_wire_per_sweep": sum(len(f.data) for f in ours.frames),
        "cpu_s_per_sweep": round(statistics.median(ours.cpu_s), 4), "n": n,
        # The silence the simulated devices saw before each request: the wire's own check of
        # the 3.5 characters.
        "required_silence_ms": round(38.5 / speed * 1000, 3), "min_silence_ms": our_silence_ms}
    against_wire = figure_line("rtu_bus", BASELINE, "s", ours.sweeps_s, ours.theoretical_s,
                               peak_rss_mb=peak_rss_mb, digits=4)
    against_pymodbus = figure_line("rtu_bus", PYMODBUS, "s", ours.sweeps_s, theirs,
                                   peak_rss_mb=peak_rss_mb, digits=4)
    against_wire.update(common)
    against_pymodbus.update(common, baseline_min_silence_ms=their_silence_ms)
    return [against_wire, against_pymodbus]


def configurations(units: int, speeds: Sequence[int] = SPEEDS) -> list[tuple[int, int | None]]:
    """(speed, switched-off unit or None) of every line: each speed with every unit on, then
    with the middle one switched off."""
    return [(speed, off) for speed in speeds for off in (None, units // 2 + 1)]


def run(units: int = 8, registers: int = 40, timeout_ms: int = 200, n: int = 5,
        speeds: Sequence[int] = SPEEDS) -> list[dict[str, object]]:
    return [line for speed, off in configurations(units, speeds)
            for line in run_one(speed, units, registers, timeout_ms, off, n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--registers", type=int, default=40)
    parser.add_argument("--timeout-ms", type=int, default=200)
    parser.add_argument("--n", type=int, default=5)
    args = parser.parse_args()
    for speed, off in configurations(args.units):
        for line in run_one(speed, args.units, args.registers, args.timeout_ms, off, args.n):
            emit(line)


if __name__ == "__main__":
    main()
