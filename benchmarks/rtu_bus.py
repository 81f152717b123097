"""rtu_bus: the sweep time of a simulated RS-485 bus against its theoretical minimum.

The simulated devices run in a child process behind a pty (`simulator.serve_rtu_bus`), where
every frame takes its real time on the wire at the port's speed, so the gateway side measured here
is only our driver. Ours: one sweep of `units` devices through `ModbusRtuDriver`, each device one
read of `registers` holding registers, after an idle pause longer than the timeout (as between
poll cycles). Theirs: the theoretical minimum of the same sweep, computed from the frames it put
on the wire (the bus trace): every frame's characters, 3.5 characters of 11 bits before each
request that follows a reply, the timeout after each unanswered request. speedup = theoretical /
measured: 1.0 is the wire's own speed, the target is >= 0.95. One line per speed (9600 and 19200
baud) and bus (every unit on; the middle unit switched off).

    python benchmarks/rtu_bus.py [--units 8] [--registers 40] [--timeout-ms 200] [--n 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import statistics
import time
from collections.abc import Sequence
from decimal import Decimal

from _report import emit, figure_line

from config.model import (
    Action,
    DataType,
    DefinitionFile,
    Device,
    ModbusPoint,
    Protocol,
    Quality,
    RegisterKind,
    SerialPort,
    Variable,
)
from pipeline.drivers.modbus.planner import plan_reads
from pipeline.drivers.modbus.rtu import ModbusRtuDriver, RtuBus
from pipeline.drivers.modbus.simulator import SimulatedDevice, serve_rtu_bus
from pipeline.drivers.modbus.trace import Direction, FrameTrace, TraceError

SPEEDS = (9600, 19200)
#: 8N1, the framing a pty can keep: 10 bits a character on the wire.
CHAR_BITS = 10
BASELINE = "theoretical minimum of the frames on the wire"


def _definition(registers: int) -> DefinitionFile:
    variables = tuple(
        Variable(line=r + 2, index=r + 1, info1="3", info2=str(r), info3="U16", info4="",
                 name=f"R{r}", tag="", coef_a=Decimal(1), coef_b=Decimal(0), unit="",
                 action=Action.INSTANT, key=f"R{r}",
                 modbus=ModbusPoint(kind=RegisterKind.HOLDING_REGISTER, address=r,
                                    data_type=DataType.U16))
        for r in range(registers))
    return DefinitionFile(file_name="bench.csv", protocol=Protocol.MODBUS_RTU, category="",
                          manufacturer="", model="", variables=variables, sha256="0" * 64)


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
                 registers: int) -> None:
    plan = plan_reads(_definition(registers))
    for device in devices:
        readings = await driver.read(device, plan)
        expected = Quality.TIMEOUT if device.address == switched_off else Quality.GOOD
        qualities = {reading.quality for reading in readings.values.values()}
        if qualities != {expected}:
            raise RuntimeError(f"unit {device.address}: qualities {sorted(qualities)}, "
                               f"expected {expected!r}")


async def _measure(path: str, speed: int, units: int, registers: int, timeout_ms: int,
                   switched_off: int | None, n: int) -> dict[str, object]:
    frames: list[FrameTrace] = []
    bus = RtuBus(SerialPort(line=1, port="SERIAL1", speed=speed), path=path,
                 trace=frames.append)
    driver = ModbusRtuDriver()
    driver.attach(bus)
    devices = [Device(line=u, index=str(u), interface="SERIAL1", name=f"inv{u}", address=u,
                      timeout_ms=timeout_ms) for u in range(1, units + 1)]
    ours, theirs, cpu = [], [], []
    try:
        await _sweep(driver, devices, switched_off, registers)      # warm-up: opens the port
        for _ in range(n):
            await asyncio.sleep(1.5 * timeout_ms / 1000)            # the pause between polls
            frames.clear()
            started, cpu_started = time.perf_counter(), time.process_time()
            await _sweep(driver, devices, switched_off, registers)
            ours.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
            theirs.append(theoretical_sweep_s(frames, speed, timeout_ms / 1000))
    finally:
        await driver.close()
    sent = [f for f in frames if f.direction is Direction.SENT]
    return figure_line(
        "rtu_bus", BASELINE, "s", ours, theirs, digits=4, speed=speed, units=units,
        registers=registers, timeout_ms=timeout_ms, switched_off_unit=switched_off,
        requests_per_sweep=len(sent), bytes_on_wire_per_sweep=sum(len(f.data) for f in frames),
        cpu_s_per_sweep=round(statistics.median(cpu), 4), n=n,
        peak_rss_mb=round(_peak_rss_mb(), 1))


def run_one(speed: int, units: int, registers: int, timeout_ms: int, switched_off: int | None,
            n: int) -> dict[str, object]:
    """One figure line; the simulated bus runs in a child process for the run's length."""
    fleet = {u: SimulatedDevice() for u in range(1, units + 1) if u != switched_off}
    for u, device in fleet.items():
        device.set_words(0, [(u + r) & 0xFFFF for r in range(registers)])
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=serve_rtu_bus, args=(fleet, speed, child), name="rtu-bus-sim")
    server.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("simulated bus did not start within 60 s")
        path: str = parent.recv()
        line = asyncio.run(_measure(path, speed, units, registers, timeout_ms, switched_off, n))
        parent.send("stop")
        if not parent.poll(10):
            raise RuntimeError("simulated bus did not stop within 10 s")
        silences: list[float] = parent.recv()
    finally:
        server.join(10)
        if server.is_alive():
            server.kill()
            server.join()
    # The silence the simulated devices saw before each request, the wire's own check of §2.4.
    line["min_silence_ms"] = round(min(silences) * 1000, 3) if silences else None
    return line


def configurations(units: int, speeds: Sequence[int] = SPEEDS) -> list[tuple[int, int | None]]:
    """(speed, switched-off unit or None) of every line: each speed with every unit on, then
    with the middle one switched off."""
    return [(speed, off) for speed in speeds for off in (None, units // 2 + 1)]


def run(units: int = 8, registers: int = 40, timeout_ms: int = 200, n: int = 5,
        speeds: Sequence[int] = SPEEDS) -> list[dict[str, object]]:
    return [run_one(speed, units, registers, timeout_ms, off, n)
            for speed, off in configurations(units, speeds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--registers", type=int, default=40)
    parser.add_argument("--timeout-ms", type=int, default=200)
    parser.add_argument("--n", type=int, default=5)
    args = parser.parse_args()
    for speed, off in configurations(args.units):
        emit(run_one(speed, args.units, args.registers, args.timeout_ms, off, args.n))


if __name__ == "__main__":
    main()
