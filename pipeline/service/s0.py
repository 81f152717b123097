"""S0 counters of a Modbus I/O module across restarts (docs/formats.md §9.4, the S0 **Decision**).

The I/O driver turns a module's pulse register into a running total (`S0Counter`). With each
record of the `IO` device the service journals an `s0` event holding, per counter channel, the
module's register value and the total:

    s0  {"module": "<daq index of the module>", "counters": {"1": [<module value>, <total>]}}

At start the last `s0` event of that module restores the counters, so the first read after a
stop adds the pulses the module counted meanwhile (or, after a module reset, its new count) to the
saved total instead of starting again from 0. The simulated backend needs none of this (its
counts are a function of time).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from config import Site
from pipeline.drivers.io import IoDriver, ModbusIoBackend, backend_module
from pipeline.service.wiring import Plant
from store.log import Log

log = logging.getLogger("sunpm.system")

KIND = "s0"


@dataclass(frozen=True, slots=True)
class ModuleCounters:
    """The `IO` device's Modbus module (its daq index) and the backend counting its pulses."""

    module: str
    backend: ModbusIoBackend

    def body(self) -> dict[str, object] | None:
        """The `s0` event body, or None before any counter was read."""
        counters = {str(channel): [counter.module_value, counter.total]
                    for channel, counter in self.backend.counters.items()
                    if counter.module_value is not None}
        return {"module": self.module, "counters": counters} if counters else None


def module_counters(plant: Plant, site: Site) -> ModuleCounters | None:
    io = next((d for d in site.daq.devices if d.index == "IO"), None)
    module = backend_module(io.parameters) if io is not None else None
    if module is None:
        return None
    for driver, _ in plant.drivers:
        if isinstance(driver, IoDriver) and isinstance(driver.backend, ModbusIoBackend) \
                and driver.backend.counters:
            return ModuleCounters(module, driver.backend)
    return None


async def restore_counters(store: Log, counters: ModuleCounters) -> int:
    """Counters restored from the module's last `s0` event; how many."""
    backend = counters.backend
    table = await asyncio.to_thread(store.journal, kinds=[KIND])
    if not table.num_rows:
        return 0
    for body_text in reversed(table.sort_by("seq").column("body").to_pylist()):
        body = json.loads(body_text)
        if body.get("module") != counters.module:
            continue
        restored = 0
        for channel, pair in body.get("counters", {}).items():
            if isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int)
                                                                 for v in pair):
                backend.restore_counter(int(channel), pair[0], pair[1])
                restored += 1
        if restored:
            log.info("S0 counters restored. module=%s counters=%s", counters.module,
                     body["counters"])
        return restored
    return 0
