"""Discovery inside the running gateway (docs/behaviour.md §3, §7.2): the `discoverDevices`
command (`discover`), and the web page's and the API's start, live log, abort, results and import.

    discovery = Discovery(gateway)
    run = discovery.start(DiscoveryParams(interface="ethernet1", ip="10.0.0.5", last_address=20))
    async for line in run.follow():        # `YYYY-MM-DD hh:mm:ss:<message>`, local time
        ...
    result = await discovery.import_rows([0, 2])   # rows of `run.devices`, by position

    found = await discovery.discover(params)   # the command: run, then add the new devices

The gateway has one `Discovery` (`Gateway.discovery`), so one run at a time whoever asks: a second
`start` or `discover` while one runs is refused with `discoverDevices: a discovery is already
running`. A run also holds `discovery_lock` on the configuration folder, which `sunpm discover
--config` takes too, so a scan by hand never runs beside the gateway's on the same site.
Progress lines are also logged on `sunpm.sunspec`, so the gateway journals
them and the next session delivers them in the `_SUNSPEC_` LOG file (docs/behaviour.md §3.3). A
serial interface is scanned through the bus the poll loop already has open (requests alternate
with the polls), a TCP target through a connection of the run's own. `protocol=tic` listens on `TIC_Port` for a Linky meter instead.

Import (docs/behaviour.md §3.5) adds one daq.csv row per chosen device, a configured one included
(a second device, on purpose), and writes the generated definition files under the naming rule
(same name and content: reused; other content: `_2`, `_3`...). The command (`discover`) adds the
devices found that are not configured yet, and a detected TIC meter as `TIC1`. Nothing existing is
changed or overwritten; the whole change is validated by `config` first and written all or nothing
(`config_edit`), under the configuration lock the web UI's other changes hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Final

from config import load_site, render_daq
from config.errors import SunpmError
from config.model import Daq
from pipeline.clock import local_time_stamper
from pipeline.drivers._base import DiscoveryParams, RegisterReader
from pipeline.drivers.discovery import DiscoveryRefused, discover_devices, interfaces_to_scan
from pipeline.drivers.modbus.rtu import ModbusRtuDriver, RtuBus
from pipeline.drivers.modbus.tcp import ModbusTcpDriver, TcpConnection
from pipeline.drivers.sunspec import SunSpecDevice, UnitScanned, unique_name
from pipeline.drivers.sunspec.importing import import_devices, is_configured
from pipeline.drivers.tic_discovery import (
    TicAlreadyConfigured,
    TicDetection,
    definition_name,
    definition_text,
    detect_tic,
    tic_device,
)
from pipeline.service.config_edit import apply_change, config_lock

if TYPE_CHECKING:
    from pipeline.service.gateway import Gateway

__all__ = ["Discovery", "DiscoveryBusy", "DiscoveryFailed", "DiscoveryRun", "ImportResult",
           "RunState", "discovery_lock"]

sunspec_log = logging.getLogger("sunpm.sunspec")

#: Lines kept per run for the page (a full 240-id scan of one interface logs a few hundred).
MAX_LINES: Final = 5000


class DiscoveryBusy(SunpmError):
    """A run is going on; the text is the spec's refusal."""


