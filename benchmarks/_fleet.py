"""Simulated Modbus TCP devices with a reply latency, served from a child process.

A module of its own (not inside poll_sweep.py) so a spawned child can import it by name, whether
the benchmark runs as a script or is loaded by the smoke tests.
"""

from __future__ import annotations

import asyncio
from multiprocessing.connection import Connection

from pipeline.drivers.modbus.simulator import SimulatedDevice, TcpSimulator


def serve_latency_fleet(registers: int, unit_id: int, delays_s: list[float],
                        pipe: Connection) -> None:
    """Process entry point: one server on 127.0.0.1 per delay given, each one device of
    `registers` holding registers (register r of device k holds k + r) answering every request
    after its delay (in request order, one at a time, as a real device or RTU gateway does);
    sends the ports over `pipe`, then serves until anything arrives on it."""

    async def main() -> None:
        sims = []
        for k, delay in enumerate(delays_s):
            device = SimulatedDevice(delay_s=delay)
            device.set_words(0, [(k + r) & 0xFFFF for r in range(registers)])
            sims.append(TcpSimulator({unit_id: device}))
        ports = [await sim.start() for sim in sims]
        pipe.send(ports)
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        for sim in sims:
            await sim.stop()

    asyncio.run(main())
