"""The web UI's one view of the running gateway: what pages and the JSON API read and do.

Every method returns plain JSON-able data (dicts, lists, str, int, float, bool, None), so a page
renders exactly what its `/api/` twin sends. Reads of the store run in a worker thread (the store
is blocking); nothing here imports more than the service has already loaded (pyarrow, never
polars or duckdb).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo, available_timezones

import pyarrow as pa
import pyarrow.compute as pc

from config import (
    ConfigError,
    VarIni,
    parse_config_ini,
    parse_daq,
    parse_definition,
    parse_var_ini,
)
from config.decimal_text import read_decimal, read_integer
from config.errors import Problem
from config.model import (
    DefinitionFile,
    Device,
    DeviceKind,
    GatewaySettings,
    Quality,
    ServerType,
    Variable,
)
from exporters.views.context import ViewConfig
from exporters.views.log import log_text
from pipeline.clock import NS_PER_S
from pipeline.drivers._base import tic_number
from pipeline.drivers.modbus.codec import scaled_value
from pipeline.poller import PollError
from pipeline.service.commands import CommandError
from pipeline.service.scheduler import next_connections
from pipeline.web.auth import (
    INITIAL_PASSWORD_FILE,
    PASSWORD_HASH_FILE,
    hash_password,
)
from pipeline.web.config_forms import (
    CONFIG_FILES,
    CONFIG_SECTIONS,
    SCHEDULE_TYPES,
    SECTION_BY_NAME,
    config_ini_edit,
    daq_blocks_edit,
    hidden_key_changes,
    host_serial_devices,
    mask_secrets,
    password_edit,
    ports_view,
    schedules_view,
    section_fields,
    section_view,
    unmask_secrets,
    var_ini_edit,
)
from pipeline.web.editing import (
    ConfigEditor,
    Edit,
    Verdict,
    daq_with_row,
    device_values,
    text_problems,
)
from pipeline.web.io_editor import ACTIONS as IO_ACTIONS
from pipeline.web.io_editor import io_definition, io_edit
from pipeline.web.io_editor import rows as io_rows
from store.events import (
    DeviceAlarm,
    EventBodyError,
    JournalItem,
    alarm_from_body,
    journal_items,
)
from store.log import Log

if TYPE_CHECKING:
    from pipeline.service.gateway import Gateway

log = logging.getLogger("sunpm.web")
T = TypeVar("T")

#: An uploaded definition file's name: plain, no path, no hidden file.
_PLAIN_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ ()+-]{0,200}")

#: Chart spans (docs/behaviour.md §10.2 Device page) and the points a chart gets at most.
SPANS_S: Final = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400}
MAX_POINTS: Final = 500
ALARM_HOURS: Final = 24
#: The dashboard lists the newest alarms of those hours, at most this many (a storm raises one a
#: poll: a day of them is too many to read and send at every refresh).
ALARMS_LISTED: Final = 200
#: The dashboard's recent log: its last lines of the last hour.
RECENT_LOG_LINES: Final = 20
RECENT_LOG_S: Final = 3600
#: The Configuration page's preview of each server's next connection times.
NEXT_CONNECTIONS: Final = 10
MIN_PASSWORD_LENGTH: Final = 10
#: The dashboard's status (backlogs read the store) is refreshed when older than this.
STATUS_TTL_S: Final = 3.0


class NotFound(LookupError):
    """A device, variable or resource the request names does not exist."""


class Conflict(RuntimeError):
    """The request cannot apply to the configuration as it is (409)."""


class FieldRefused(ValueError):
    """A request field whose text is no value of its kind (422 naming `field`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Refreshed(Generic[T]):
    """A value slow to compute (it reads the store) that requests share: the first request
    waits for it; later ones get it at once, and one older than `ttl_s` is recomputed in the
    background for the requests after."""

    def __init__(self, compute: Callable[[], Awaitable[T]], ttl_s: float) -> None:
        self._compute = compute
        self._ttl_s = ttl_s
        self._value: T | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()
        self._task: asyncio.Future[None] | None = None

    async def get(self) -> T:
        if self._value is None:
            async with self._lock:
                if self._value is None:
                    self._value, self._at = await self._compute(), time.monotonic()
                return self._value
        refreshing = self._task is not None and not self._task.done()
        if time.monotonic() - self._at > self._ttl_s and not refreshing:
            self._task = asyncio.ensure_future(self._refresh())
        return self._value

    def forget(self) -> None:
        """The next request computes anew (after a change it must show)."""
        self._value = None

    async def _refresh(self) -> None:
        async with self._lock:
            try:
                self._value, self._at = await self._compute(), time.monotonic()
            except Exception as err:  # noqa: BLE001 - the next request tries again
                log.warning("Web page data not refreshed: %s", err)


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


def _newest_alarms(store: Log, start_ns: int, limit: int) -> list[JournalItem]:
    """The newest `limit` alarm events dated from `start_ns`, newest first (blocking). Only
    those are made items: the day's read is cheap, an item per alarm of a storm is not."""
    table = store.journal(start_ns=start_ns, kinds=["alarm"]).sort_by("seq")
    newest = table.slice(max(0, table.num_rows - limit))
    return list(reversed(journal_items(newest)))


class GatewayFacade:
    """Reads and actions over one `Gateway` (its site, poller and store change at reloads:
    each call reads the current ones)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._status = Refreshed(self._status_now, STATUS_TTL_S)
        self._alarms = Refreshed(self._alarms_now, STATUS_TTL_S)
        self._recent_log = Refreshed(self._recent_log_now, STATUS_TTL_S)
        self._editor: ConfigEditor | None = None
        self._next_cache: tuple[bytes, datetime, dict[str, list[str]]] | None = None

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

    def web_access(self) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        """`WEB_Bind`, `WEB_Hosts` and `WEB_TrustedProxies` in force (pipeline.web.access)."""
        site = self.gateway.site
        if site is None:
            return "127.0.0.1", (), ()
        settings = site.settings
        return settings.web_bind, settings.web_hosts, settings.web_trusted_proxies

    def zone(self) -> ZoneInfo:
        site = self.gateway.site
        return ZoneInfo(site.settings.time_zone if site is not None else "UTC")

    # ------------------------------------------------------------------ dashboard

    async def status(self) -> dict[str, Any]:
        """docs/formats.md §12.4's status object (the gateway's; its backlogs read the store
        for every device: shared by requests, refreshed in the background)."""
        return await self._status.get()

    async def _status_now(self) -> dict[str, Any]:
        return _shown(await self.gateway.status())

    async def dashboard(self) -> dict[str, Any]:
        status = await self.status()
        alarms = await self.alarms()
        site = self.gateway.site
        ntp = bool(site is not None and site.settings.ntp_servers)
        return {"status": status, "alarms": alarms, "ntpConfigured": ntp,
                "time": _local(time.time_ns(), self.zone()), "log": await self._recent_log.get()}

    async def _recent_log_now(self) -> list[str]:
        """The gateway log's last lines of the last hour, as the LOG files have them."""
        store, site = self.gateway.store, self.gateway.site
        if store is None or site is None:
            return []
        config = ViewConfig(uid=site.uid, time_zone=site.settings.time_zone)

        def read() -> list[str]:
            table = store.journal(start_ns=time.time_ns() - RECENT_LOG_S * NS_PER_S,
                                  kinds=["log"])
            return log_text(journal_items(table.sort_by("seq")), config).splitlines()

        return (await asyncio.to_thread(read))[-RECENT_LOG_LINES:]

    async def alarms(self) -> list[dict[str, Any]]:
        """The alarms of the last 24 h, newest first (shared by requests, as the status)."""
        return await self._alarms.get()

    async def _alarms_now(self, *, hours: int = ALARM_HOURS) -> list[dict[str, Any]]:
        store = self.gateway.store
        if store is None:
            return []
        start = time.time_ns() - hours * 3600 * NS_PER_S
        newest = await asyncio.to_thread(_newest_alarms, store, start, ALARMS_LISTED)
        zone = self.zone()
        names = self._variable_names()
        out: list[dict[str, Any]] = []
        for item in newest:
            try:
                alarm = alarm_from_body(item.body)
            except EventBodyError:
                continue
            if isinstance(alarm, DeviceAlarm):
                var = names.get((item.device or "", alarm.var), f"variable {alarm.var}")
                text = f"{alarm.name}: {var} = {alarm.value}"
                source = alarm.source.value
            else:
                text = alarm.alarm + (f" ({alarm.subject})" if alarm.subject else "") + \
                    (f": {alarm.text}" if alarm.text else "")
                source = "GATEWAY"
            out.append({"time": _local(item.ts_ns, zone), "ts": item.ts_ns // 1_000_000,
                        "source": source, "device": item.device or "", "text": text})
        return out

    def _variable_names(self) -> dict[tuple[str, int], str]:
        """(device index, variable Index) -> the variable's Name, as configured now."""
        site = self.gateway.site
        if site is None:
            return {}
        names: dict[tuple[str, int], str] = {}
        for device in site.daq.devices:
            definition = site.definition_of(device)
            for var in definition.variables if definition is not None else ():
                names[(device.index, var.index)] = var.name
        return names

    # ------------------------------------------------------------------ devices

    def _device(self, index: str) -> Device:
        site = self.gateway.site
        device = next((d for d in site.daq.devices if d.index == index), None) \
            if site is not None else None
        if device is None:
            raise NotFound(f"no device '{index}'")
        return device

    def saved_devices(self) -> list[Device]:
        """The rows of daq.csv as saved (blocking): what a page shows after a save, which the
        gateway polls from its reload on (within seconds). Read from the configuration in
        force, a device just added was missing from the list the save led to. Those in force
        when daq.csv cannot be read (a hand edit the configuration watch rejected)."""
        return self._saved_daq()[0]

    def _saved_daq(self) -> tuple[list[Device], tuple[Problem, ...]]:
        """`saved_devices` and the problems of daq.csv as saved (blocking): its warnings, or
        when it is rejected its problems (the rows shown are then those in force)."""
        site = self.gateway.site
        if site is None:
            return [], ()
        try:
            name, data = self._file("daq.csv")
            parsed = parse_daq(data, name.rpartition("/")[2])
        except ConfigError as err:
            return list(site.daq.devices), err.problems
        except OSError:
            return list(site.daq.devices), ()
        return list(parsed.value.devices), parsed.warnings

    async def devices(self) -> dict[str, Any]:
        """docs/behaviour.md §10.2 Devices: every daq.csv row with its state (`waiting` for a
        row saved but not polled yet), and the problems of daq.csv as saved (two rows of one
        unit; a hand edit the gateway rejected)."""
        if self.gateway.site is None:
            return {"devices": [], "warnings": []}
        saved, warnings = await asyncio.to_thread(self._saved_daq)
        status = await self.status()
        by_index = {d["index"]: d for d in status.get("devices", [])}
        poller = self.gateway.poller
        overruns = dict(poller.overruns_by_device) if poller is not None else {}
        rows = []
        for d in saved:
            known = by_index.get(d.index, {})
            rows.append({
                "index": d.index, "href": quote(d.index, safe=""), "name": d.name,
                "interface": d.interface,
                "address": d.address, "kind": d.kind.value, "acqPeriodS": d.acq_period_s,
                "defFile": d.def_file, "category": d.category, "model": d.model,
                "state": known.get("state", "waiting"),
                "lastRecord": known.get("lastRecord", ""),
                "storeBytes": known.get("storeBytes", 0),
                "quotaBytes": known.get("quotaBytes", 0),
                "dropped": known.get("dropped", 0), "overruns": overruns.get(d.index, 0),
                "traceInterface": _trace_interface(d)})
        return {"devices": rows, "warnings": [str(p) for p in warnings]}

    async def device(self, index: str) -> dict[str, Any]:
        """One device: its daq.csv row as saved and live values (the last poll, scaled, with
        units; none until the gateway polls a row just saved)."""
        saved = await asyncio.to_thread(self.saved_devices)
        device = next((d for d in saved if d.index == index), None)
        site = self.gateway.site
        if device is None or site is None:
            raise NotFound(f"no device '{index}'")
        definition = site.definition_of(device)
        row = {"index": device.index, "name": device.name, "interface": device.interface,
               "address": device.address, "acqPeriodS": device.acq_period_s,
               "timeoutMs": device.timeout_ms, "serialNumber": device.serial_number,
               "parameters": device.parameters, "category": device.category,
               "model": device.model, "defFile": device.def_file, "kind": device.kind.value}
        try:
            live = self.values(index)
        except NotFound:            # saved, not in force yet
            live = _no_values()
        # A TIC label's type is not in its definition: one read as text (PTEC's `TH..`) has no
        # numeric record to chart.
        texts = {v["index"] for v in live["values"] if not _numeric(v["value"])}
        variables = [] if definition is None else [
            {"index": v.index, "name": v.name, "unit": v.unit, "tag": v.tag,
             "action": int(v.action), "chart": _chartable(v) and v.index not in texts}
            for v in definition.variables if v.action.is_polled]
        return {"device": row, "variables": variables, "values": live,
                "parameters": self._parameters(device, definition)}

    def _parameters(self, device: Device, definition: DefinitionFile | None) -> dict[str, Any]:
        """The device's last parameter read of this run (actions 1 and 9), as texts."""
        declared = definition is not None and any(v.action.is_parameter
                                                  for v in definition.variables)
        read = self.gateway.parameter_reads.get(device.index)
        if read is None or definition is None:
            return {"declared": declared, "ts": None, "time": "", "values": []}
        names = {v.index: v for v in definition.variables}
        values = [{"index": k, "name": names[k].name if k in names else "",
                   "unit": names[k].unit if k in names else "", "value": text,
                   "quality": int(read.qualities[k]), "good": Quality(read.qualities[k]).is_good}
                  for k, text in sorted(read.values.items())]
        return {"declared": declared, "ts": read.ts_ns // 1_000_000,
                "time": _local(read.ts_ns, self.zone()), "values": values}

    async def live_values(self, index: str) -> dict[str, Any]:
        """`values`, or none for a row saved and not polled yet (NotFound for no row)."""
        try:
            return self.values(index)
        except NotFound:
            saved = await asyncio.to_thread(self.saved_devices)
            if all(d.index != index for d in saved):
                raise
            return _no_values()

    def values(self, index: str) -> dict[str, Any]:
        """The device's last poll (of the configuration in force): per variable its scaled
        value, unit and quality."""
        device = self._device(index)
        site, poller = self.gateway.site, self.gateway.poller
        assert site is not None
        definition = site.definition_of(device)
        readings = None
        if poller is not None and definition is not None:
            try:
                readings = poller.latest(index)
            except PollError:      # not polled (yet) by the configuration in force
                readings = None
        if readings is None or definition is None:
            return _no_values()
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
        device = self._device(index)
        if span not in SPANS_S:
            raise ValueError(f"span must be one of {', '.join(SPANS_S)}")
        site = self.gateway.site
        definition = site.definition_of(device) if site is not None else None
        if definition is not None and all(v.index != var for v in definition.variables):
            raise NotFound(f"{device.name}: no variable {var}")
        store = self.gateway.store
        end_ns = time.time_ns()
        if store is None:
            return {"start": end_ns / NS_PER_S - SPANS_S[span], "end": end_ns / NS_PER_S,
                    "x": [], "mean": [], "min": [], "max": []}
        start_ns = end_ns - SPANS_S[span] * NS_PER_S
        data = await asyncio.to_thread(_buckets, store, index, var, start_ns, end_ns)
        return {"start": start_ns / NS_PER_S, "end": end_ns / NS_PER_S, **data}


    async def write(self, index: str, variable: str, value: str,
                    raw: bool = False) -> dict[str, Any]:
        """`writeVariable` on one device (docs/behaviour.md §2.7): `value` scaled unless
        `raw`, text for a String variable. Raises NotFound, ValueError (bad value) or
        Conflict (the device refused or is not polled)."""
        device = self._device(index)
        site = self.gateway.site
        assert site is not None
        definition = site.definition_of(device)
        wanted = read_integer(variable.strip(), max_digits=10)
        var = None if definition is None else next(
            (v for v in definition.variables
             if v.index == wanted or v.name == variable.strip()), None)
        if var is None:
            raise NotFound(f"{device.name}: no variable '{variable}'")
        text_type = var.modbus is not None and var.modbus.data_type is not None and \
            var.modbus.data_type.value == "String"
        target: str | Decimal
        if text_type:
            target = value
        else:
            # docs/formats.md §1.1's syntax: `Decimal()` alone takes `1_000`, full-width
            # digits, `nan` and `Infinity`, which no command or file would.
            number = read_decimal(value.strip())
            if number is None:
                raise FieldRefused("value", f"{value.strip()[:40]!r} is not a number")
            target = number
        try:
            answer = await self.gateway.write_variable(index, var.index, target, raw)
        except CommandError as err:
            raise Conflict(str(err)) from None
        if answer.get("failed"):
            raise Conflict(str(next(iter(answer["failed"].values()))))
        return {"device": index, "variable": var.index, "name": var.name,
                "written": answer.get("written", {}).get(device.name)}

    def read_parameters(self, index: str) -> None:
        """`getParameters` for one device: read after its next good poll."""
        self._device(index)
        poller = self.gateway.poller
        try:
            if poller is None:
                raise PollError("acquisition is not running")
            poller.request_parameters(index)
        except PollError as err:
            raise Conflict(str(err)) from None

    # ------------------------------------------------------------------ device edits

    def editor(self) -> ConfigEditor:
        site = self.gateway.site
        if site is None:
            raise Conflict("the configuration is not loaded yet")
        if self._editor is None or self._editor.uid != site.uid:
            self._editor = ConfigEditor(self.gateway.config_dir, site.uid,
                                        self.gateway.config_lock)
        return self._editor

    def daq_on_disk(self) -> tuple[str, bytes, list[Device]]:
        """daq.csv as it is now on disk (a save may be ahead of the running site)."""
        name, data = self._file("daq.csv")
        try:
            devices = list(parse_daq(data, name.rpartition("/")[2]).value.devices) if data else []
        except ConfigError as err:
            raise Conflict(f"daq.csv on disk is rejected ({err}); fix the file first") from None
        return name, data, devices

    def definitions(self) -> list[dict[str, str]]:
        """The DEF folder's files with their header (protocol, category, manufacturer, model), for
        the device form's pickers (blocking)."""
        folder = self.gateway.config_dir / "DEF"
        found = []
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if not path.is_file() or path.name.endswith((".new", ".part", ".tmp")):
                    continue
                with path.open("rb") as handle:
                    head = handle.readline(4096).decode("utf-8", "replace").strip().split(";")
                head += [""] * (4 - len(head))
                found.append({"file": path.name, "protocol": head[0], "category": head[1],
                              "manufacturer": head[2], "model": head[3]})
        return found

    async def device_form(self, index: str | None, *,
                           duplicate: bool = False) -> dict[str, Any]:
        """The add, edit or duplicate form's data: `mode`, `original`, `values`, `definitions`."""
        _, _, devices = await asyncio.to_thread(self.daq_on_disk)
        definitions = await asyncio.to_thread(self.definitions)
        if index is None:
            values = {"index": _next_index(devices), "interface": "", "name": "", "address": "1",
                      "acqPeriodS": "600", "timeoutMs": "1000", "serialNumber": "",
                      "parameters": "", "category": "", "model": "", "defFile": ""}
            return {"mode": "add", "original": None, "values": values, "definitions": definitions,
                    "fields": {}, "problems": []}
        device = next((d for d in devices if d.index == index), None)
        if device is None:
            raise NotFound(f"no device '{index}'")
        values = device_values(device)
        if duplicate and device.kind in (DeviceKind.IO, DeviceKind.TIC):
            raise Conflict(f"'{index}' is the gateway's own {device.kind.value}: there is one "
                           "of it, it cannot be duplicated")
        if duplicate:
            values.update(index=_next_index(devices), name=f"{device.name}_copy")
            return {"mode": "add", "original": None, "values": values, "definitions": definitions,
                    "fields": {}, "problems": []}
        return {"mode": "edit", "original": index, "values": values, "definitions": definitions,
                "fields": {}, "problems": []}

    async def save_device(self, original: str | None, values: dict[str, str],
                           upload: tuple[str, bytes] | None = None) -> Verdict:
        """Add (`original` None) or replace a daq.csv row, with an uploaded definition file if any;
        the whole site validated, nothing written unless all of it is accepted."""
        problems = text_problems(values)
        if upload is not None and not _PLAIN_NAME.fullmatch(upload[0]):
            problems["defUpload"] = ["a definition file name is letters, digits and . _ - ( ) + "
                                     "only"]
        if problems:
            return Verdict(fields=problems, blocking=())
        name, current, devices = await asyncio.to_thread(self.daq_on_disk)
        if original is not None and all(d.index != original for d in devices):
            raise NotFound(f"no device '{original}'")
        if original is None and any(d.index == values.get("index", "").strip() for d in devices):
            return Verdict(fields={"index": [f"index {values['index'].strip()} is already used"]},
                           blocking=())
        edit = daq_with_row(name, current, replace=original, values=values)
        if upload is not None:
            def_name, data = upload
            existing = self.gateway.config_dir / "DEF" / def_name
            if existing.is_file() and existing.read_bytes() != data:
                return Verdict(fields={"defUpload": [f"DEF/{def_name} exists with other contents; "
                                                     "pick it in the list or rename the upload"]},
                               blocking=())
            locate_row = edit.locate

            def locate(problem: Problem) -> str | None:
                if problem.file == def_name:
                    return "defUpload"
                return locate_row(problem)

            edit = Edit(files={**edit.files, f"DEF/{def_name}": data}, locate=locate)
        return await self.apply(edit)

    async def delete_device(self, index: str) -> Verdict:
        """Take a row out of daq.csv (its records stay in the store and are still delivered)."""
        name, current, devices = await asyncio.to_thread(self.daq_on_disk)
        if all(d.index != index for d in devices):
            raise NotFound(f"no device '{index}'")
        return await self.apply(daq_with_row(name, current, replace=index, values=None))

    async def apply(self, edit: Edit) -> Verdict:
        verdict = await self.editor().save(edit)
        if verdict.ok:
            self._status.forget()
            self.gateway.config_written()
        return verdict

    # ------------------------------------------------------------------ whole files

    def config_file(self, name: str) -> tuple[str, str]:
        """`CONFIG/<uid>_<name>` as on disk (empty when absent), secrets masked (blocking)."""
        if name not in CONFIG_FILES:
            raise NotFound(f"no configuration file '{name}' ({', '.join(CONFIG_FILES)})")
        path, data = self._file(name)
        text = data.decode("utf-8", "replace")
        return path, mask_secrets(text) if name == "config.ini" else text

    async def save_config_file(self, name: str, text: str) -> Verdict:
        """A whole configuration file replaced: checked with the whole site by `config` (as a
        file dropped in the folder: only errors refuse it), written all or nothing. In
        config.ini a secret sent back as `***` keeps its value."""
        if name not in CONFIG_FILES:
            raise NotFound(f"no configuration file '{name}' ({', '.join(CONFIG_FILES)})")
        path, current = await asyncio.to_thread(self._file, name)
        if name == "config.ini":
            # In a thread: a config.ini of 10 MiB takes a second to read twice, which polling
            # cannot wait.
            text, refused = await asyncio.to_thread(_config_ini_sent, text, current,
                                                    path.rpartition("/")[2])
            if refused:
                return Verdict(blocking=tuple(refused))
        return await self.apply(Edit(files={path: text.encode()}))

    def definition_file(self, name: str) -> bytes:
        """A file of DEF/ (blocking)."""
        if not _PLAIN_NAME.fullmatch(name):
            raise NotFound(f"no definition file '{name}'")
        try:
            return (self.gateway.config_dir / "DEF" / name).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no definition file '{name}'") from None

    async def save_definition(self, name: str, data: bytes | None) -> Verdict:
        """A definition file added, replaced (`data`) or deleted (None), the whole site checked:
        a file a device uses cannot go."""
        if not _PLAIN_NAME.fullmatch(name):
            return Verdict(fields={"name": ["a definition file name is letters, digits and "
                                            ". _ - ( ) + only"]})
        path = f"DEF/{name}"
        if data is None:
            if not (self.gateway.config_dir / path).is_file():
                raise NotFound(f"no definition file '{name}'")
            users = [d.name for d in (await asyncio.to_thread(self.daq_on_disk))[2]
                     if d.def_file == name]
            if users:
                raise Conflict(f"DEF/{name} is used by {', '.join(users)}; change those "
                               "devices first")
            await self.editor().remove(path)
            self.gateway.config_written()
            return Verdict()
        try:
            # The site checks the files its devices use; a new file is checked on its own too.
            parse_definition(data, name)
        except ConfigError as err:
            return Verdict(blocking=err.errors, others=err.errors)
        return await self.apply(Edit(files={path: data}))

    # ------------------------------------------------------------------ I/O editor

    def _io_file(self, index: str) -> tuple[Device, str, bytes, DefinitionFile]:
        """The I/O device's definition file on disk (blocking)."""
        device = next((d for d in self.daq_on_disk()[2] if d.index == index), None)
        if device is None:
            raise NotFound(f"no device '{index}'")
        if device.kind is not DeviceKind.IO:
            raise NotFound(f"{device.name} is not the gateway's I/O: no I/O editor")
        try:
            data = (self.gateway.config_dir / "DEF" / device.def_file).read_bytes()
            definition = io_definition(data, device.def_file)
        except (OSError, ValueError) as err:
            raise Conflict(f"DEF/{device.def_file}: {err}") from None
        return device, f"DEF/{device.def_file}", data, definition

    async def io_editor(self, index: str) -> dict[str, Any]:
        """The I/O editor's rows (what is wired, and the texts that may change)."""
        device, path, _, definition = await asyncio.to_thread(self._io_file, index)
        return {"device": {"index": device.index, "name": device.name}, "file": path,
                "rows": io_rows(definition), "actions": list(IO_ACTIONS), "fields": {},
                "problems": []}

    async def save_io(self, index: str, form: Mapping[str, str]) -> Verdict:
        """The I/O definition file rewritten with the submitted texts, the whole site checked."""
        _, path, data, definition = await asyncio.to_thread(self._io_file, index)
        edit, refused = io_edit(path, data, definition, form)
        if refused:
            return Verdict(fields=refused)
        return await self.apply(edit)

    # ------------------------------------------------------------------ configuration

    def _file(self, suffix: str) -> tuple[str, bytes]:
        return self.editor().config_file(suffix)

    def configuration(self) -> dict[str, Any]:
        """The Configuration page: every section as on disk, the schedules with their next
        connection times, the serial ports and the network (blocking)."""
        config_path, config_ini = self._file("config.ini")
        var_path, var_ini = self._file("var.ini")
        daq_path, daq = self._file("daq.csv")
        try:
            cfg = parse_config_ini(config_ini, config_path.rpartition("/")[2]).value
            schedules = schedules_view(var_ini, var_path.rpartition("/")[2])
            ports = ports_view(daq, daq_path.rpartition("/")[2])
        except ConfigError as err:
            raise Conflict(f"the configuration on disk is rejected ({err}); fix the file "
                           "first") from None
        return {"sections": [section_view(cfg, section) for section in CONFIG_SECTIONS],
                "schedules": schedules, "scheduleTypes": list(SCHEDULE_TYPES),
                "nextConnections": self.next_connections(),
                "serial": ports["serial"], "network": ports["network"],
                "hostSerialDevices": host_serial_devices(),
                "fields": {}, "problems": [], "saved": ""}

    def _saved_timing(self) -> tuple[bytes, GatewaySettings, VarIni]:
        """config.ini's settings (servers, time zone) and var.ini as saved, with their bytes
        (blocking); those in force when either file is rejected (a hand edit the
        configuration watch did not apply)."""
        site = self.gateway.site
        assert site is not None
        config_path, config_ini = self._file("config.ini")
        var_path, var_ini = self._file("var.ini")
        try:
            settings = parse_config_ini(config_ini, config_path.rpartition("/")[2]) \
                .value.settings(site.uid)
            schedules = parse_var_ini(var_ini, var_path.rpartition("/")[2]).value
        except ConfigError:
            return b"", site.settings, site.var_ini
        return config_ini + b"\0" + var_ini, settings, schedules

    def next_connections(self, var_ini: VarIni | None = None,
                         count: int = NEXT_CONNECTIONS) -> dict[str, list[str]]:
        """Per configured server, its next `count` connection times (local time), from the
        saved schedules or those of `var_ini`: the scheduler's own computation (blocking).
        The saved ones, not those in force: the page a save leads to showed the times of the
        schedules before it until the gateway's reload; the scheduler takes the saved ones
        at that reload, within seconds."""
        if self.gateway.site is None:
            return {}
        key, settings, saved = self._saved_timing()
        schedules = var_ini if var_ini is not None else saved
        now = datetime.now(UTC)
        # The preview is kept while the files are unchanged and it still starts in the
        # future (an every-minute schedule costs some 30 ms to expand).
        cached = self._next_cache
        if var_ini is None and key and cached is not None and cached[0] == key and \
                cached[1] > now:
            return cached[2]
        zone = ZoneInfo(settings.time_zone)
        out: dict[str, list[str]] = {}
        first = now + timedelta(minutes=1)
        for server in settings.servers:
            if server.type is ServerType.NONE:
                continue
            times = next_connections(schedules.schedules(server.slot), settings.time_zone,
                                     now, count)
            out[str(server.slot)] = [t.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")
                                     for t in times]
            first = min(first, times[0]) if times else first
        if var_ini is None:
            self._next_cache = (key, first, out)
        return out

    async def save_section(self, name: str, form: Mapping[str, str]) -> Verdict:
        """Save one section of the Configuration page (see `config_forms`)."""
        fields = section_fields(name)
        if fields is not None and (unknown := [f for f in form if not fields.fullmatch(f)]):
            return Verdict(fields={field: [f"not a field of this section ({name})"]
                                   for field in unknown})
        if name == "schedules":
            path, current = await asyncio.to_thread(self._file, "var.ini")
            edit = var_ini_edit(path, current, form)
        elif name in ("serial", "network"):
            path, current = await asyncio.to_thread(self._file, "daq.csv")
            edit = daq_blocks_edit(path, current, form, name)
        elif name in SECTION_BY_NAME:
            keys = SECTION_BY_NAME[name].keys
            if unknown := [field for field in form if field not in keys]:
                # Left out silently, a misspelt key answered `saved` and nothing was.
                return Verdict(fields={field: [f"not a key of this section ({name})"]
                                       for field in unknown})
            path, current = await asyncio.to_thread(self._file, "config.ini")
            edit = config_ini_edit(path, current, SECTION_BY_NAME[name], form)
        else:
            raise NotFound(f"no configuration section '{name}'")
        return await self.apply(edit)

    async def preview_schedules(self, form: Mapping[str, str]) -> tuple[Verdict, dict[str, list[str]]]:
        """The next connection times the submitted schedules would give, without saving."""
        path, current = await asyncio.to_thread(self._file, "var.ini")
        edit = var_ini_edit(path, current, form)
        verdict = await asyncio.to_thread(self.editor().check, edit)
        if not verdict.ok:
            return verdict, {}
        var_ini = parse_var_ini(edit.files[path], path.rpartition("/")[2]).value
        return verdict, await asyncio.to_thread(self.next_connections, var_ini)

    async def change_password(self, new: str, confirm: str) -> tuple[Verdict, str]:
        """A new web password: its hash into `WEB_PasswordHash`, the first start's files
        deleted. Returns the verdict and the new hash."""
        if len(new) < MIN_PASSWORD_LENGTH:
            return Verdict(fields={"newPassword": [
                f"at least {MIN_PASSWORD_LENGTH} characters"]}), ""
        if new != confirm:
            return Verdict(fields={"confirmPassword": ["the two passwords differ"]}), ""
        stored = await asyncio.to_thread(hash_password, new)
        path, current = await asyncio.to_thread(self._file, "config.ini")
        verdict = await self.apply(password_edit(path, current, stored))
        if verdict.ok:
            for name in (INITIAL_PASSWORD_FILE, PASSWORD_HASH_FILE):
                with contextlib.suppress(FileNotFoundError):
                    (self.gateway.data_dir / name).unlink()
        return verdict, stored


