"""The running gateway: one asyncio TaskGroup holding every long-lived task.

    Gateway.run(stop)
      load the configuration (rolling a staged apply forward), open the store (its lock refuses a
      second writer), install the quota retention, journal the configuration snapshot, raise the
      Power OFF an unclean stop left unsaid, then in one TaskGroup:
        poll loop (drivers, recorder, record and event sinks)  -> store
        heartbeats, Power ON after 60 s (then a start-up session for every server)
        one scheduler per configured server -> FileServerSession / MqttSession
        MQTT permanent connections (alarm or command topic)
        retention refresh, journal log lines, configuration watch
        extra tasks of plug-ins (`Gateway.plugins`: command channels, web UI, scripts)
      on `stop`: polling stops (records of ended periods handed over), the other tasks are
      cancelled, Power OFF is journaled, the store closes with a final commit, drivers close.

A local configuration change (files of the configuration directory edited by hand or by a tool)
that validates is applied by running the whole group again with the new site; an invalid one is
logged and the running configuration stays. A change applied from server 1 does the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from config import (
    ConfigError,
    Site,
    check_site,
    check_site_change,
    find_uid,
    load_site,
    parse_definition,
)
from config.decimal_text import read_integer
from config.errors import Severity, SunpmError
from config.model import DefinitionFile, Device, Quality, ServerSettings, ServerType, Variable
from exporters.outbox import Outbox
from exporters.rendering.source import store_source
from exporters.retention import DeliveryTracker, install_retention, traces_delivered
from exporters.session import FileServerSession, JournalSignal, MqttSession, SessionResult, Trigger
from exporters.session.config_apply import apply_config_files, recover_config_apply
from exporters.transports import FileTransport, MessageTransport, open_transport
from exporters.views.context import ViewConfig
from exporters.views.mqtt import alarm_message
from exporters.views.windows import cut_of
from fsio import write_file_durably
from pipeline.clock import NS_PER_S, Clock, SystemClock
from pipeline.drivers._base import DeviceError, DiscoveryParams, RawValue
from pipeline.drivers.discovery import DiscoveryRefused
from pipeline.drivers.io import IoDriver
from pipeline.drivers.modbus.codec import EncodeError, scaled_to_raw
from pipeline.drivers.tic import LOSS_MESSAGE, RETURN_MESSAGE
from pipeline.poller import Appended, Event, Poller
from pipeline.recorder import ParameterRead, Recorder, ValueChanged, period_end_ns
from pipeline.scripts import ScriptStatus
from pipeline.service import in_force
from pipeline.service.alarms import (
    Alarms,
    DeviceWatch,
    PowerWatch,
    StorageWatch,
    accessory_lost,
    lost_devices,
)
from pipeline.service.archive import archive_bytes, recent_log, upload_archives, write_archive
from pipeline.service.clock_check import ClockCheck
from pipeline.service.commands import CommandError, CommandExecutor
from pipeline.service.config_edit import ChangeRejected, config_lock
from pipeline.service.config_watch import FolderDigest
from pipeline.service.discovery import Discovery, DiscoveryBusy, DiscoveryFailed
from pipeline.service.firmware import stage_offered_package
from pipeline.service.local import SOCKET_NAME, LocalChannel
from pipeline.service.logs import JournalLogHandler, level_of, use_time_zone
from pipeline.service.maintenance import (
    MaintenanceError,
    change_config,
    check_firmware_request,
    clean_update_folder,
    factory_wipe,
    install_firmware,
    stage_firmware,
    staged_upload,
    update_argv,
)
from pipeline.service.modem import AtModem
from pipeline.service.relay import KIND as RELAY_KIND
from pipeline.service.relay import relay_body, restore_relay
from pipeline.service.s0 import KIND as S0_KIND
from pipeline.service.s0 import ModuleCounters, module_counters, restore_counters
from pipeline.service.scheduler import SlotScheduler
from pipeline.service.sms import SmsCommands, SmsInbox
from pipeline.service.status import (
    alarms_since,
    backlog,
    default_ip,
    last_text,
    server_mode,
    status_object,
)
from pipeline.service.tunnels import Tunnels
from pipeline.service.wiring import Plant, build_plant
from pipeline.traces import TraceCapture, TraceCaptureError
from sdcard.mirror import CardMirror, mirror_state_body
from store import Log, StoreOptions
from store.delivery import FILE_SERVER_STREAMS, Stream
from store.errors import StoreLockedError
from store.events import ConfigInForce, JournalItem, JsonValue
from store.traces import TraceOptions, TraceStore

log = logging.getLogger("sunpm.system")
_T = TypeVar("_T")

#: How long a session waits for records timed before its cut (docs/behaviour.md §5.1 step 4).
RECORDS_WAIT_S: Final = 3.0
#: Polling gets this long to finish its cycle at a stop before it is cancelled.
POLL_STOP_S: Final = 4.0
#: The plug-ins' `before_stop` (the scripts' `wsStop`, 3 s each at most, and its writes, 2 s)
#: before polling stops; what is left runs after it.
BEFORE_STOP_S: Final = 10.0
CONFIG_CHECK_S: Final = 5.0
#: How long the start and a reload wait for their journal events' commit before going on.
COMMIT_WAIT_S: Final = 3.0
#: A configuration snapshot a full disk refused is tried again this often.
CONFIG_RETRY_S: Final = 5.0
#: A local configuration change triggers a server-1 session this long after the last change.
CONFIG_SESSION_DELAY_S: Final = 60.0
#: `<data>/status.json` is rewritten this often (and at stop).
STATUS_EVERY_S: Final = 60.0


class GatewayRefused(SunpmError):
    """The gateway cannot start (configuration rejected, store in use); `code` is the exit."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Plugin(Protocol):
    """A part that joins the gateway's TaskGroup (command channels, the web UI, scripts):
    `run(gateway)` is its task, cancelled at stop.

    A plug-in runs again with each configuration it is given, unless it has a true
    `spans_reloads` attribute: it then runs once for the whole run (the web UI, whose
    connections must outlive a configuration saved through it; the scripts, whose Lua state
    must) and reads `gateway.site`, `gateway.poller` and the others each time it needs them.
    Such a plug-in may also have `configured(gateway)`: a task of each configuration, started
    once its poller is built and cancelled (and awaited) before its devices close. Any plug-in
    may have `before_stop(gateway)`, awaited at the stop of the service (not at a reload) while
    polling still runs, for at most `BEFORE_STOP_S`."""

    async def run(self, gateway: Gateway) -> None: ...


def spans_reloads(plugin: Plugin) -> bool:
    return bool(getattr(plugin, "spans_reloads", False))


@dataclass(frozen=True, slots=True)
class Started:
    """What a caller may want once the gateway runs (the demo prints it)."""

    site: Site
    store_dir: Path


def default_store_dir(site: Site, data_dir: Path) -> Path:
    return Path(site.settings.store_path) if site.settings.store_path else data_dir / "store"


class _StoredDefinitions(dict[str, DefinitionFile]):
    """Definitions by snapshot id: the running ones, others read from the store when asked."""

    def __init__(self, store: Log, running: Mapping[str, DefinitionFile]) -> None:
        super().__init__(running)
        self._store = store

    def __missing__(self, snapshot_id: str) -> DefinitionFile:
        name = snapshot_id.split(":", 1)[-1]
        definition = parse_definition(self._store.get_definition(snapshot_id), name).value
        self[snapshot_id] = definition
        return definition


