"""S0 counters of a Modbus I/O module across restarts (docs/formats.md §9.4, the S0 **Decision**).

The I/O driver turns a module's pulse register into a running total (`S0Counter`). With each
record of the `IO` device the service journals an `s0` event holding, per counter channel, the
module's register value and the total:

    s0  {"module": "<daq index of the module>", "counters": {"1": [<module value>, <total>]}}

Replaying the journal folds them into `state` snapshots (store.state.reduce_s0), so a journal
quota that drops old segments keeps the totals. At start the module's latest `s0` event (or the
latest snapshot's copy) restores the counters, so the first read after a stop adds the pulses the
module counted meanwhile (or, after a module reset, its new count) to the saved total instead of
starting again from 0. The simulated backend needs none of this (its
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
    """Counters restored from the module's latest `s0` event, or from the latest `state`
    snapshot when the journal's quota dropped every `s0` event since; how many."""
    backend = counters.backend
    table = await asyncio.to_thread(store.journal, kinds=[KIND, "state"])
    rows = table.sort_by("seq")
    for kind, body_text in zip(reversed(rows.column("kind").to_pylist()),
                               reversed(rows.column("body").to_pylist()), strict=True):
        saved = _saved_counters(kind, json.loads(body_text), counters.module)
        if saved is None:
            continue
        restored = 0
        for channel, pair in saved.items():
            if isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int)
                                                                 for v in pair):
                backend.restore_counter(int(channel), pair[0], pair[1])
                restored += 1
        if restored:
            log.info("S0 counters restored. module=%s counters=%s", counters.module, saved)
        return restored
    return 0


def _saved_counters(kind: str, body: object, module: str) -> dict[str, object] | None:
    """The module's counters in an `s0` event or a `state` snapshot (store.state.reduce_s0)."""
    if not isinstance(body, dict):
        return None
    if kind == "state":
        extra = body.get("extra")
        saved = extra.get("s0") if isinstance(extra, dict) else None
        found = saved.get(module) if isinstance(saved, dict) else None
    else:
        found = body.get("counters") if body.get("module") == module else None
    return found if isinstance(found, dict) else None