@contextlib.contextmanager
def discovery_lock(config_dir: Path) -> Iterator[None]:
    """Held for a whole discovery run on the site of `config_dir`, across processes (the running
    gateway and `sunpm discover --config`). Raises `DiscoveryBusy` when another run holds it.

    The lock is a `flock` on the folder itself: nothing is written into a folder the server
    synchronises, and the kernel drops the lock with the process that held it."""
    fd = os.open(config_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DiscoveryBusy("discoverDevices: a discovery is already running") from None
        yield
    finally:
        os.close(fd)


class DiscoveryFailed(SunpmError):
    """The command's run ended without results (a link error, aborted); the text says why."""


class RunState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    ABORTED = "aborted"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class FoundRow:
    """One SunSpec device of a run, as the results table shows it (docs/behaviour.md §3.5)."""

    unit_id: int
    target: str
    manufacturer: str
    model: str
    options: str
    version: str
    serial_number: str
    models: tuple[int, ...]
    definition_file: str
    already_configured: bool

    def to_json(self) -> dict[str, object]:
        return {"unitId": self.unit_id, "target": self.target,
                "manufacturer": self.manufacturer, "model": self.model,
                "options": self.options, "version": self.version,
                "serialNumber": self.serial_number, "models": list(self.models),
                "definitionFile": self.definition_file,
                "alreadyConfigured": self.already_configured}


@dataclass(eq=False)
class DiscoveryRun:
    """One run: its parameters, live lines, progress and, once done, its devices."""

    number: int
    params: DiscoveryParams
    interfaces: list[str]
    total_ids: int
    state: RunState = RunState.RUNNING
    error: str = ""
    lines: list[str] = field(default_factory=list)
    scanned: int = 0
    devices: list[SunSpecDevice] = field(default_factory=list)
    #: The meter of a `protocol=tic` run, when one answered.
    tic: TicDetection | None = None
    rows: list[FoundRow] = field(default_factory=list)
    imported: bool = False
    #: Interfaces that carried a request, and the link error of those that never did.
    reached: set[str] = field(default_factory=set)
    link_errors: dict[str, str] = field(default_factory=dict)
    started_s: float = field(default_factory=time.time)
    task: asyncio.Task[None] | None = None
    #: Also told every progress line (the command's caller).
    on_line: Callable[[str], None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _poke(self) -> None:
        """Wake every follower: the event they wait on is set and a fresh one takes its place."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def follow(self, after: int = 0) -> AsyncIterator[str]:
        """The lines from number `after` on, live, until the run ends."""
        sent = after
        while True:
            while sent < len(self.lines):
                yield self.lines[sent]
                sent += 1
            if self.state is not RunState.RUNNING:
                return
            changed = self._changed
            if sent == len(self.lines) and self.state is RunState.RUNNING:
                await changed.wait()

    def to_json(self, after: int = 0) -> dict[str, object]:
        return {"run": self.number, "state": self.state.value, "error": self.error,
                "interfaces": self.interfaces, "scanned": self.scanned,
                "total": self.total_ids, "lines": self.lines[after:], "next": len(self.lines),
                "devices": [r.to_json() for r in self.rows], "imported": self.imported}


@dataclass(frozen=True, slots=True)
class ImportResult:
    added: list[str]                # daq names of the new rows
    definitions: list[str]          # definition files written (new ones only)
    reused: list[str]               # files already there with the same content


async def _releasing(held: contextlib.ExitStack, work: Coroutine[None, None, None]) -> None:
    """`work`, then `held` released before the run's followers hear that it ended."""
    try:
        await work
    finally:
        held.close()


class Discovery:
    """The gateway's discovery: see the module docstring."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self.run: DiscoveryRun | None = None
        self._count = 0

    def start(self, params: DiscoveryParams) -> DiscoveryRun:
        """Start a run; raises `DiscoveryBusy`, or `DiscoveryRefused` with §3.1's message."""
        if self.run is not None and self.run.state is RunState.RUNNING:
            raise DiscoveryBusy("discoverDevices: a discovery is already running")
        site = self._gateway.site
        if site is None:
            raise DiscoveryRefused("discoverDevices: the gateway is not running")
        protocol = params.protocol.lower()
        if protocol == "tic":
            if any(d.index == "TIC1" for d in site.daq.devices):
                raise DiscoveryRefused("discoverDevices: TIC1 is already configured; delete it "
                                       "first")
            if not site.settings.tic_port:
                raise DiscoveryRefused("discoverDevices: TIC_Port is not set")
            return self._begin(params, ["TIC"], 1,
                               self._listen_tic(site.settings.tic_port, site.settings.time_zone))
        if protocol != "sunspec":
            raise DiscoveryRefused(f"discoverDevices: protocol must be sunspec or tic, got "
                                   f"'{params.protocol}'")
        interfaces = interfaces_to_scan(params, site.daq)
        if not interfaces:
            raise DiscoveryRefused("discoverDevices: nothing to scan: give ip, or configure a "
                                   "serial port with a path")
        if not 0 < params.port < 65536:
            raise DiscoveryRefused(f"discoverDevices: port {params.port} is outside 1..65535")
        if params.max_devices < 1:
            raise DiscoveryRefused(f"discoverDevices: maxDevices {params.max_devices} is below 1")
        if not 1 <= params.timeout_ms <= 60_000:
            raise DiscoveryRefused(f"discoverDevices: timeout {params.timeout_ms} is outside "
                                   "1..60000 ms")
        ids = (params.last_address - params.first_address + 1) * len(interfaces)
        return self._begin(params, interfaces, ids,
                           self._scan(site.uid, site.daq, site.settings.time_zone))

    def _begin(self, params: DiscoveryParams, interfaces: list[str], total_ids: int,
               work: Callable[[DiscoveryRun], Coroutine[None, None, None]]) -> DiscoveryRun:
        held = contextlib.ExitStack()
        held.enter_context(discovery_lock(self._gateway.config_dir))
        self._count += 1
        run = DiscoveryRun(number=self._count, params=params, interfaces=interfaces,
                           total_ids=total_ids)
        self.run = run
        run.task = asyncio.create_task(_releasing(held, work(run)), name=f"discovery:{run.number}")
        # Also when the task is cancelled before it starts (then its `finally` never runs).
        run.task.add_done_callback(lambda _: held.close())
        return run

    async def discover(self, params: DiscoveryParams, *,
                       progress_log: Callable[[str], None] | None = None) -> int:
        """`discoverDevices` (docs/formats.md §12.3): run, add the devices found that are not
        configured yet (a TIC meter as `TIC1`), answer the number found.

        Raises `DiscoveryBusy`, `DiscoveryRefused`, `DiscoveryFailed` or
        `config_edit.ChangeRejected`."""
        run = self.start(params)
        run.on_line = progress_log
        assert run.task is not None
        await run.task
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            # The run swallowed the cancellation meant for its caller (it ends as aborted).
            raise asyncio.CancelledError
        if run.state is not RunState.DONE:
            raise DiscoveryFailed(run.error or f"discoverDevices: {run.state.value}")
        gateway = self._gateway
        uid = gateway.site.uid if gateway.site else None
        if run.tic is not None:
            detection = run.tic
            async with config_lock(gateway.config_dir):
                try:
                    name = await asyncio.to_thread(_import_tic, gateway.config_dir, uid,
                                                   detection, gateway.config_lock)
                except TicAlreadyConfigured as err:
                    # Configured while the meter was listened to.
                    raise DiscoveryFailed(str(err)) from None
            run.imported = True
            gateway.config_written()
            sunspec_log.info("%s meter %s at %d baud -> %s", detection.mode.value,
                             detection.address, detection.baud, name)
            return 1
        if run.devices:
            async with config_lock(gateway.config_dir):
                result = await asyncio.to_thread(_import, gateway.config_dir, uid, run.devices,
                                                 params.timeout_ms, gateway.config_lock,
                                                 include_configured=False)
            run.imported = True
            if result.added:
                gateway.config_written()
            sunspec_log.info("Discovery done: %d found, %d added", len(run.devices),
                             len(result.added))
        return len(run.devices)

    def abort(self) -> bool:
        """Stop the running scan after its current request; False when none runs."""
        run = self.run
        if run is None or run.state is not RunState.RUNNING or run.task is None:
            return False
        run.task.cancel()
        return True

    def cancel(self) -> None:
        """Drop the results of an ended run (the page's Cancel)."""
        if self.run is not None and self.run.state is not RunState.RUNNING:
            self.run = None

    def _scan(self, uid: str, daq: Daq,
              time_zone: str) -> Callable[[DiscoveryRun], Coroutine[None, None, None]]:
        return lambda run: self._scan_sunspec(run, uid, daq, time_zone)

    def _listen_tic(self, port: str,
                    time_zone: str) -> Callable[[DiscoveryRun], Coroutine[None, None, None]]:
        async def listen(run: DiscoveryRun) -> None:
            line = _liner(run, time_zone)
            try:
                line(f"Start of TIC detection on {port}")
                run.tic = await detect_tic(port)
                run.scanned = 1
                if run.tic is None:
                    line("End of TIC detection: no TIC meter found")
                else:
                    run.reached.add("TIC")
                    line(f"End of TIC detection: {run.tic.mode.value} meter "
                         f"{run.tic.address} at {run.tic.baud} baud")
                run.state = RunState.DONE
            except asyncio.CancelledError:
                run.state = RunState.ABORTED
            finally:
                run._poke()
        return listen

    async def _scan_sunspec(self, run: DiscoveryRun, uid: str, daq: Daq, time_zone: str) -> None:
        links: list[TcpConnection | RtuBus] = []
        line = _liner(run, time_zone)

        def progress(event: UnitScanned) -> None:
            run.scanned += 1
            if event.reached:
                run.reached.add(event.interface)
            elif event.link_error:
                run.link_errors.setdefault(event.interface, event.link_error)
            run._poke()

        async def link_for(interface: str, target: str) -> RegisterReader:
            if target.startswith("SERIAL"):
                shared = self._bus(target)
                if shared is not None:
                    return shared
                bus = RtuBus(daq.port(interface))
                bus.start()
                links.append(bus)
                return bus
            host, _, port = target.rpartition(":")
            polled = self._connection(host, int(port))
            if polled is not None:
                return polled
            connection = TcpConnection(host, int(port))
            links.append(connection)
            return connection

        try:
            run.devices = await discover_devices(run.params, line, uid=uid, daq=daq,
                                                 link_for=link_for, progress=progress)
            run.rows = self._rows(run.devices)
            unreachable = [i for i in run.interfaces if i not in run.reached]
            if unreachable and run.scanned:
                run.error = "; ".join(f"nothing could be reached on {i}: "
                                      f"{run.link_errors.get(i, 'no answer at all')}"
                                      for i in unreachable)
            run.state = RunState.DONE
        except asyncio.CancelledError:
            run.state = RunState.ABORTED
        except (SunpmError, OSError) as err:
            run.state, run.error = RunState.FAILED, str(err)
            if not run.error.startswith("discoverDevices"):
                run.error = f"discoverDevices: {run.error}"
            line(f"Error: {err}")
        finally:
            for link in links:
                try:
                    await link.close()
                except Exception as err:  # noqa: BLE001 - a link that fails to close is only logged
                    sunspec_log.warning("Discovery link not closed cleanly: %s", err)
            run._poke()

    def _bus(self, target: str) -> RtuBus | None:
        """The poll loop's bus of `SERIAL<k>`, when a driver has it open."""
        plant = self._gateway.plant
        if plant is None:
            return None
        for driver, settings in plant.drivers:
            if isinstance(driver, ModbusRtuDriver) and settings.serial is not None \
                    and settings.serial.port.upper() == target and driver.bus is not None:
                return driver.bus
        return None

    def _connection(self, host: str, port: int) -> TcpConnection | None:
        """The poll loop's connection to `host:port`, when the plant polls a device there: one
        connection per `ip:port` (docs/behaviour.md §2.3), which many devices require."""
        plant = self._gateway.plant
        if plant is None:
            return None
        for driver, _ in plant.drivers:
            if isinstance(driver, ModbusTcpDriver):
                connection = driver.existing_connection(host, port)
                if connection is not None:
                    return connection
        return None

    def _rows(self, devices: Sequence[SunSpecDevice]) -> list[FoundRow]:
        site = self._gateway.site
        daq = site.daq if site is not None else Daq()
        names = _planned_names(self._gateway.config_dir / "DEF", devices)
        return [FoundRow(unit_id=d.unit_id, target=d.target,
                         manufacturer=d.identity.manufacturer, model=d.identity.model,
                         options=d.identity.options, version=d.identity.version,
                         serial_number=d.identity.serial_number, models=d.model_ids,
                         definition_file=names[k],
                         already_configured=is_configured(daq, d.target, d.unit_id))
                for k, d in enumerate(devices)]

    async def import_rows(self, chosen: Sequence[int]) -> ImportResult:
        """Import the devices at positions `chosen` of the ended run's results.

        Raises `DiscoveryBusy` (no results, run still going, already imported), `ValueError`
        (a position out of range) or `config_edit.ChangeRejected`."""
        run = self.run
        if run is None or run.state is RunState.RUNNING:
            raise DiscoveryBusy("discovery: no finished discovery to import")
        if run.imported:
            raise DiscoveryBusy("discovery: these results are already imported")
        picked: list[SunSpecDevice] = []
        for position in dict.fromkeys(chosen):
            if not 0 <= position < len(run.devices):
                raise ValueError(f"discovery: no device {position} in the results "
                                 f"(0..{len(run.devices) - 1})")
            picked.append(run.devices[position])
        if not picked:
            raise ValueError("discovery: no device chosen")
        gateway = self._gateway
        async with config_lock(gateway.config_dir):
            result = await asyncio.to_thread(_import, gateway.config_dir,
                                             gateway.site.uid if gateway.site else None,
                                             picked, run.params.timeout_ms,
                                             gateway.config_lock)
        run.imported = True
        gateway.config_written()
        return result


def _import(config_dir: Path, uid: str | None, picked: Sequence[SunSpecDevice],
            timeout_ms: int, folder_lock: threading.Lock, *,
            include_configured: bool = True) -> ImportResult:
    # The configuration as it is now on disk, not as the run saw it: another change may have
    # come in between.
    site = load_site(config_dir, uid)
    if not include_configured:
        picked = [d for d in picked if not is_configured(site.daq, d.target, d.unit_id)]
        if not picked:
            return ImportResult(added=[], definitions=[], reused=[])
    def_dir = config_dir / "DEF"
    names = _planned_names(def_dir, picked)
    change: dict[str, bytes] = {}
    created: list[str] = []
    reused: list[str] = []
    for device, name in zip(picked, names, strict=True):
        rel = f"DEF/{name}"
        if (def_dir / name).exists():
            reused.append(name)
        elif rel not in change:
            change[rel] = device.definition.text.encode("utf-8")
            created.append(name)
    daq, rows = import_devices(
        site.daq, picked, timeout_ms=timeout_ms, include_configured=include_configured,
        definition_names={(d.target, d.unit_id): n for d, n in zip(picked, names, strict=True)})
    added_names = [row.name for row in rows]
    change[f"CONFIG/{site.uid}_daq.csv"] = render_daq(daq)
    apply_change(config_dir, site.uid, change, create_only=[f"DEF/{n}" for n in created],
                 folder_lock=folder_lock)
    for name in added_names:
        sunspec_log.info("Device imported from discovery. name=%s", name)
    return ImportResult(added=added_names, definitions=created, reused=reused)


def _import_tic(config_dir: Path, uid: str | None, detection: TicDetection,
                folder_lock: threading.Lock) -> str:
    """Add the `TIC1` row and its definition file; the file's name (docs/behaviour.md §3)."""
    site = load_site(config_dir, uid)
    text = definition_text(detection)
    name = unique_name(definition_name(site.uid, detection.mode), text,
                       lambda n: _read_text(config_dir / "DEF" / n))
    row = tic_device(site.daq, detection, name)
    daq = dataclasses.replace(site.daq, devices=(*site.daq.devices, row),
                              blocks=site.daq.blocks | {"devices"})
    rel = f"DEF/{name}"
    change = {f"CONFIG/{site.uid}_daq.csv": render_daq(daq)}
    if not (config_dir / rel).exists():
        change[rel] = text.encode("utf-8")
    apply_change(config_dir, site.uid, change,
                 create_only=[rel] if rel in change else [], folder_lock=folder_lock)
    return name


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None


def _planned_names(def_dir: Path, devices: Sequence[SunSpecDevice]) -> list[str]:
    """The file each device's definition gets in `def_dir` (the `_2` rule, files of the same
    import counted)."""
    planned: dict[str, str] = {}

    def existing(name: str) -> str | None:
        if name in planned:
            return planned[name]
        return _read_text(def_dir / name)

    names = []
    for device in devices:
        name = unique_name(device.definition.name, device.definition.text, existing)
        planned[name] = device.definition.text
        names.append(name)
    return names


def _liner(run: DiscoveryRun, time_zone: str) -> Callable[[str], None]:
    """What a run says: logged on `sunpm.sunspec`, kept for the page, told to `run.on_line`."""
    stamp = local_time_stamper(time_zone)

    def line(message: str) -> None:
        sunspec_log.info("%s", message)
        if len(run.lines) < MAX_LINES:
            run.lines.append(f"{stamp()}:{message}")
        if run.on_line is not None:
            run.on_line(message)
        run._poke()

    return line

