"""The web UI's one view of the running gateway: what pages and the JSON API read and do.

Every method returns plain JSON-able data (dicts, lists, str, int, float, bool, None), so a page
renders exactly what its `/api/` twin sends. Reads of the store run in a worker thread (the store
is blocking); nothing here imports more than the service has already loaded (pyarrow, never
polars or duckdb).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc

from config.model import Device, Quality, Variable
from exporters.views.events import DeviceAlarm, EventBodyError, alarm_from_body, journal_items
from pipeline.clock import NS_PER_S
from pipeline.drivers.modbus.codec import scaled_value

if TYPE_CHECKING:
    from pipeline.service.gateway import Gateway

#: Chart spans (docs/behaviour.md §10.2 Device page) and the points a chart gets at most.
SPANS_S: Final = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400}
MAX_POINTS: Final = 500
ALARM_HOURS: Final = 24
#: The dashboard's status (backlogs read the store) is reused for this long.
STATUS_TTL_S: Final = 2.0


class NotFound(LookupError):
    """A device, variable or resource the request names does not exist."""


@dataclass(slots=True)
class _Cached:
    at: float
    value: dict[str, Any]


def _local(ts_ns: int | None, zone: ZoneInfo) -> str:
    if ts_ns is None:
        return ""
    return datetime.fromtimestamp(ts_ns / NS_PER_S, zone).strftime("%Y-%m-%d %H:%M:%S")


def _number(value: Decimal | str) -> float | str:
    """A scaled value for JSON: a number when it is one, else its text."""
    if isinstance(value, str):
        return value
    return int(value) if value == value.to_integral_value() and abs(value) < 2**53 \
        else float(value)


class GatewayFacade:
    """Reads and actions over one `Gateway` (its site, poller and store change at reloads:
    each call reads the current ones)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._status: _Cached | None = None
        self._status_lock = asyncio.Lock()

    # ------------------------------------------------------------------ identity

    def uid(self) -> str:
        site = self.gateway.site
        return site.uid if site is not None else ""

    def web_user(self) -> str:
        site = self.gateway.site
        return site.settings.web_user if site is not None else "admin"

    def web_password_hash(self) -> str:
        site = self.gateway.site
        return site.settings.web_password_hash if site is not None else ""

    def zone(self) -> ZoneInfo:
        site = self.gateway.site
        return ZoneInfo(site.settings.time_zone if site is not None else "UTC")

    # ------------------------------------------------------------------ dashboard

    async def status(self) -> dict[str, Any]:
        """docs/formats.md §12.4's status object (the gateway's), reused for `STATUS_TTL_S`."""
        async with self._status_lock:
            now = time.monotonic()
            if self._status is None or now - self._status.at > STATUS_TTL_S:
                self._status = _Cached(now, await self.gateway.status())
            return self._status.value

    async def dashboard(self) -> dict[str, Any]:
        status = await self.status()
        alarms = await self.alarms(hours=ALARM_HOURS)
        return {"status": status, "alarms": alarms}

    async def alarms(self, *, hours: int = ALARM_HOURS) -> list[dict[str, Any]]:
        """The alarms of the last `hours`, newest first."""
        store = self.gateway.store
        if store is None:
            return []
        start = time.time_ns() - hours * 3600 * NS_PER_S
        table = await asyncio.to_thread(store.journal, start_ns=start, kinds=["alarm"])
        zone = self.zone()
        out: list[dict[str, Any]] = []
        for item in reversed(journal_items(table.sort_by("seq"))):
            try:
                alarm = alarm_from_body(item.body)
            except EventBodyError:
                continue
            if isinstance(alarm, DeviceAlarm):
                text = f"{alarm.name}: variable {alarm.var} = {alarm.value}"
                source = alarm.source.value
            else:
                text = alarm.alarm + (f" ({alarm.subject})" if alarm.subject else "") + \
                    (f": {alarm.text}" if alarm.text else "")
                source = "GATEWAY"
            out.append({"time": _local(item.ts_ns, zone), "ts": item.ts_ns // 1_000_000,
                        "source": source, "device": item.device or "", "text": text})
        return out

    # ------------------------------------------------------------------ devices

    def _device(self, index: str) -> Device:
        site = self.gateway.site
        device = next((d for d in site.daq.devices if d.index == index), None) \
            if site is not None else None
        if device is None:
            raise NotFound(f"no device '{index}'")
        return device

    async def devices(self) -> dict[str, Any]:
        """docs/behaviour.md §10.2 Devices: every daq.csv row with its state."""
        site = self.gateway.site
        if site is None:
            return {"devices": []}
        status = await self.status()
        by_index = {d["index"]: d for d in status.get("devices", [])}
        poller = self.gateway.poller
        overruns = dict(poller.overruns_by_device) if poller is not None else {}
        rows = []
        for d in site.daq.devices:
            known = by_index.get(d.index, {})
            rows.append({
                "index": d.index, "name": d.name, "interface": d.interface,
                "address": d.address, "kind": d.kind.value, "acqPeriodS": d.acq_period_s,
                "defFile": d.def_file, "category": d.category, "model": d.model,
                "state": known.get("state", "absent"),
                "lastRecord": known.get("lastRecord", ""),
                "storeBytes": known.get("storeBytes", 0),
                "quotaBytes": known.get("quotaBytes", 0),
                "dropped": known.get("dropped", 0), "overruns": overruns.get(d.index, 0)})
        return {"devices": rows}

    def device(self, index: str) -> dict[str, Any]:
        """One device: its daq.csv row and live values (the last poll, scaled, with units)."""
        device = self._device(index)
        site = self.gateway.site
        assert site is not None
        definition = site.definition_of(device)
        row = {"index": device.index, "name": device.name, "interface": device.interface,
               "address": device.address, "acqPeriodS": device.acq_period_s,
               "timeoutMs": device.timeout_ms, "serialNumber": device.serial_number,
               "parameters": device.parameters, "category": device.category,
               "model": device.model, "defFile": device.def_file, "kind": device.kind.value}
        variables = [] if definition is None else [
            {"index": v.index, "name": v.name, "unit": v.unit, "tag": v.tag,
             "action": int(v.action), "chart": _chartable(v)}
            for v in definition.variables if v.action.is_polled]
        return {"device": row, "variables": variables, "values": self.values(index)}

    def values(self, index: str) -> dict[str, Any]:
        """The device's last poll: per variable its scaled value, unit and quality."""
        device = self._device(index)
        site, poller = self.gateway.site, self.gateway.poller
        assert site is not None
        definition = site.definition_of(device)
        readings = None
        if poller is not None and definition is not None:
            try:
                readings = poller.latest(index)
            except LookupError:
                readings = None
            except Exception:  # noqa: BLE001 - a device not polled in this generation
                readings = None
        if readings is None or definition is None:
            return {"ts": None, "time": "", "ageS": None, "values": []}
        values = []
        for var in definition.variables:
            if not var.action.is_polled or var.index not in readings.values:
                continue
            reading = readings.values[var.index]
            shown: float | str | None = None
            if reading.value is not None:
                try:
                    shown = _number(scaled_value(var, reading.value))
                except ArithmeticError:
                    shown = str(reading.value)
            values.append({"index": var.index, "name": var.name, "value": shown,
                           "unit": var.unit, "quality": int(reading.quality),
                           "good": Quality(reading.quality).is_good})
        age = max(0.0, (time.time_ns() - readings.ts_ns) / NS_PER_S)
        return {"ts": readings.ts_ns // 1_000_000, "time": _local(readings.ts_ns, self.zone()),
                "ageS": round(age, 1), "values": values}

    async def history(self, index: str, var: int, span: str) -> dict[str, Any]:
        """A variable's records over `span` (1h, 24h, 7d) in at most 500 buckets, each with its
        mean, minimum and maximum (action 2's vmin/vmax kept)."""
        self._device(index)
        if span not in SPANS_S:
            raise ValueError(f"span must be one of {', '.join(SPANS_S)}")
        store = self.gateway.store
        if store is None:
            return {"x": [], "mean": [], "min": [], "max": []}
        end_ns = time.time_ns()
        start_ns = end_ns - SPANS_S[span] * NS_PER_S
        return await asyncio.to_thread(_buckets, store.records, index, var, start_ns, end_ns)