def _config_ini_sent(text: str, current: bytes, file_name: str) -> tuple[str, list[Problem]]:
    """A whole config.ini from a browser: its secrets sent back as `***` given their value on
    disk, and the refusals of the keys a browser may not change (blocking)."""
    text = unmask_secrets(text, current.decode("utf-8", "replace"))
    return text, hidden_key_changes(text, current, file_name)


@functools.cache
def time_zones() -> list[str]:
    """The IANA zones tzdata knows, for the time zone picker (read once: some 20 ms)."""
    return sorted(available_timezones())


def _shown(status: dict[str, Any]) -> dict[str, Any]:
    """The status as the pages show it: a device polled but not recorded yet is `waiting`
    (the status object says `fail` until its first good record)."""
    for device in status.get("devices", []):
        if device.get("state") == "fail" and not device.get("lastRecord"):
            device["state"] = "waiting"
    return status


def _no_values() -> dict[str, Any]:
    """A device's live values before its first poll."""
    return {"ts": None, "time": "", "ageS": None, "values": []}


def _chartable(var: Variable) -> bool:
    """Numbers are charted; text types (strings, TIC labels of text) are not."""
    if var.modbus is not None:
        return var.modbus.data_type is None or var.modbus.data_type.value != "String"
    return True


def _trace_interface(device: Device) -> str:
    """The diagnostics interface whose frames are the device's (store/traces.py's names)."""
    if device.kind is DeviceKind.MODBUS_RTU:
        return device.interface.lower()
    return {DeviceKind.IO: "io", DeviceKind.TIC: "tic"}.get(device.kind, "ethernet")


