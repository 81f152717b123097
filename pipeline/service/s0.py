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

import json
import logging
from dataclasses import dataclass

from config import Site
from pipeline.drivers.io import IoDriver, ModbusIoBackend, backend_module
from pipeline.service.saved import newest_saved
from pipeline.service.wiring import Plant
from store.events import EventBodyError, JsonValue, S0Pair, S0Saved, s0_counters
from store.log import Log

log = logging.getLogger("sunpm.system")

KIND = "s0"


@dataclass(frozen=True, slots=True)
class ModuleCounters:
    """The `IO` device's Modbus module (its daq index) and the backend counting its pulses."""

    module: str
    backend: ModbusIoBackend

    def body(self) -> dict[str, JsonValue] | None:
        """The `s0` event body, or None before any counter was read."""
        counters = {channel: (counter.module_value, counter.total)
                    for channel, counter in self.backend.counters.items()
                    if counter.module_value is not None}
        return S0Saved(module=self.module, counters=counters).to_fields() if counters else None


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
    saved = await newest_saved(store, KIND, lambda kind, body_text: _saved_counters(
        kind, json.loads(body_text), counters.module))
    if saved is None:
        return 0
    for channel, (module_value, total) in saved.items():
        counters.backend.restore_counter(channel, module_value, total)
    if saved:
        log.info("S0 counters restored. module=%s counters=%s", counters.module, saved)
    return len(saved)


def _saved_counters(kind: str, body: object, module: str) -> dict[int, S0Pair] | None:
    """The module's counters in an `s0` event or a `state` snapshot (store.state.reduce_s0)."""
    if not isinstance(body, dict):
        return None
    try:
        if kind == "state":
            extra = body.get("extra")
            saved = extra.get("s0") if isinstance(extra, dict) else None
            found = saved.get(module) if isinstance(saved, dict) else None
            return None if found is None else s0_counters(found)
        event = S0Saved.from_fields(body)
    except EventBodyError:
        return None
    return dict(event.counters) if event.module == module else None