def _server_identity(settings: ServerSettings) -> tuple[object, ...]:
    """What makes a server slot the same server across a reload."""
    return (settings.type, settings.host, settings.port, settings.dir_path)


class Gateway:
    """`sunpm run`: see the module docstring."""

    def __init__(self, config_dir: Path, data_dir: Path, *, clock: Clock | None = None,
                 on_started: Callable[[Started], Awaitable[None]] | None = None,
                 plugins: Sequence[Plugin] = ()) -> None:
        self.config_dir = config_dir
        self.data_dir = data_dir
        self.clock: Clock = clock or SystemClock()
        self.plugins = list(plugins)
        self._on_started = on_started
        self.site: Site | None = None
        self.store: Log | None = None
        self.poller: Poller | None = None
        self.schedulers: dict[int, SlotScheduler] = {}
        #: Sessions asked (`connect`) between two configurations, for the next schedulers.
        self._sessions_asked: dict[int, list[Trigger]] = {}
        #: Each slot's last session across reloads: (server, end, result), the server by
        #: `_server_identity`.
        self._last_sessions: dict[int, tuple[tuple[object, ...], int | None,
                                             SessionResult | None]] = {}
        #: Each slot's backlog as the last status counted it.
        self._backlogs: dict[int, int] = {}
        self.alarms: Alarms | None = None
        self.commands: CommandExecutor | None = None
        self.traces: TraceStore | None = None
        self.capture: TraceCapture | None = None
        self.plant: Plant | None = None
        self._acked_end: dict[str, int] = {}
        self._device_watch: DeviceWatch | None = None
        self._clock_synced = True
        self.clock_check: ClockCheck | None = None
        self._last_good: dict[str, tuple[int, bool]] = {}
        #: Each device's last parameter read of this run (the web UI's device page).
        self.parameter_reads: dict[str, ParameterRead] = {}
        self._stop: asyncio.Event | None = None
        self.restart_requested = False
        self.factory_requested = False
        self._background: set[asyncio.Task[object]] = set()
        self._uncommitted: set[asyncio.Task[object]] = set()
        self._reload = asyncio.Event()
        self._config_written = asyncio.Event()
        #: Held (in worker threads) while the configuration folder is read as a whole or
        #: written: a change applied by the web UI is never seen half done.
        self.config_lock = threading.Lock()
        self._startup_requested = False
        self._power: PowerWatch | None = None
        self._local_change = False
        #: A session applied a set from server 1: the reload waits for that session's end.
        self._server_applied = False
        self._loaded_hash = ""      # of the configuration files the running site was loaded from
        #: The folder's digest, each file read only when its stat identity changed: the watch
        #: looks every 5 s and a box may hold hundreds of definition files on flash.
        self._folder_digest = FolderDigest()
        #: What the configuration watch last said missing of the folder (`_missing_folder`).
        self._missing_said: str | None = None
        self._alarm_waiting = False
        #: Fired after each alarm is journaled; made again by each run (its loop's).
        self._alarms_journaled = JournalSignal()
        self._outboxes: dict[int, Outbox] = {}
        self._started_s = time.time()
        #: The one discovery of the gateway (the command, the web UI): one run at a time.
        self.discovery = Discovery(self)
        self.mirror: CardMirror | None = None
        self._s0: ModuleCounters | None = None
        self._start_retention: DeliveryTracker | None = None
        self.modem: AtModem | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def stopping(self) -> bool:
        """The gateway is stopping (not reloading)."""
        return self._stop is not None and self._stop.is_set()

    def restart(self) -> None:
        """`reboot`: stop cleanly (final commit, Power OFF); the caller then starts again
        (`restart_requested`)."""
        log.info("Restart asked for; stopping cleanly first")
        self.restart_requested = True
        if self._stop is not None:
            self._stop.set()

    def factory_reset(self) -> None:
        """`factory` (docs/behaviour.md §6, §7.3): stop cleanly, delete the configuration and
        the whole store once it is closed, write the default configuration, restart."""
        log.warning("Factory reset asked for; the configuration and the store will be deleted")
        self.factory_requested = True
        self.restart()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; raises `GatewayRefused` when it cannot start."""
        self._stop = stop
        self._alarms_journaled = JournalSignal()
        # A run starts afresh: the alarm states a reload carries over are this run's only.
        self.plant = None
        self.poller = None
        self._device_watch = None
        site = await asyncio.to_thread(self._load)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        store_dir = default_store_dir(site, self.data_dir)
        try:
            store = await Log.open(store_dir, StoreOptions(
                flush_s=site.settings.store_flush_s,
                device_quota_bytes=site.settings.store_device_quota_mb * 2**20,
                full_policy=site.settings.store_full_policy))
        except StoreLockedError as err:
            raise GatewayRefused(
                f"{store_dir}: another sunpm is already running on this data ({err.holder}); "
                "stop it first", 3) from None
        self.store = store
        # Once the store's lock shows no other sunpm uses this data: what a crash or the last
        # run left in the staging folder (docs/behaviour.md §7.3).
        await asyncio.to_thread(clean_update_folder, self.data_dir)
        # Before the first commit: without its predicates the quota takes every segment for
        # delivered (no server configured), and the first journal event appended (the start's
        # log line, `Power OFF`) would let it delete what the servers have not had.
        self._start_retention = install_retention(store, site.settings.servers)
        try:
            traces = await asyncio.to_thread(TraceStore.open, store_dir, TraceOptions(
                flush_s=site.settings.store_flush_s))
        except SunpmError:
            await store.close()
            raise
        self.traces = traces
        self.capture = TraceCapture(traces, clock_ns=self.clock.wall_ns)
        journal_handler = JournalLogHandler(level_of(site.settings.log_level))
        root = logging.getLogger("sunpm")
        root.addHandler(journal_handler)
        # Records below every handler's level are not even made (the poll loop's DEBUG lines).
        root.setLevel(min([h.level for h in root.handlers if h.level] or [logging.DEBUG]))
        power: PowerWatch | None = None
        try:
            self.alarms = Alarms(store, self.clock, self._alarm_raised)
            power = PowerWatch(store, self.alarms, self.clock)
            self._power = power
            await self._after_start(power)
            log.info("sunpm started. uid=%s config=%s store=%s", site.uid, self.config_dir,
                     store_dir)
            if self._on_started is not None:
                await self._on_started(Started(site=site, store_dir=store_dir))
            self.commands = CommandExecutor(store, self, self.clock)
            self.clock_check = ClockCheck(site.settings.ntp_servers, self.alarms, self.clock,
                                          self._clock_state)
            async with asyncio.TaskGroup() as tg:
                whole_run = [tg.create_task(journal_handler.run(store), name="journal-log"),
                             tg.create_task(self.commands.run(), name="commands"),
                             tg.create_task(traces.run(), name="traces"),
                             tg.create_task(self.clock_check.run(), name="clock-check"),
                             tg.create_task(LocalChannel(self.data_dir / SOCKET_NAME,
                                                         self.commands,
                                                         archive=self.debug_archive).run(),
                                            name="local-commands"),
                             tg.create_task(StorageWatch(store, self.alarms, self.clock,
                                                         self._device_names).run(),
                                            name="storage-alarms"),
                             tg.create_task(self._sms(site), name="sms"),
                             tg.create_task(power.heartbeats(), name="heartbeat"),
                             tg.create_task(power.power_on(), name="power-on")]
                whole_run += [tg.create_task(plugin.run(self), name=type(plugin).__name__)
                              for plugin in self.plugins if spans_reloads(plugin)]
                mirror_task: asyncio.Task[None] | None = None
                while True:
                    mirror_task = self._follow_mirror(site, store_dir, tg, mirror_task)
                    self._reload.clear()
                    await self._generation(site, store, stop, power)
                    if stop.is_set():
                        break
                    site = await asyncio.to_thread(self._load)
                    log.info("Configuration reloaded. uid=%s", site.uid)
                for task in [*whole_run, *([mirror_task] if mirror_task else [])]:
                    task.cancel()
        finally:
            # A run the web UI started is no task of the group: it ends with the gateway.
            self.discovery.abort()
            try:
                if power is not None and stop.is_set() and not power.stopped:
                    with contextlib.suppress(SunpmError, TimeoutError):
                        async with asyncio.timeout(2):
                            await power.clean_stop()
                journal_handler.drain(store)
            finally:
                logging.getLogger("sunpm").removeHandler(journal_handler)
                await asyncio.to_thread(traces.close)
                await store.close()
                log.info("sunpm stopped; store closed. store=%s", store_dir)
                if self.factory_requested:
                    defaults = await asyncio.to_thread(self._factory_wipe, store_dir, site.uid)
                    log.warning("Factory reset done: configuration and store deleted, %s; an "
                                "SD mirror is left as it was",
                                f"defaults written for {site.uid}" if defaults
                                else "the demo writes its own again as it restarts")

    async def _after_start(self, power: PowerWatch) -> None:
        """The Power OFF an unclean stop left unsaid, journaled before anything of this run."""
        await self._not_waiting_long(power.after_start(), "Power OFF of the previous run")

    async def _not_waiting_long(self, append: Coroutine[Any, Any, object], what: str) -> None:
        """Run `append`, a journal append that waits for its commit, for at most
        `COMMIT_WAIT_S`. On a full disk the commit waits in memory with the rest (docs/behaviour.md
        §6) and the acquisition must go on meanwhile; the event is queued all the same, so the
        journal keeps its order."""
        task = asyncio.create_task(append, name=what)
        done, _ = await asyncio.wait({task}, timeout=COMMIT_WAIT_S)
        if done:
            task.result()
            return
        log.warning("%s not stored yet; going on without waiting for the store", what)

        def stored(task: asyncio.Task[object]) -> None:
            self._uncommitted.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("%s not stored: %s", what, task.exception())
        self._uncommitted.add(task)     # a reference, else the task may be collected
        task.add_done_callback(stored)

    def _factory_wipe(self, store_dir: Path, uid: str) -> bool:
        with self.config_lock:
            return factory_wipe(self.config_dir, self.data_dir, store_dir, uid)

    def _load(self) -> Site:
        try:
            with self.config_lock:
                staged = recover_config_apply(self.config_dir)
                # Hashed before loading: an edit landing in between shows as a change to the
                # configuration watch (one reload too many), never as the running configuration
                # (an edit lost until the next one).
                if (self.config_dir / "CONFIG").is_dir():
                    self._loaded_hash = self._folder_digest.of(
                        self.config_dir, find_uid(self.config_dir))
                site = load_site(self.config_dir)
        except ConfigError as err:
            config_log = logging.getLogger("sunpm.config")
            # A warning (a default used) is said as one, as `sunpm config validate` does: only
            # the errors rejected the folder.
            for problem in err.problems:
                config_log.log(logging.ERROR if problem.severity is Severity.ERROR
                               else logging.WARNING, "%s", problem)
            errors = sum(p.severity is Severity.ERROR for p in err.problems)
            counted = f"{errors} error(s), {len(err.problems) - errors} warning(s) above"
            kept = in_force.load(self.data_dir, self.config_dir)
            # Said by the problems above: the watch says it again only once it was back.
            self._missing_said = _missing_folder(self.config_dir)
            if kept is None:
                raise GatewayRefused(f"{self.config_dir}: configuration rejected ({counted})",
                                     2) from None
            # The folder's digest stays the loaded one: the watch looks again once it changes.
            config_log.error("%s: configuration rejected (%s); running the last configuration "
                             "in force (%s) until the folder is fixed", self.config_dir,
                             counted, self.data_dir / in_force.FILE_NAME)
            self.site = kept
            use_time_zone(kept.settings.time_zone)
            return kept
        in_force.save(self.data_dir, site.files())
        if staged:
            log.info("Staged configuration applied after a restart. files=%s", staged)
        for problem in site.warnings:
            logging.getLogger("sunpm.config").warning("%s", problem)
        self.site = site
        use_time_zone(site.settings.time_zone)
        return site

    async def _generation(self, site: Site, store: Log, stop: asyncio.Event,
                          power: PowerWatch) -> None:
        """Everything that depends on the configuration, until `stop` or a reload."""
        config_journaled = await self._journal_config(store, site)
        assert self.alarms is not None
        names = {d.index: d.name for d in site.daq.devices}
        if not site.settings.alarm_device_lost:
            self._device_watch = None
        elif self._device_watch is None:
            try:
                lost = await asyncio.to_thread(lost_devices, store, names)
            except SunpmError as err:
                log.warning("Lost devices not read from the journal: %s", err)
                lost = set()
            self._device_watch = DeviceWatch(self.alarms, names, lost)
        else:
            # A reload is no start: a device lost before it is back (or still lost) after it.
            self._device_watch.names = names
        # The first configuration's was installed as the store opened: one journal read less;
        # a reload's reads only what the store's ledger has not folded yet.
        tracker = self._start_retention or install_retention(store, site.settings.servers)
        self._start_retention = None
        plant = build_plant(site, store, on_accessory=self._accessory,
                            trace=self.capture.hook if self.capture is not None else None)
        previous = self.plant.tic_reader if self.plant is not None else None
        if plant.tic_reader is not None and previous is not None:
            plant.tic_reader.resume(previous)
        elif plant.tic_reader is not None:
            # A start, as for devices: a meter lost when the gateway stopped is not lost again,
            # and its return is raised.
            try:
                if await asyncio.to_thread(accessory_lost, store):
                    plant.tic_reader.restore_loss()
            except SunpmError as err:
                log.warning("TIC accessory state not read from the journal: %s", err)
        self.plant = plant
        self._s0 = module_counters(plant, site)
        if self._s0 is not None:
            await restore_counters(store, self._s0)
        await plant.open()
        io_drivers = [d for d, _ in plant.drivers if isinstance(d, IoDriver)]
        if io_drivers:
            # Before the first poll, which then records the restored state.
            await restore_relay(store, io_drivers[0])
            # Every state commanded from now on is restored at the next start
            # (docs/behaviour.md §2.10), by whichever command or script drove it.
            io_drivers[0].on_relay = self._relay_commanded
        tunnels = Tunnels(site, plant)
        await tunnels.start()
        # The previous configuration's recorder: a value changed across the reload is a change.
        recorder = Recorder(clock_synchronised=self._clock_synced,
                            replacing=self.poller.recorder if self.poller is not None else None)
        poller = Poller(plant.links, recorder=recorder,
                        record_sink=self._record_sink,
                        event_sink=self._event_sink(plant),
                        daq_poll_period_s=site.settings.daq_poll_period_s)
        self.poller = poller
        stopping = asyncio.Event()
        mqtt_serving: list[MqttSession] = []
        try:
            async with asyncio.TaskGroup() as tg:
                polling = tg.create_task(poller.run(), name="poller")
                others = [tg.create_task(tracker.run(), name="retention")]
                for settings in site.settings.servers:
                    if settings.type is ServerType.NONE:
                        continue
                    scheduler, serving = self._server(site, store, tracker, settings)
                    self.schedulers[settings.slot] = scheduler
                    for trigger in self._sessions_asked.pop(settings.slot, []):
                        scheduler.request(trigger)
                    others.append(tg.create_task(scheduler.run(),
                                                 name=f"scheduler:{settings.slot}"))
                    if serving is not None:
                        mqtt_serving.append(serving)
                        others.append(tg.create_task(serving.serve(stopping),
                                                     name=f"mqtt:{settings.slot}"))
                # A server the new configuration no longer has: its asked session goes.
                self._sessions_asked.clear()
                if self._alarm_waiting:
                    self._alarm_waiting = False
                    self._alarm_raised()
                others.append(tg.create_task(self._watch_config(site), name="config-watch"))
                if not config_journaled:
                    others.append(tg.create_task(self._journal_config_later(store, site),
                                                 name="config-snapshot"))
                others.append(tg.create_task(self._write_status(), name="status"))
                others.append(tg.create_task(self._startup_sessions(power),
                                             name="startup-sessions"))
                for plugin in self.plugins:
                    part = plugin.run if not spans_reloads(plugin) else \
                        getattr(plugin, "configured", None)
                    if part is not None:
                        others.append(tg.create_task(part(self), name=type(plugin).__name__))
                waiters = [asyncio.ensure_future(stop.wait()),
                           asyncio.ensure_future(self._reload.wait())]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                if stop.is_set():
                    await self._before_stop()
                poller.stop()
                if stop.is_set():
                    await self._power_off(power, mqtt_serving)
                stopping.set()
                for task in others:
                    task.cancel()
                try:
                    async with asyncio.timeout(POLL_STOP_S):
                        await asyncio.shield(polling)
                except TimeoutError:
                    log.warning("Polling did not stop within %.0f s; cancelled", POLL_STOP_S)
                    polling.cancel()
        finally:
            with contextlib.suppress(SunpmError, OSError, TimeoutError):
                async with asyncio.timeout(2):
                    await self._status_file()
            self._last_sessions = {
                slot: (_server_identity(site.settings.servers[slot - 1]), scheduler.last_end_ns,
                       scheduler.last_result)
                for slot, scheduler in self.schedulers.items()}
            self.schedulers = {}
            self._outboxes = {}
            await self._settle_background()
            await tunnels.stop()
            await plant.close()
            # The predicates stay until the next generation installs its own: None would take
            # every segment for delivered (no server configured), and the stop's or reload's
            # own journal events would let the quota delete what the servers have not had.

    async def _before_stop(self) -> None:
        """The plug-ins' `before_stop(gateway)` at the stop of the service, while polling still
        runs (the scripts' `wsStop` and its writes), bounded."""
        for plugin in self.plugins:
            hook = getattr(plugin, "before_stop", None)
            if hook is None:
                continue
            try:
                async with asyncio.timeout(BEFORE_STOP_S):
                    await hook(self)
            except TimeoutError:
                log.warning("%s: not done within %.0f s of the stop; polling stops now",
                            type(plugin).__name__, BEFORE_STOP_S)

    async def _power_off(self, power: PowerWatch, serving: Sequence[MqttSession]) -> None:
        """The clean stop's Power OFF, published on MQTT alarm topics still connected
        (docs/behaviour.md §8: within 2 s)."""
        try:
            async with asyncio.timeout(2):
                await power.clean_stop()
                await asyncio.gather(*(session.publish_events() for session in serving
                                       if session.settings.topic_alarm))
        except (SunpmError, TimeoutError) as err:
            # An exception is always true: its text is what may be empty (a timeout's).
            log.warning("Power OFF not published before the stop: %s",
                        str(err) or "not done within 2 s")

    # ------------------------------------------------------------------ servers

    def _server(self, site: Site, store: Log, tracker: DeliveryTracker,
                settings: ServerSettings) -> tuple[SlotScheduler, MqttSession | None]:
        slot = settings.slot
        journal = tracker.journal_log(store)
        outbox_dir = Path(store.path) / "outbox" / str(slot)
        cert_dir = self.config_dir / "CERT"
        source = store_source(store, site, slot, traces=self.traces)
        file_servers = [s.slot for s in site.settings.servers if s.type.is_file_server]
        serving: MqttSession | None = None
        if settings.type.is_file_server:
            outbox = Outbox(server=slot, log=journal, source=source, directory=outbox_dir,
                            streams=FILE_SERVER_STREAMS, ledger=tracker.ledger)
            self._outboxes[slot] = outbox

            async def file_session(trigger: Trigger) -> SessionResult:
                transport = open_transport(settings, cert_dir)
                assert isinstance(transport, FileTransport)
                session = FileServerSession(
                    settings=settings, uid=site.uid, transport=transport, outbox=outbox,
                    log=store, config_dir=self.config_dir, validate=check_site_change,
                    commands=self.commands if slot == 1 else None,
                    config_applied=self._applied_from_server,
                    in_force=self.site.loaded if self.site is not None else None,
                    apply_files=lambda files: self._apply_from_server(files, site.uid))
                try:
                    return await served(session, trigger)
                finally:
                    # A set applied from the server takes effect once its session is over: the
                    # reload restarts the sessions, and made at once it cut this one short
                    # (its commands and uploads left for the next one).
                    if self._server_applied:
                        self._server_applied = False
                        self._reload.set()

            async def served(session: FileServerSession, trigger: Trigger) -> SessionResult:
                started = await self._wait_for_records(trigger)
                result = await session.run(trigger, started=started)
                if result.ok and self.traces is not None:
                    await asyncio.to_thread(_delete_delivered_traces, self.traces, outbox,
                                            file_servers)
                if result.ok and slot == 1:
                    await upload_archives(self.data_dir, settings, cert_dir)
                    package = await stage_offered_package(self.data_dir, settings, cert_dir)
                    if package is not None:
                        if site.settings.system_update_command:
                            self.install_firmware(str(package))
                        else:
                            log.warning("Update %s staged but not installed: "
                                        "SYSTEM_UpdateCommand is not set", package.name)
                release_free_memory()
                return result

            run_session = file_session
        else:
            outbox = Outbox(server=slot, log=journal, source=source, directory=outbox_dir,
                            streams=(Stream.DATA,), ledger=tracker.ledger)
            self._outboxes[slot] = outbox
            view_config = ViewConfig.for_server(site.settings, settings, site.daq)
            definitions = _StoredDefinitions(store, {d.snapshot_id: d for d in
                                                     site.definitions.values()})

            def alarm_payload(item: JournalItem) -> bytes:
                return alarm_message(item, definitions, view_config)

            def mqtt(client_settings: ServerSettings) -> MqttSession:
                transport = open_transport(client_settings, cert_dir)
                assert not isinstance(transport, FileTransport)
                message_transport: MessageTransport = transport
                return MqttSession(settings=client_settings, transport=message_transport,
                                   outbox=outbox, log=journal, alarm_payload=alarm_payload,
                                   commands=self.commands, alarms_raised=self._alarms_journaled)

            permanent = bool(settings.topic_alarm or settings.topic_command)
            if permanent:
                serving = mqtt(settings)
            data_settings = _data_client(settings, site.uid) if permanent else settings

            async def mqtt_session(trigger: Trigger) -> SessionResult:
                if not data_settings.topic_data and permanent:
                    return SessionResult(ok=True)
                started = await self._wait_for_records(trigger)
                return await mqtt(data_settings).run(trigger, started=started)

            run_session = mqtt_session
        scheduler = SlotScheduler(slot, run_session, schedules=site.var_ini.schedules(slot),
                                  time_zone=site.settings.time_zone, clock=self.clock)
        identity, end_ns, result = self._last_sessions.get(slot, ((), None, None))
        if identity == _server_identity(settings):
            # A reload keeps the server's last session (status `last`); a new server has none.
            scheduler.last_end_ns, scheduler.last_result = end_ns, result
        return scheduler, serving

    async def _startup_sessions(self, power: PowerWatch) -> None:
        """docs/behaviour.md §4.1: the start-up session goes when Power ON is raised; a local
        configuration change gives a server-1 session 60 s after it (a change applied from
        server 1 triggers nothing)."""
        if not self._startup_requested:
            await power.power_on_raised.wait()
            self._request_startup()
        if self._local_change:
            self._local_change = False
            await self.clock.sleep(CONFIG_SESSION_DELAY_S)
            first = self.schedulers.get(1)
            if first is not None:
                first.request(Trigger.CONFIG_CHANGE)

    def _request_startup(self) -> None:
        if not self._startup_requested:
            self._startup_requested = True
            for scheduler in self.schedulers.values():
                scheduler.request(Trigger.STARTUP)

    def request_session(self, slot: int, trigger: Trigger) -> bool:
        """Ask server `slot` for a session (`connect` command, demo); False if not configured.
        Asked while a configuration is being replaced (its schedulers stopped, the next ones
        not started yet), it goes to the next scheduler of the slot: a `connect` sent right
        after a save was refused as 'server 1 is not configured'."""
        scheduler = self.schedulers.get(slot)
        if scheduler is not None:
            scheduler.request(trigger)
            return True
        site = self.site
        if site is None or site.settings.servers[slot - 1].type is ServerType.NONE:
            return False
        asked = self._sessions_asked.setdefault(slot, [])
        if trigger not in asked:
            asked.append(trigger)
        return True

    def request_parameters(self) -> int:
        """`getParameters`: every device with parameters is read after its next good poll."""
        if self.poller is None or self.plant is None:
            raise CommandError("getParameters: acquisition is not running")
        devices = [index for index, (_, definition) in self.plant.devices.items()
                   if any(v.action.is_parameter for v in definition.variables)]
        for index in devices:
            self.poller.request_parameters(index)
        return len(devices)

    async def set_relay(self, state: int) -> None:
        drivers = [d for d, _ in self.plant.drivers if isinstance(d, IoDriver)] \
            if self.plant is not None else []
        if not drivers:
            raise CommandError("setRelay: no IO device is configured")
        try:
            await drivers[0].set_relay(state)
        except DeviceError as err:
            text = str(err)
            raise CommandError(text if text.startswith("setRelay") else
                               f"setRelay: {text}") from None

    def _relay_commanded(self, state: int) -> None:
        if self.store is not None:
            self._spawn(self.store.append_journal(RELAY_KIND, relay_body(state)))

    async def call_script(self, rpc_name: str,
                          parameters: Mapping[str, JsonValue]) -> JsonValue:
        """An RPC `<script>.<function>` (docs/behaviour.md §9.4) to the scripts plug-in."""
        # Imported here: the scripts plug-in imports this module for its types.
        from pipeline.service.scripts import ScriptsPlugin

        plugin = next((p for p in self.plugins if isinstance(p, ScriptsPlugin)), None)
        if plugin is None:
            raise CommandError(f"unknown script '{rpc_name.partition('.')[0]}'")
        return await plugin.call(rpc_name, parameters)

    async def write_variable(self, device: str, variable: str | int, value: str | Decimal,
                             raw: bool) -> dict[str, dict[str, object]]:
        """`writeVariable` (docs/behaviour.md §2.7, docs/formats.md §12.3) on one device, or
        with `*` on every device whose definition has the tag `variable`."""
        if self.poller is None or self.plant is None:
            raise CommandError("writeVariable: acquisition is not running")
        poller = self.poller
        targets: list[tuple[Device, Variable]] = []
        if device == "*":
            for row, definition in self.plant.devices.values():
                var = next((v for v in definition.variables if v.tag and v.tag == variable), None)
                if var is not None:
                    targets.append((row, var))
            if not targets:
                raise CommandError(f"writeVariable: no device has the tag '{variable}'")
        else:
            found = next(((r, d) for r, d in self.plant.devices.values()
                          if device in (r.name, r.index)), None)
            if found is None:
                raise CommandError(f"writeVariable: unknown device '{device}'")
            var = _variable(found[1], variable)
            if var is None:
                raise CommandError(f"writeVariable: {found[0].name}: unknown variable "
                                   f"'{variable}'")
            targets.append((found[0], var))
        written: dict[str, object] = {}
        failed: dict[str, object] = {}

        async def one(row: Device, var: Variable) -> None:
            try:
                if isinstance(value, str):
                    target: RawValue = value
                else:
                    target = value if raw else scaled_to_raw(var, value)
                sent = await poller.write(row.index, var, target)
            except (DeviceError, EncodeError) as err:
                failed[row.name] = str(err)
            else:
                written[row.name] = _json_number(sent)

        await asyncio.gather(*(one(row, var) for row, var in targets))
        if not written:
            first = next(iter(failed.values()))
            raise CommandError(str(first) if str(first).startswith("writeVariable") else
                               f"writeVariable: {first}")
        return {"written": written, "failed": failed}

    async def discover(self, params: DiscoveryParams, *,
                       progress_log: Callable[[str], None] | None = None) -> int:
        """`discoverDevices` (docs/behaviour.md §3): devices found; the new ones are added to
        the configuration. One at a time for every caller (the command, the web UI):
        `CommandError("discoverDevices: a discovery is already running")`."""
        if self.site is None:
            raise CommandError("discoverDevices: the service is not running")
        try:
            return await self.discovery.discover(params, progress_log=progress_log)
        except (DiscoveryBusy, DiscoveryRefused, DiscoveryFailed) as err:
            raise CommandError(str(err)) from None
        except ChangeRejected as err:
            raise CommandError(f"discoverDevices: {err}") from None

    async def change_config(self, command: str, values: Mapping[str, str | None]) -> None:
        """`ftp`, `apn`: config.ini keys set together or not at all; the configuration watch
        applies them as a local change (a server-1 session 60 s later tests them)."""
        if self.site is None:
            raise CommandError(f"{command}: the service is not running")
        try:
            # One local change at a time (the web UI's forms hold it too): two never read the
            # same config.ini and both write their version.
            async with config_lock(self.config_dir):
                await asyncio.to_thread(change_config, self.config_dir, self.site.uid, values,
                                        folder_lock=self.config_lock)
        except MaintenanceError as err:
            raise CommandError(f"{command}: {err}") from None
        self.config_written()       # replaced whole: applied at once, not at the next turn
        if command == "apn":
            # The modem's port belongs to the SMS channel; the data link is the host's business.
            log.info("apn: MODEM_ keys stored for the host's connection manager; nothing was "
                     "sent to the modem (AT+CGDCONT)")
        log.info("%s: configuration changed. keys=%s", command, sorted(values))

    async def stage_firmware(self, url: str, login: str, password: str, checksum: str,
                             interface: str) -> str:
        """`updateFirmware`'s download: the staged, MD5-checked package's path."""
        if self.site is None:
            raise CommandError("updateFirmware: the service is not running")
        if not self.site.settings.system_update_command:
            raise CommandError("updateFirmware: SYSTEM_UpdateCommand is not set")
        try:
            update_argv(self.site.settings.system_update_command)
            check_firmware_request(url, checksum, interface)
            package = await stage_firmware(self.data_dir, url, login, password, checksum)
        except MaintenanceError as err:
            raise CommandError(f"updateFirmware: {err}") from None
        log.info("Update staged. package=%s", package)
        return str(package)

    async def staged_upload(self, package: str, checksum: str) -> str:
        """`updateFirmware` `{package, checksum}`: the web UI's upload in `<data>/update/`,
        its MD5 checked again."""
        if self.site is None:
            raise CommandError("updateFirmware: the service is not running")
        if not self.site.settings.system_update_command:
            raise CommandError("updateFirmware: SYSTEM_UpdateCommand is not set")
        try:
            update_argv(self.site.settings.system_update_command)
            path = await asyncio.to_thread(staged_upload, self.data_dir, package, checksum)
        except MaintenanceError as err:
            raise CommandError(f"updateFirmware: {err}") from None
        return str(path)

    def install_firmware(self, package: str) -> None:
        """Run `SYSTEM_UpdateCommand <package>` (after the batch's answers are out)."""
        command = self.site.settings.system_update_command if self.site is not None else ""
        if command:
            self._spawn(install_firmware(command, Path(package)))

    async def debug_archive(self) -> Path:
        """`<uid>_SYSTEME_<ts>.tar.gz` made now in `<data>/archives/` (docs/formats.md §11);
        server 1 gets it after its next successful session."""
        site, store = self.site, self.store
        if site is None or store is None:
            raise CommandError("archive: the service is not running")
        made_ns = self.clock.wall_ns()
        status = await self.status()
        config = ViewConfig.for_server(site.settings, site.settings.servers[0], site.daq)
        lines = await asyncio.to_thread(recent_log, store, config, made_ns)
        data = archive_bytes(site.files(), status, lines, made_ns)
        path = await asyncio.to_thread(write_archive, self.data_dir, site.uid, data, made_ns)
        log.info("Debug archive made. file=%s bytes=%d", path, len(data))
        return path

    def start_trace(self, interface: str, duration_min: int) -> None:
        """`log`: frame traces of one interface for `duration_min` (0 stops)."""
        if self.capture is None:
            raise CommandError("log: the service is not running")
        try:
            self.capture.start(interface, duration_min)
        except TraceCaptureError as err:
            raise CommandError(str(err)) from None

    def _sms_settings(self) -> tuple[str, Sequence[str]]:
        """`SMS_InboxDir` and `SMS_AllowedNumbers` in force (both apply at a reload)."""
        if self.site is None:
            return "", ()
        return self.site.settings.sms_inbox_dir, self.site.settings.sms_allowed_numbers

    async def _sms(self, site: Site) -> None:
        """SMS commands: the inbox folder of `SMS_InboxDir` (followed across reloads) and the
        AT modem of `MODEM_Port` (opened at the start: a restart key)."""
        if self.commands is None:
            return
        settings = site.settings
        async with asyncio.TaskGroup() as tg:
            tg.create_task(SmsInbox(self._sms_settings, self.commands, self.clock).run())
            if settings.modem_port:
                self.modem = AtModem(settings.modem_port, settings.modem_pin,
                                     SmsCommands(lambda: self._sms_settings()[1], self.commands),
                                     self.clock)
                tg.create_task(self.modem.run())

    def _clock_state(self, synchronised: bool) -> None:
        """The clock check's verdict: good values get quality 7 while it is False."""
        self._clock_synced = synchronised
        if self.poller is not None:
            self.poller.recorder.clock_synchronised = synchronised

    def _device_names(self) -> dict[str, str]:
        return {d.index: d.name for d in self.site.daq.devices} if self.site else {}

    def acknowledged_end(self, index: str) -> int | None:
        """The end of the device's last record acknowledged in this run (None: none yet)."""
        return self._acked_end.get(index)

    def _alarm_raised(self) -> None:
        """An alarm asks server 1 (a file server) for an alarm session; one raised before the
        schedulers run (the Power OFF of an unclean stop, during a reload) waits for them. The
        MQTT alarm topics publish it at once."""
        self._alarms_journaled.journaled()
        if self._stop is not None and self._stop.is_set():
            # The clean stop's Power OFF: a session begun now would be cut off at once (a
            # WARNING at every stop); the alarm goes with the next start's first session.
            return
        scheduler = self.schedulers.get(1)
        if scheduler is not None and self._power is not None and self._power.raising_power_on:
            # Power ON is carried by the start-up session (§4.1), asked for here rather than
            # when the watch's event wakes its waiter: the alarm session asked first ran, and
            # the start-up session then followed it at once with nothing left to send.
            self._request_startup()
            return
        if scheduler is None:
            self._alarm_waiting = True
        elif self.site is not None and self.site.settings.servers[0].type.is_file_server:
            scheduler.request_alarm()

    async def _wait_for_records(self, trigger: Trigger) -> datetime:
        """The session's start, once every device's record of the period ending at or before
        its cut is acknowledged (at most 3 s).

        An alarm session starts in the second after its alarm: the cut is the start truncated
        to the second, and the alarm that asked for the session must be before it. So does the
        start-up session, which carries Power ON."""
        if trigger in (Trigger.ALARM, Trigger.STARTUP):
            await self.clock.sleep(1.0 - (self.clock.wall_ns() % NS_PER_S) / NS_PER_S + 0.01)
        started_ns = self.clock.wall_ns()
        cut_ns = cut_of(datetime.fromtimestamp(started_ns / NS_PER_S, UTC))
        deadline = self.clock.monotonic_ns() + int(RECORDS_WAIT_S * NS_PER_S)
        while self.clock.monotonic_ns() < deadline and not self._records_in(cut_ns):
            await self.clock.sleep(0.1)
        return datetime.fromtimestamp(started_ns / NS_PER_S, UTC)

    def _records_in(self, cut_ns: int) -> bool:
        if self.site is None:
            return True
        for device in self.site.polled_devices:
            acked = self._acked_end.get(device.index)
            if acked is None:
                continue      # nothing recorded yet in this run: nothing to wait for
            end = period_end_ns(cut_ns - 1, device.acq_period_s)
            if end > cut_ns:
                end -= device.acq_period_s * NS_PER_S
            if acked < end:
                return False
        return True

    # ------------------------------------------------------------------ status

    async def status(self) -> dict[str, object]:
        """docs/formats.md §12.4's status object (what is known today), backlogs included."""
        site, store = self.site, self.store
        assert site is not None and store is not None
        servers: list[dict[str, object]] = []
        now_ns = self.clock.wall_ns()
        for settings in site.settings.servers:
            if settings.type is ServerType.NONE:
                continue
            slot = settings.slot
            scheduler = self.schedulers.get(slot)
            outbox = self._outboxes.get(slot)
            if scheduler is None or outbox is None:
                # Between two configurations (the start, a reload): the server as configured,
                # with its last session and backlog as last known, not left out (it read
                # "disabled").
                identity, end_ns, result = self._last_sessions.get(slot, ((), None, None))
                if identity != _server_identity(settings):
                    end_ns, result = None, None
                running, waiting = False, self._backlogs.get(slot, 0)
            else:
                end_ns, result, running = scheduler.last_end_ns, scheduler.last_result, \
                    scheduler.running
                waiting = await asyncio.to_thread(backlog, outbox, store, site, now_ns)
                self._backlogs[slot] = waiting
            servers.append({
                "srv": slot, "status": "connected" if running else "idle",
                "type": settings.type.value, "mode": server_mode(settings),
                "addr": settings.host or settings.dir_path,
                "port": settings.port,
                "last": last_text(end_ns, None if result is None else result.ok,
                                  "" if result is None else result.reason,
                                  site.settings.time_zone),
                "backlog": waiting})
        dropped = dict(self.poller.dropped_by_device) if self.poller is not None else {}
        status = await asyncio.to_thread(status_object, site=site, store=store,
                                         started_s=self._started_s, servers=servers,
                                         dropped=dropped, last_records=dict(self._last_good))
        check = self.clock_check
        alarms = await asyncio.to_thread(alarms_since, store, now_ns - 86_400 * NS_PER_S)
        status = {**{key: status[key] for key in ("uid", "version", "date", "timestamp",
                                                  "timeZone", "uptimeS")},
                  "clock": {"synced": self._clock_synced,
                            "ntp": check.last_server if check is not None else "",
                            "offsetS": check.last_offset_s if check is not None else None},
                  "modem": {"state": self.modem.state if self.modem is not None else "none",
                            "rssiDbm": None},
                  "ip": await asyncio.to_thread(default_ip),
                  "servers": status["servers"], "devices": status["devices"],
                  "scripts": [{"name": s.name, "file": s.file, "enabled": s.enabled}
                              for s in self._script_states()],
                  "alarms24h": alarms}
        if self.mirror is not None:
            status["sd"] = mirror_state_body(self.mirror)
        return status

    def _script_states(self) -> list[ScriptStatus]:
        """The scripts the scripts plug-in runs (none without it)."""
        from pipeline.service.scripts import ScriptsPlugin

        plugin = next((p for p in self.plugins if isinstance(p, ScriptsPlugin)), None)
        return plugin.runner.scripts() if plugin is not None and plugin.runner else []

    async def _status_file(self) -> None:
        body = json.dumps(await self.status(), separators=(",", ":")).encode()
        await asyncio.to_thread(write_file_durably, self.data_dir / "status.json", body)

    async def _write_status(self) -> None:
        """`<data>/status.json` at each start and reload, then every minute, for operators and
        tools until the `status` command and the web UI serve it. At once: the previous run's
        file would otherwise pass for this one's for a minute, and for ever in a crash loop."""
        while True:
            try:
                await self._status_file()
            except (SunpmError, OSError) as err:
                log.warning("Status file not written: %s", err)
            await self.clock.sleep(STATUS_EVERY_S)

    # ------------------------------------------------------------------ sinks

    async def _record_sink(self, device: str, batch: pa.RecordBatch) -> Appended:
        assert self.store is not None
        result = await self.store.append_records(device, batch)
        if batch.num_rows:
            end = _record_end_ns(batch)
            self._acked_end[device] = max(self._acked_end.get(device, 0), end)
            good = _holds_good_value(batch.column("quality"))
            self._last_good[device] = (end, good)
            if device == "IO" and self._s0 is not None:
                body = self._s0.body()
                if body is not None:
                    self._spawn(self.store.append_journal(S0_KIND, body, ts_ns=end))
            if self._device_watch is not None:
                alarm = self._device_watch.record(device, good, end)
                if alarm is not None:
                    self._spawn(alarm)
        return result

    def _event_sink(self, plant: Plant) -> Callable[[Event], Awaitable[None]]:
        async def sink(event: Event) -> None:
            assert self.store is not None and self.alarms is not None
            if isinstance(event, ValueChanged):
                device, definition = plant.devices[event.device]
                self._spawn(self.alarms.device(event, device, definition.protocol))
            elif isinstance(event, ParameterRead):
                self.parameter_reads[event.device] = event
                self._spawn(self.store.append_journal(
                    "param", event.journal_body(), device=event.device, def_=event.def_id,
                    ts_ns=event.ts_ns))
            # A ClockStepped needs nothing more: the poll loop logged it (`wall clock stepped
            # by` or `reset by`), a WARNING the journal keeps as a `log` event.
        return sink

    def _accessory(self, event: str) -> None:
        if self.alarms is not None:
            name = LOSS_MESSAGE if event == "loss" else RETURN_MESSAGE
            self._spawn(self.alarms.gateway(name))

    def _spawn(self, work: Awaitable[object]) -> None:
        """Journal appends complete at the next group commit; the sinks do not wait for it
        (appends keep their order: each is queued when its task first runs)."""
        task: asyncio.Task[object] = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[object]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Journal append failed: %s", task.exception())

    async def _settle_background(self) -> None:
        if self._background:
            await asyncio.wait(list(self._background), timeout=2.0)

    # ------------------------------------------------------------------ configuration

    async def _journal_config(self, store: Log, site: Site) -> bool:
        """Store the configuration in force and journal it when it differs from the last
        journaled one, so windows ending from now on render with it. False when its snapshot
        cannot be written (a full disk, an I/O error): logged, and `_journal_config_later`
        tries again while the acquisition goes on (docs/behaviour.md §6)."""
        try:
            snapshot = await asyncio.to_thread(self._put_snapshots, store, site)
        except OSError as err:
            log.error("Configuration snapshot not stored: %s; tried again every %.0f s",
                      err, CONFIG_RETRY_S)
            return False
        table = await asyncio.to_thread(store.journal, kinds=["config"])
        if table.num_rows and ConfigInForce.snapshot_in(
                table.sort_by("seq").column("body")[-1].as_py()) == snapshot:
            return True
        await self._not_waiting_long(store.append_journal("config", ConfigInForce(
            snapshot=snapshot, origin="local", files=tuple(sorted(site.files()))).to_fields(),
            commit_now=True), "Configuration in force")
        return True

    @staticmethod
    def _put_snapshots(store: Log, site: Site) -> str:
        """The configuration's snapshot and its polled devices' definitions (`build_plant`
        stores them too, but leaves out those a full disk refused); the configuration's id."""
        snapshot = store.put_config(site.files())
        for device in site.polled_devices:
            definition = site.definition_of(device)
            if definition is not None:
                store.put_definition(definition.file_name,
                                     site.files()[f"DEF/{definition.file_name}"])
        return snapshot

    async def _journal_config_later(self, store: Log, site: Site) -> None:
        while True:
            await self.clock.sleep(CONFIG_RETRY_S)
            try:
                await asyncio.to_thread(self._put_snapshots, store, site)
            except OSError:
                continue    # said once; the store's own commit errors say it each minute
            if await self._journal_config(store, site):
                log.info("Configuration snapshot stored")
                return

    def _apply_from_server(self, files: Mapping[str, bytes], uid: str) -> None:
        """Write a server's checked set into the folder (blocking), under the folder's lock: a
        reload never loads it half written. Its digest becomes the folder's known one, so the
        configuration watch does not take it for a local edit (a `Local configuration change`
        and a server-1 session 60 s later, docs/behaviour.md §4.1); the reload that follows the
        session's journaling loads it."""
        with self.config_lock:
            apply_config_files(self.config_dir, files)
            self._loaded_hash = self._folder_digest.of(self.config_dir, uid)

    async def _applied_from_server(self, files: Sequence[str]) -> None:
        log.info("Configuration from server 1 applied; restarting acquisition after the "
                 "session. files=%s", list(files))
        self._server_applied = True

    def _locked(self, read: Callable[..., _T], *args: object) -> _T:
        with self.config_lock:
            return read(*args)

    def _follow_mirror(self, site: Site, store_dir: Path, tg: asyncio.TaskGroup,
                       running: asyncio.Task[None] | None) -> asyncio.Task[None] | None:
        """The card mirror of `SD_MirrorPath` (docs/behaviour.md §12), started, moved or stopped
        when a configuration changes it; its task."""
        wanted = Path(site.settings.sd_mirror_path) if site.settings.sd_mirror_path else None
        current = self.mirror.card if self.mirror is not None else None
        if wanted == current:
            return running
        if running is not None:
            running.cancel()    # between passes or in a copy it redoes: copies land by rename
            log.info("Card mirror stopped. path=%s", current)
        self.mirror = None
        if wanted is None:
            return None
        self.mirror = CardMirror(store_dir, wanted)
        log.info("Card mirror started. path=%s", wanted)
        return tg.create_task(self.mirror.run(), name="card-mirror")

    def config_written(self) -> None:
        """A tool of this process (the web UI) wrote the configuration folder: look at it now
        rather than at the watch's next turn."""
        self._config_written.set()

    async def _watch_config(self, site: Site) -> None:
        """A local edit of the configuration files: valid -> reload (and a server-1 session
        60 s later); invalid -> logged once, running configuration kept."""
        rejected: str | None = None
        config_log = logging.getLogger("sunpm.config")
        while True:
            written = await self.clock.wait_until(
                self.clock.monotonic_ns() + int(CONFIG_CHECK_S * NS_PER_S),
                self._config_written)
            if written:
                self._config_written.clear()
            missing = await asyncio.to_thread(_missing_folder, self.config_dir)
            if missing is not None:
                # Deleted, or a mount not there: not a local change. Said once; the
                # configuration in force runs on.
                if missing != self._missing_said:
                    config_log.warning("%s missing; running configuration unchanged until it "
                                       "is back", missing)
                self._missing_said = missing
                continue
            self._missing_said = None
            try:
                digest = await asyncio.to_thread(self._locked, self._folder_digest.of,
                                                 self.config_dir, site.uid)
            except OSError as err:
                config_log.warning("Configuration folder unreadable: %s", err)
                continue
            # The live digest: a server's set written since (`_apply_from_server`) is known.
            if digest in (self._loaded_hash, rejected):
                continue
            if not written and not self._folder_digest.settled():
                # A file written within the last seconds may still be being written in place
                # (an upload over a slow link): looked at again next turn, never applied half
                # written. This process's own writers replace files whole and say so.
                continue
            problems = await asyncio.to_thread(self._locked, check_site, self.config_dir,
                                               site.uid)
            errors = [p for p in problems if p.severity is Severity.ERROR]
            if errors:
                for problem in errors:
                    config_log.error("%s", problem)
                config_log.error("Local configuration change rejected; running configuration "
                                 "unchanged")
                rejected = digest
                continue
            config_log.info("Local configuration change; applying it")
            self._local_change = True
            self._reload.set()
            return


def _missing_folder(config_dir: Path) -> str | None:
    """The configuration folder, or its CONFIG folder, when missing; else None."""
    for folder in (config_dir, config_dir / "CONFIG"):
        if not folder.is_dir():
            return str(folder)
    return None


def _record_end_ns(batch: pa.RecordBatch) -> int:
    """A record's time (every row has it): read from the buffer, as compute calls cost some
    30 us each at every record."""
    ts = batch.column("ts")
    value: int = _INT64.unpack_from(ts.buffers()[1], 8 * ts.offset)[0]
    return value


_INT64: Final = struct.Struct("<q")
_GOOD_QUALITIES: Final = (bytes([Quality.GOOD]), bytes([Quality.GOOD_CLOCK_UNSYNCHRONISED]))


def _holds_good_value(quality: pa.Array) -> bool:
    """A quality 0 or 7 among the record's values."""
    if quality.null_count:
        return bool(pc.any(pc.is_in(quality, pa.array([0, 7], pa.uint8()))).as_py())
    codes = memoryview(quality.buffers()[1])[quality.offset:quality.offset + len(quality)]
    data = codes.tobytes()
    return any(code in data for code in _GOOD_QUALITIES)


def _libc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_MALLOC_TRIM: Final = _libc_trim()


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system after a session: rendering a minute of 254
    devices frees tens of MB that glibc's allocator would otherwise keep, and the resident size
    crept up session after session (docs/architecture.md §7's budget)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _variable(definition: DefinitionFile, key: str | int) -> Variable | None:
    """An Index (a number or digits), else a Name, else a Tag (docs/formats.md §12.3)."""
    text = str(key)
    if isinstance(key, int) or (text.isascii() and text.isdigit()):
        # ASCII digits only: `"²".isdigit()` holds and `int("²")` raises; an Index has at most
        # 10 digits, and `int()` refuses a text of over 4,300.
        index = read_integer(text, max_digits=10)
        return next((v for v in definition.variables if v.index == index), None)
    return next((v for v in definition.variables if v.name == text), None) or \
        next((v for v in definition.variables if v.tag and v.tag == text), None)


def _json_number(value: RawValue) -> object:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _delete_delivered_traces(traces: TraceStore, outbox: Outbox,
                             file_servers: Sequence[int]) -> None:
    """Trace lines every file server has in a delivered LOG window go (docs/formats.md §11)."""
    traces.delete_delivered(traces_delivered(outbox.state(), file_servers))


def _data_client(settings: ServerSettings, uid: str) -> ServerSettings:
    """The client that publishes data windows beside a permanent connection: its own client id
    (two connections with one id would disconnect each other)."""
    import dataclasses
    base = settings.mqtt_client_id or (uid if settings.slot == 1 else f"{uid}-2")
    return dataclasses.replace(settings, mqtt_client_id=f"{base}-data", topic_alarm="",
                               topic_command="", topic_result="")