def _chartable(var: Variable) -> bool:
    """Numbers are charted; text types (strings, TIC labels of text) are not."""
    if var.modbus is not None:
        return var.modbus.data_type is None or var.modbus.data_type.value != "String"
    return True


def _buckets(records: Any, index: str, var: int, start_ns: int, end_ns: int) -> dict[str, Any]:
    table: pa.Table = records(index, start_ns=start_ns, end_ns=end_ns)
    table = table.filter(pc.equal(table.column("var"), var)).select(["ts", "value", "vmin",
                                                                     "vmax"])
    table = table.filter(pc.is_valid(table.column("value")))
    if table.num_rows == 0:
        return {"x": [], "mean": [], "min": [], "max": []}
    width = max(1, (end_ns - start_ns) // MAX_POINTS)
    ts = table.column("ts").cast(pa.int64())
    bucket = pc.divide(pc.subtract(ts, start_ns), width)
    value = table.column("value")
    low = pc.coalesce(table.column("vmin"), value)
    high = pc.coalesce(table.column("vmax"), value)
    grouped = pa.table({"b": bucket, "v": value, "lo": low, "hi": high}).group_by("b").aggregate(
        [("v", "mean"), ("lo", "min"), ("hi", "max")]).sort_by("b")
    x = [(start_ns + b * width + width // 2) / NS_PER_S
         for b in grouped.column("b").to_pylist()]
    return {"x": x, "mean": grouped.column("v_mean").to_pylist(),
            "min": grouped.column("lo_min").to_pylist(),
            "max": grouped.column("hi_max").to_pylist()}
