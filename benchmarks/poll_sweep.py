"""poll_sweep: one full poll of N Modbus TCP devices x R registers on loopback (docs/architecture.md
§7).

The simulated devices run in a child process (one lean TCP server per device, as a plant has one
`ip:port` per inverter) and answer each request after a latency, as real inverters and
RTU-to-TCP gateways do: by default drawn per device between 5 and 30 ms (fixed seed). The
gateway side measured here is only the driver under test; wall and CPU seconds (of this process)
are taken per sweep.

Ours: the planner's coalesced reads, every device polled concurrently, values decoded.
Baselines, interleaved with ours round by round, one line each:
- pymodbus, coalesced block reads, all devices concurrent (asyncio.gather): the one that counts;
- pymodbus, coalesced block reads, devices one after another;
- naive: pymodbus, one read per variable, devices one after another. At 5-30 ms a request that
  is ~7 minutes a sweep, so it is timed on an evenly spread sample of devices and scaled to all
  of them (sequential times add up; `theirs_devices_timed` says how many were timed).
Every side decodes each variable by its declared type (ours with its codec, the baselines with
pymodbus' `convert_from_registers`), as a gateway driven by a definition file must; checking
the values read is left out of the timed sweeps.

    python benchmarks/poll_sweep.py [--devices 254] [--registers 100] [--n 5]
        [--latency-ms 5-30] [--naive-devices 8] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

# Run as a script: this checkout's packages, not an installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _defs import u16_block
from _memory import PeakRss, peak_rss_mb, reset_peak
from _report import emit, figure_line

from config.model import (
    DataType,
    DefinitionFile,
    Device,
    Quality,
    Variable,
)
from pipeline.drivers._base import Readings, ReadPlan
from pipeline.drivers.modbus.planner import ModbusPlan, plan_reads
from pipeline.drivers.modbus.simulator import serve_fleet
from pipeline.drivers.modbus.tcp import ModbusTcpDriver

UNIT_ID = 1
TIMEOUT_MS = 5000
LATENCY_SEED = 19

_T = TypeVar("_T")


def parse_latency(text: str) -> tuple[float, float]:
    """'5-30' (a range in ms, drawn per device) or '10' (every device): (low_s, high_s)."""
    low, _, high = text.partition("-")
    lo, hi = float(low), float(high or low)
    if lo < 0 or hi < lo:
        raise ValueError(f"latency {text!r}: want LOW-HIGH in ms, 0 <= LOW <= HIGH")
    return lo / 1000, hi / 1000


def device_delays(devices: int, latency_s: tuple[float, float]) -> list[float]:
    rng = random.Random(LATENCY_SEED)
    return [rng.uniform(*latency_s) for _ in range(devices)]


# --------------------------------------------------------------------------- ours


async def _sweep_ours(driver: ModbusTcpDriver, devices: list[Device], plan: ReadPlan
                      ) -> list[Readings]:
    return await asyncio.gather(*(driver.read(d, plan) for d in devices))


def _check_ours(results: list[Readings], plan: ReadPlan) -> int:
    """Every value read good (checked outside the timed sweep); returns the requests sent."""
    good = sum(1 for r in results for v in r.values.values() if v.quality is Quality.GOOD)
    if good != len(results) * len(plan.variables):
        raise RuntimeError(f"sweep read {good} good values of "
                           f"{len(results) * len(plan.variables)}")
    return sum(r.requests for r in results)


# --------------------------------------------------------------------------- pymodbus baselines


@dataclass(frozen=True, slots=True)
class _Point:
    """One variable inside a read: its key, offset and width in the reply, pymodbus type."""

    key: str
    offset: int
    count: int
    data_type: Any


@dataclass(frozen=True, slots=True)
class _Block:
    address: int
    count: int
    points: tuple[_Point, ...]


def _pymodbus_type(data_type: DataType) -> Any:
    from pymodbus.client.mixin import ModbusClientMixin

    types = ModbusClientMixin.DATATYPE
    known = {DataType.U16: types.UINT16, DataType.I16: types.INT16, DataType.U32: types.UINT32,
             DataType.I32: types.INT32, DataType.F32: types.FLOAT32}
    return known[data_type]


def _block(address: int, count: int, variables: list[Variable]) -> _Block:
    points = []
    for var in variables:
        assert var.modbus is not None and var.modbus.data_type is not None
        points.append(_Point(var.key, var.modbus.address - address, var.modbus.register_count,
                             _pymodbus_type(var.modbus.data_type)))
    return _Block(address, count, tuple(points))


def _blocks(plan: ModbusPlan) -> list[_Block]:
    """The same coalesced ranges as ours: a competent loop reads blocks, not variables."""
    by_index = {v.index: v for v in plan.variables}
    return [_block(r.address, r.count, [by_index[i] for i in r.indexes])
            for r in plan.requests]


def _singles(definition: DefinitionFile) -> list[_Block]:
    return [_block(v.modbus.address, v.modbus.register_count, [v])
            for v in definition.variables if v.modbus is not None]


async def _read_device(client: Any, blocks: list[_Block]) -> dict[str, object]:
    """Each block read, then each variable decoded by its declared type with pymodbus' own
    converter, as a gateway driven by a definition file must (the registers of a block are
    not all U16 in general, even though this workload's are)."""
    convert = client.convert_from_registers
    values: dict[str, object] = {}
    for block in blocks:
        reply = await client.read_holding_registers(block.address, count=block.count,
                                                    device_id=UNIT_ID)
        if reply.isError():
            raise RuntimeError(f"{client}: {reply}")
        registers = reply.registers
        for point in block.points:
            values[point.key] = convert(registers[point.offset:point.offset + point.count],
                                        point.data_type)
    return values


async def _sweep_sequential(clients: list[Any], blocks: list[_Block]) -> int:
    values = 0
    for client in clients:
        values += len(await _read_device(client, blocks))
    return values


async def _sweep_concurrent(clients: list[Any], blocks: list[_Block]) -> int:
    results = await asyncio.gather(*(_read_device(c, blocks) for c in clients))
    return sum(len(r) for r in results)


async def _pymodbus_clients(ports: list[int]) -> list[Any]:
    from pymodbus.client import AsyncModbusTcpClient

    clients = [AsyncModbusTcpClient("127.0.0.1", port=port, timeout=TIMEOUT_MS / 1000,
                                    retries=0) for port in ports]
    connected = await asyncio.gather(*(c.connect() for c in clients))
    if not all(connected):
        raise RuntimeError(f"pymodbus: {connected.count(False)} devices did not connect")
    return clients


# --------------------------------------------------------------------------- measuring


@dataclass
class _Side:
    """Wall and CPU seconds per sweep of one contender, and its peak memory."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    memory: PeakRss = field(default_factory=PeakRss)

    async def time(self, sweep: Callable[[], Awaitable[_T]], scale: float = 1.0) -> _T:
        with self.memory:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            count = await sweep()
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        self.wall.append(wall * scale)
        self.cpu.append(cpu * scale)
        return count


async def _measure(ports: list[int], registers: int, n: int, naive_devices: int,
                   delays_s: list[float]) -> list[dict[str, object]]:
    definition = u16_block(registers)
    plan = plan_reads(definition)
    devices = [Device(line=k + 1, index=str(k + 1), interface=f"127.0.0.1:{port}",
                      name=f"inv{k + 1}", address=UNIT_ID, timeout_ms=TIMEOUT_MS)
               for k, port in enumerate(ports)]
    timed = len(ports) if naive_devices <= 0 else min(naive_devices, len(ports))
    naive_pick = [round(k * len(ports) / timed) for k in range(timed)]
    naive_scale = len(ports) / timed
    blocks, singles = _blocks(plan), _singles(definition)
    ours, concurrent, sequential, naive = _Side(), _Side(), _Side(), _Side()
    driver = ModbusTcpDriver()
    clients: list[Any] = []
    try:
        # Ours alone first, before pymodbus is imported: its resident size without theirs.
        reset_peak()
        _check_ours(await _sweep_ours(driver, devices, plan), plan)  # warm-up: connect all
        ours_alone_mb = peak_rss_mb()
        clients = await _pymodbus_clients(ports)
        naive_clients = [clients[k] for k in naive_pick]
        await _sweep_concurrent(clients, blocks)                   # warm-up
        await _sweep_naive_warm(naive_clients, singles)
        requests = len(plan.requests) * len(devices)
        expected = registers * len(devices)
        for _ in range(n):
            results = await ours.time(lambda: _sweep_ours(driver, devices, plan))
            if _check_ours(results, plan) != requests:
                raise RuntimeError("ours: unexpected request count")
            for side, sweep, scale in (
                    (concurrent, lambda: _sweep_concurrent(clients, blocks), 1.0),
                    (sequential, lambda: _sweep_sequential(clients, blocks), 1.0),
                    (naive, lambda: _sweep_sequential(naive_clients, singles), naive_scale)):
                got = await side.time(sweep, scale)
                if round(got * (naive_scale if side is naive else 1.0)) != expected:
                    raise RuntimeError(f"baseline read {got} values, not {expected}")
        # Both read the right registers, not only as many: register r of device k holds k + r.
        last = len(ports) - 1
        want = {f"R{r}": (last + r) & 0xFFFF for r in range(registers)}
        ours_last = {f"R{i - 1}": v.value for i, v in results[last].values.items()}
        if ours_last != want or await _read_device(clients[last], blocks) != want:
            raise RuntimeError("a side read other values than the devices hold")
    finally:
        for client in clients:
            client.close()
        await driver.close()
    common: dict[str, object] = {
        "n": n, "devices": len(devices), "registers": registers,
        "latency_ms": _latency_text(delays_s),
        "ours_cpu_s": round(statistics.median(ours.cpu), 4),
        "requests_per_sweep": requests,
        "target_sweep_s": 1.0,
    }
    lines = []
    # Targets (docs/architecture.md §7 and the benchmark's brief): a sweep no slower than
    # concurrent pymodbus, with at least 2x less CPU; >= 20x the naive loop.
    for name, side, reqs, extra in (
            ("pymodbus, coalesced block reads, all devices concurrent (asyncio.gather)",
             concurrent, requests, {"target_speedup": 1.0, "target_cpu_speedup": 2.0}),
            ("pymodbus, coalesced block reads, devices one after another", sequential,
             requests, {}),
            ("naive: pymodbus, one read per variable, devices one after another",
             naive, len(singles) * len(devices),
             {"theirs_devices_timed": timed, "theirs_scaled_by": round(naive_scale, 3),
              "target_speedup": 20.0})):
        cpu_theirs = statistics.median(side.cpu)
        lines.append(figure_line(
            "poll_sweep", name, "s", ours.wall, side.wall,
            peak_rss_mb=ours.memory.mb, theirs_peak_rss_mb=side.memory.mb,
            digits=4, speedup_digits=2, **common,
            theirs_cpu_s=round(cpu_theirs, 4),
            cpu_speedup=round(cpu_theirs / statistics.median(ours.cpu), 2),
            baseline_requests_per_sweep=reqs,
            ours_rss_alone_mb=round(ours_alone_mb, 1), **extra))
    return lines


async def _sweep_naive_warm(clients: list[Any], singles: list[_Block]) -> None:
    await _sweep_sequential(clients[:1], singles[:5])


def _latency_text(delays_s: list[float]) -> str:
    low, high = min(delays_s) * 1000, max(delays_s) * 1000
    return f"{low:.1f}-{high:.1f}" if high > low else f"{low:g}"


def run(devices: int = 254, registers: int = 100, n: int = 5,
        latency_s: tuple[float, float] = (0.005, 0.030),
        naive_devices: int = 8) -> list[dict[str, object]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 1024, 6 * devices + 64))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    delays = device_delays(devices, latency_s)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=serve_fleet, args=(len(delays), registers, UNIT_ID, child),
                         kwargs={"delays_s": delays}, name="poll-sweep-sim")
    server.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("simulated devices did not start within 60 s")
        ports: list[int] = parent.recv()
        return asyncio.run(_measure(ports, registers, n, naive_devices, delays))
    finally:
        parent.send("stop")
        server.join(10)
        if server.is_alive():
            server.kill()
            server.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=254)
    parser.add_argument("--registers", type=int, default=100)
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--latency-ms", default="5-30",
                        help="reply latency: LOW-HIGH (drawn per device) or one value; 0: none")
    parser.add_argument("--naive-devices", type=int, default=8,
                        help="devices the naive loop is timed on (0: all)")
    parser.add_argument("--quick", action="store_true", help="tiny size, for a smoke test")
    args = parser.parse_args()
    if args.quick:
        lines = run(devices=4, registers=20, n=1, latency_s=(0.001, 0.003), naive_devices=2)
    else:
        lines = run(args.devices, args.registers, args.n, parse_latency(args.latency_ms),
                    args.naive_devices)
    for line in lines:
        emit(line)


if __name__ == "__main__":
    main()