def _numeric(value: float | str | None) -> bool:
    """A live value that is a number or the text of one (TIC values are verbatim text)."""
    return not isinstance(value, str) or tic_number(value) is not None


def _buckets(store: Log, index: str, var: int, start_ns: int, end_ns: int) -> dict[str, Any]:
    """Mean, minimum and maximum of `var` per bucket of `(end - start) / MAX_POINTS`, streamed
    a batch at a time through the store's lazy records dataset (only these columns decoded,
    sealed files outside the span not read), so a week of 1 s records costs no more memory
    than a batch (blocking)."""
    # Imported here: only charts need the dataset scanner (pyarrow.dataset, some 6 MB).
    from store.query import records_dataset

    stamp = pa.timestamp("ns", tz="UTC")
    wanted = ((pc.field("var") == var) & pc.field("value").is_valid()
              & (pc.field("ts") >= pa.scalar(start_ns, stamp))
              & (pc.field("ts") < pa.scalar(end_ns, stamp)))
    width = max(1, (end_ns - start_ns) // MAX_POINTS)
    # bucket -> [sum, count, min, max]
    sums: dict[int, list[float]] = {}
    for batch in records_dataset(store, [index]).to_batches(
            columns=["ts", "value", "vmin", "vmax"], filter=wanted):
        if batch.num_rows == 0:
            continue
        value = batch.column("value")
        grouped = pa.table({
            "b": pc.divide(pc.subtract(batch.column("ts").cast(pa.int64()), start_ns), width),
            "v": value, "lo": pc.coalesce(batch.column("vmin"), value),
            "hi": pc.coalesce(batch.column("vmax"), value),
        }).group_by("b").aggregate([("v", "sum"), ("v", "count"), ("lo", "min"), ("hi", "max")])
        for b, total, count, low, high in zip(*(grouped.column(name).to_pylist() for name in
                                               ("b", "v_sum", "v_count", "lo_min", "hi_max")),
                                              strict=True):
            seen = sums.get(b)
            if seen is None:
                sums[b] = [total, count, low, high]
            else:
                seen[0] += total
                seen[1] += count
                seen[2] = min(seen[2], low)
                seen[3] = max(seen[3], high)
    order = sorted(sums)
    return {"x": [(start_ns + b * width + width // 2) / NS_PER_S for b in order],
            "mean": [sums[b][0] / sums[b][1] for b in order],
            "min": [sums[b][2] for b in order], "max": [sums[b][3] for b in order]}


def _next_index(devices: list[Device]) -> str:
    numbers = [int(d.index) for d in devices if d.index.isdigit()]
    return str(max(numbers, default=0) + 1)
