"""poll_sweep: one full poll of N Modbus TCP devices x R registers on loopback (DESIGN.md §7).

The simulated devices run in a child process (one lean TCP server per device, as a plant has one
`ip:port` per inverter), so the gateway side measured here is only our driver. Ours: the planner's
coalesced reads, every connection polled concurrently. Baseline: a naive sequential loop that
reads one variable per request over the same connections. Prints one STYLE.md §10 JSON line.

    python benchmarks/poll_sweep.py [--devices 254] [--registers 100] [--n 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import time
from pathlib import Path

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
    Variable,
)
from pipeline.drivers._base import ReadPlan
from pipeline.drivers.modbus.planner import plan_reads
from pipeline.drivers.modbus.simulator import serve_fleet
from pipeline.drivers.modbus.tcp import ModbusTcpDriver

UNIT_ID = 1
TIMEOUT_MS = 5000


def _definition(registers: int) -> DefinitionFile:
    variables = tuple(
        Variable(line=r + 2, index=r + 1, info1="3", info2=str(r), info3="U16", info4="",
                 name=f"R{r}", tag="", coef_a=1, coef_b=0, unit="",  # type: ignore[arg-type]
                 action=Action.INSTANT, key=f"R{r}",
                 modbus=ModbusPoint(kind=RegisterKind.HOLDING_REGISTER, address=r,
                                    data_type=DataType.U16))
        for r in range(registers))
    return DefinitionFile(file_name="bench.csv", protocol=Protocol.MODBUS_TCP, category="",
                          manufacturer="", model="", variables=variables, sha256="0" * 64)


async def _sweep_ours(driver: ModbusTcpDriver, devices: list[Device], plan: ReadPlan) -> int:
    results = await asyncio.gather(*(driver.read(d, plan) for d in devices))
    good = sum(1 for r in results for v in r.values.values() if v.quality is Quality.GOOD)
    if good != len(devices) * len(plan.variables):
        raise RuntimeError(f"sweep read {good} good values of "
                           f"{len(devices) * len(plan.variables)}")
    return sum(r.requests for r in results)


async def _sweep_naive(driver: ModbusTcpDriver, devices: list[Device],
                       definition: DefinitionFile) -> int:
    requests = 0
    for device in devices:
        endpoint = device.tcp_endpoint
        assert endpoint is not None
        conn = driver.connection(*endpoint)
        for var in definition.variables:
            assert var.modbus is not None
            await conn.read_registers(UNIT_ID, 3, var.modbus.address, var.modbus.register_count,
                                      TIMEOUT_MS)
            requests += 1
    return requests


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _measure(ports: list[int], registers: int, n: int) -> dict[str, object]:
    definition = _definition(registers)
    plan = plan_reads(definition)
    devices = [Device(line=k + 1, index=str(k + 1), interface=f"127.0.0.1:{port}",
                      name=f"inv{k + 1}", address=UNIT_ID, timeout_ms=TIMEOUT_MS)
               for k, port in enumerate(ports)]
    driver = ModbusTcpDriver()
    try:
        await _sweep_ours(driver, devices, plan)                   # warm-up: connect everything
        await _sweep_naive(driver, devices[:1], definition)
        ours, theirs = [], []
        requests = baseline_requests = 0
        for _ in range(n):
            started = time.perf_counter()
            requests = await _sweep_ours(driver, devices, plan)
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            baseline_requests = await _sweep_naive(driver, devices, definition)
            theirs.append(time.perf_counter() - started)
        rss = _rss_mb()
    finally:
        await driver.close()
    return figure_line("poll_sweep", "naive sequential, one read per variable", "s", ours,
                       theirs, digits=4, speedup_digits=1, n=n, devices=len(devices),
                       registers=registers, requests_per_sweep=requests,
                       baseline_requests_per_sweep=baseline_requests,
                       gateway_rss_mb=round(rss, 1))


def run(devices: int = 254, registers: int = 100, n: int = 5) -> dict[str, object]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 1024, 4 * devices + 64))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=serve_fleet, args=(devices, registers, UNIT_ID, child),
                         name="poll-sweep-sim")
    server.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("simulated devices did not start within 60 s")
        ports: list[int] = parent.recv()
        return asyncio.run(_measure(ports, registers, n))
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
    args = parser.parse_args()
    emit(run(args.devices, args.registers, args.n))


if __name__ == "__main__":
    main()
