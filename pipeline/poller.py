"""The poll loop: drives protocol drivers on schedule and feeds the recorder
(docs/behaviour.md §2.1).

- A device is polled every P = min(`DAQ_PollPeriod`, its `acqPeriod`), at multiples of P from each
  00:00 UTC (the day's last gap is shorter when P does not divide 86400).
- One task per link (a Modbus TCP connection, a serial bus, the TIC or I/O port); links run
  concurrently; on a link, the devices due at a slot are polled one after the other in ascending
  daq index order.
- A link still busy when its next slot comes skips that slot (an overrun, counted) and logs at
  most hourly `<link>: poll cycle took <t> s, longer than DAQ_PollPeriod <P> s; <n> cycles skipped
  in the last hour`.
- Writes (commands, scripts) go ahead of polls: a link runs its queued writes as soon as it is
  idle, before each device poll of a cycle; a newer write to a variable replaces a queued one.
- Deadlines are kept on the monotonic clock; the wall clock only names slots. When the two drift
  apart by more than 2 s the wall clock stepped (`wall clock stepped by <±n> s`, or `wall clock
  reset by <-n> s` beyond an hour back, docs/behaviour.md §11) and the slots are re-aligned.
- Records go to the record sink (the service passes `Log.append_records`) through a bounded queue,
  and value changes, parameter reads and clock steps to the event sink through another. The sink
  acknowledges a record only after the commit holding it was fsynced, a commit cycle later, so
  appends overlap without a count limit: what waits for its commit is bounded in bytes
  (`RECORDS_IN_FLIGHT_BYTES`), many commit cycles' worth at full rate. Only a store that cannot
  keep up (a disk failing or far too slow) fills that bound; link tasks then wait to hand over
  records, and `sunpm.store` says so, rather than the overrun warning alone blaming the bus.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import pyarrow as pa

from config.errors import SunpmError
from config.model import DefinitionFile, Device, Quality, Variable
from pipeline.clock import NS_PER_S, Clock, SystemClock
from pipeline.drivers._base import (
    DeviceError,
    ProtocolDriver,
    RawValue,
    Reading,
    Readings,
    ReadPlan,
)
from pipeline.drivers.writes import WriteQueue
from pipeline.recorder import (
    DAY_NS,
    ParameterRead,
    PollOutcome,
    Recorder,
    RecordReady,
    ValueChanged,
)

clock_log = logging.getLogger("sunpm.clock")
store_log = logging.getLogger("sunpm.store")

#: Records waiting for the drain task to start their append. The drain never waits on the
#: store unless `RECORDS_IN_FLIGHT_BYTES` is reached, so this only absorbs a burst of slots.
RECORD_QUEUE_BATCHES: Final = 64
#: Bytes of records handed to the sink and not yet acknowledged. The store acknowledges an
#: append after its group commit's fsync (every `STORE_FlushSeconds`), so a whole commit cycle
#: of every device's records must be in flight at once: 254 devices x 20 values every second are
#: about 0.5 MB/s, and this holds some 30 s of them. Past it link tasks wait: only a store that
#: cannot keep up gets there. The store's own bound while the disk fails is 64 MB
#: (`StoreOptions.max_pending_bytes`); it drops, counted, rather than wait.
RECORDS_IN_FLIGHT_BYTES: Final = 16 * 2**20
#: Counted per record on top of its Arrow buffers: the append task, its coroutine and the
#: store's pending entry and future (about 1.5 KiB measured), so that many tiny records cannot
#: hold far more memory than the bound says.
RECORD_OVERHEAD_BYTES: Final = 2048
#: Events (changes, parameter reads, clock steps) waiting for the event sink; when full, link
#: tasks wait, as for records.
EVENT_QUEUE_EVENTS: Final = 256
#: Writes queued per link; a caller beyond this waits for room.
WRITE_QUEUE_PER_LINK: Final = 64
#: Wall and monotonic clocks drifting apart by more than this is a step (docs/behaviour.md §11).
STEP_NS: Final = 2 * NS_PER_S
RESET_NS: Final = 3_600 * NS_PER_S
OVERRUN_WARNING_INTERVAL_NS: Final = 3_600 * NS_PER_S

class Appended(Protocol):
    """What a record sink may answer (the store's `SeqRange`): `dropped` when its quota or a
    full store refused the record."""

    @property
    def dropped(self) -> bool: ...


#: Appends one device's records; returns once they are acknowledged (None: nothing to say).
RecordSink = Callable[[str, pa.RecordBatch], Awaitable[Appended | None]]


class PollError(SunpmError):
    """The poll loop was asked about a device or link it does not drive."""


class WriteSuperseded(DeviceError):
    """A queued write was replaced by a newer write to the same variable before it was sent."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockStepped:
    """The wall clock moved against the monotonic clock by more than 2 s (docs/behaviour.md §11)."""

    ts_ns: int            # wall clock after the step
    step_ns: int          # signed
    reset: bool           # a step back of more than an hour


Event = ValueChanged | ParameterRead | ClockStepped
EventSink = Callable[[Event], Awaitable[object]]


@dataclass(frozen=True, slots=True, kw_only=True)
class PolledDevice:
    """A device as the poll loop drives it: its daq row, definition and read plans."""

    device: Device
    definition: DefinitionFile
    plan: ReadPlan                          # actions 2, 4, 8, 9 and their scale factors
    parameter_plan: ReadPlan | None = None  # actions 1, 9 and their scale factors; None: none


@dataclass(frozen=True, slots=True, kw_only=True)
class PollLink:
    """One link: a TCP connection (`ip:port`) or a bus (`SERIAL1`), polled by one task.

    The caller opens and closes the driver; several links may share one driver object.
    """

    name: str
    driver: ProtocolDriver
    devices: tuple[PolledDevice, ...]
    #: Log category of the link's messages (docs/formats.md §11): modbus, tic, io.
    category: str = "modbus"


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkCounters:
    link: str
    cycles: int
    skipped: int          # overruns
    writes: int
    port_errors: int = 0  # reads the driver could not make at all (recorded as quality 5)


@dataclass(frozen=True, slots=True, kw_only=True)
class PollerCounters:
    links: tuple[LinkCounters, ...]
    records_sent: int
    records_dropped: int                 # refused by the sink (quota, store full), by device
    dropped_by_device: dict[str, int] = field(default_factory=dict)
    events_sent: int = 0
    events_failed: int = 0               # the event sink raised: the event is lost, polling goes on
    clock_steps: int = 0
    overruns_by_device: dict[str, int] = field(default_factory=dict)  # polls skipped
    records_in_flight: int = 0           # handed to the sink, not yet acknowledged
    store_waits: int = 0                 # times the in-flight bound made the links wait


def link_name(device: Device) -> str:
    """The link a device is polled on: `ip:port` (one per TCP endpoint, shared by its unit ids),
    `SERIAL<k>`, `IO` or `TIC1`; also the `<bus>` of the overrun warning."""
    endpoint = device.tcp_endpoint
    if endpoint is not None:
        return f"{endpoint[0]}:{endpoint[1]}"
    return device.serial_port or device.index


def poll_period_s(device: Device, daq_poll_period_s: int) -> int:
    return max(1, min(daq_poll_period_s, device.acq_period_s))


def next_slot_ns(after_ns: int, period_s: int) -> int:
    """First poll slot strictly after `after_ns`: a multiple of the period from 00:00 UTC, or
    the next midnight."""
    day = after_ns - after_ns % DAY_NS
    period_ns = period_s * NS_PER_S
    slot = day + ((after_ns - day) // period_ns + 1) * period_ns
    return min(slot, day + DAY_NS)


def is_due(slot_ns: int, period_s: int) -> bool:
    return (slot_ns % DAY_NS) % (period_s * NS_PER_S) == 0


def _superseded(key: tuple[str, int]) -> WriteSuperseded:
    index, var_index = key
    return WriteSuperseded(f"writeVariable: {index}: replaced by a newer write to {var_index} "
                           "before it was sent")


def _stopped(index: str) -> DeviceError:
    return DeviceError(f"writeVariable: {index}: not written: polling stopped (configuration "
                       "reload or stop)")


def _order(device: Device) -> tuple[int, int, str]:
    number = device.numeric_index
    return (0, number, "") if number is not None else (1, 0, device.index)


@dataclass(slots=True)
class _Write:
    device: Device
    var: Variable
    raw: RawValue


class _Link:
    """A link's mutable state: its devices, queued writes and counters."""

    def __init__(self, link: PollLink, daq_poll_period_s: int) -> None:
        self.name = link.name
        self.driver = link.driver
        self.log = logging.getLogger(f"sunpm.{link.category}")
        self.daq_poll_period_s = daq_poll_period_s
        self.devices: dict[str, PolledDevice] = {}
        self.ordered: list[PolledDevice] = []
        self.indexes: list[str] = []
        self.polled_every: list[tuple[PolledDevice, int]] = []
        self.periods: set[int] = set()
        #: Queued writes by (daq index, variable Index); a newer one replaces a queued one.
        self.writes: WriteQueue[tuple[str, int], _Write] = WriteQueue(_superseded)
        self.write_room = asyncio.Semaphore(WRITE_QUEUE_PER_LINK)
        self.wake = asyncio.Event()
        self.cycles = 0
        self.skipped = 0
        self.writes_done = 0
        self.port_errors = 0
        self.offset_ns = 0    # wall - monotonic when this link's deadline was set
        self.skipped_since_warning = 0
        self.last_warning_mono: int | None = None
        for polled in link.devices:
            self.devices[polled.device.index] = polled
        self.reorder()

    def reorder(self) -> None:
        self.ordered = sorted(self.devices.values(), key=lambda p: _order(p.device))
        # Worked out here, not at every slot of every link.
        self.indexes = [p.device.index for p in self.ordered]
        self.polled_every = [(p, poll_period_s(p.device, self.daq_poll_period_s))
                             for p in self.ordered]
        self.periods = {period for _, period in self.polled_every}

    def next_slot(self, after_ns: int) -> int:
        return min((next_slot_ns(after_ns, p) for p in self.periods),
                   default=after_ns + DAY_NS)

    def due(self, slot_ns: int) -> list[PolledDevice]:
        if len(self.periods) == 1:
            # One period on the link (the common case): every device is due at its slots.
            return self.ordered if is_due(slot_ns, next(iter(self.periods))) else []
        return [p for p, period in self.polled_every if is_due(slot_ns, period)]

    @property
    def min_period_s(self) -> int:
        return min(self.periods, default=self.daq_poll_period_s)


class Poller:
    """Polls every link on schedule, feeding the recorder, until `stop()` or cancellation."""

    def __init__(self, links: Sequence[PollLink], *, recorder: Recorder, record_sink: RecordSink,
                 event_sink: EventSink | None = None, daq_poll_period_s: int = 10,
                 clock: Clock | None = None) -> None:
        self.recorder = recorder
        self.clock: Clock = clock or SystemClock()
        self._record_sink = record_sink
        self._event_sink = event_sink
        self._links = [_Link(link, daq_poll_period_s) for link in links]
        self._link_of: dict[str, _Link] = {}
        for link in self._links:
            for index, polled in link.devices.items():
                if index in self._link_of:
                    raise PollError(f"device {index}: on two links, {self._link_of[index].name} "
                                    f"and {link.name}; fix daq.csv")
                self._link_of[index] = link
                recorder.set_device(polled.device, polled.definition)
        self._records: asyncio.Queue[RecordReady | None] = asyncio.Queue(RECORD_QUEUE_BATCHES)
        self._events: asyncio.Queue[Event | None] = asyncio.Queue(EVENT_QUEUE_EVENTS)
        self._in_flight_bytes = 0
        self._in_flight_records = 0
        self._in_flight_room = asyncio.Event()
        self.store_waits = 0
        self._stopping = False
        self._offset_ns: int | None = None    # wall - monotonic at the last alignment
        self.records_sent = 0
        self.records_dropped = 0
        self.dropped_by_device: dict[str, int] = {}
        self.events_sent = 0
        self.events_failed = 0
        self.clock_steps = 0
        self.overruns_by_device: dict[str, int] = {}
        self._latest: dict[str, Readings] = {}

    # ----------------------------------------------------------------- control

    async def run(self) -> None:
        self._align()
        async with asyncio.TaskGroup() as outer:
            outer.create_task(self._drain_records(), name="recorder:records")
            outer.create_task(self._drain_events(), name="recorder:events")
            try:
                async with asyncio.TaskGroup() as polls:
                    for link in self._links:
                        polls.create_task(self._poll_link(link), name=f"poll:{link.name}")
            finally:
                for link in self._links:
                    self._refuse_writes(link)
                # Records of periods that ended are handed over even when polling stops.
                await self._hand_over(self.recorder.flush(self.clock.wall_ns()))
                await self._records.put(None)
                await self._events.put(None)

    def stop(self) -> None:
        """Finish the cycles in progress, hand over ended records, and let `run` return."""
        self._stopping = True
        for link in self._links:
            link.wake.set()

    def request_parameters(self, index: str) -> None:
        """`getParameters`: read the device's parameters after its next good poll."""
        self._link(index)
        self.recorder.request_parameters(index)

    def replace_device(self, polled: PolledDevice) -> None:
        """Apply a changed daq row, definition or plan to a device already polled."""
        link = self._link(polled.device.index)
        link.devices[polled.device.index] = polled
        link.reorder()
        self.recorder.set_device(polled.device, polled.definition)
        link.wake.set()

    async def write(self, index: str, var: Variable, raw: RawValue) -> RawValue:
        """Queue a write for the device's link, ahead of its polls; returns, once it was done,
        the raw value the device was sent (the driver's `write`).

        Raises the driver's `DeviceError`, or `WriteSuperseded` when a newer write to the same
        variable replaced this one before it was sent; a `DeviceError` at once after `stop`
        (no poll loop would send it), and for a write still queued when the loop ends.
        """
        link = self._link(index)
        if self._stopping:
            raise _stopped(index)
        key = (index, var.index)
        done: asyncio.Future[RawValue] = asyncio.get_running_loop().create_future()
        needs_room = key not in link.writes     # a replaced write hands over its place
        if needs_room:
            await link.write_room.acquire()
            if self._stopping:
                link.write_room.release()
                raise _stopped(index)
        write = _Write(device=link.devices[index].device, var=var, raw=raw)
        if link.writes.put(key, write, done) and needs_room:
            link.write_room.release()           # one came in while this one waited for room
        link.wake.set()
        return await done

    def latest(self, index: str) -> Readings | None:
        """The device's last poll (live values for the web UI and scripts), None before one."""
        self._link(index)
        return self._latest.get(index)

    def counters(self) -> PollerCounters:
        return PollerCounters(
            links=tuple(LinkCounters(link=k.name, cycles=k.cycles, skipped=k.skipped,
                                     writes=k.writes_done, port_errors=k.port_errors)
                        for k in self._links),
            records_sent=self.records_sent, records_dropped=self.records_dropped,
            dropped_by_device=dict(self.dropped_by_device), events_sent=self.events_sent,
            events_failed=self.events_failed,
            clock_steps=self.clock_steps, overruns_by_device=dict(self.overruns_by_device),
            records_in_flight=self._in_flight_records, store_waits=self.store_waits)

    def _link(self, index: str) -> _Link:
        try:
            return self._link_of[index]
        except KeyError:
            raise PollError(f"device {index}: not polled (absent, or not in daq.csv)") from None

    # ----------------------------------------------------------------- time

    def _align(self) -> None:
        self._offset_ns = self.clock.wall_ns() - self.clock.monotonic_ns()

    def _now(self) -> int:
        """The aligned wall time: monotonic time named in wall-clock terms."""
        assert self._offset_ns is not None
        return self.clock.monotonic_ns() + self._offset_ns

    async def _check_clock(self) -> None:
        assert self._offset_ns is not None
        offset = self.clock.wall_ns() - self.clock.monotonic_ns()
        step = offset - self._offset_ns
        self._offset_ns = offset
        if abs(step) <= STEP_NS:
            # NTP slewing: absorbed at every slot, so polls stay on wall-clock multiples and a
            # poll meant for a period's first slot never lands in the period before.
            return
        self.clock_steps += 1
        seconds = round(step / NS_PER_S)
        reset = step < -RESET_NS
        if reset:
            clock_log.warning("wall clock reset by %d s", seconds)
        else:
            clock_log.warning("wall clock stepped by %+d s", seconds)
        await self._emit(ClockStepped(ts_ns=self.clock.wall_ns(), step_ns=step, reset=reset))

    # ----------------------------------------------------------------- a link

    async def _poll_link(self, link: _Link) -> None:
        assert self._offset_ns is not None
        link.offset_ns = self._offset_ns
        slot = link.next_slot(self._now() - 1)
        while not self._stopping:
            woken = await self.clock.wait_until(slot - link.offset_ns, link.wake)
            if woken:
                link.wake.clear()
                await self._run_writes(link)
                if self._stopping:
                    return
            await self._check_clock()
            assert self._offset_ns is not None
            stepped = abs(self._offset_ns - link.offset_ns) > STEP_NS
            link.offset_ns = self._offset_ns
            if stepped:
                # The wall clock stepped while we waited (whichever link noticed it first):
                # re-align on the new time rather than count the jump as overruns.
                slot = link.next_slot(self._now() - 1)
                continue
            if self._now() < slot:
                continue    # woken early by a write, or a slew moved the slot
            await self._cycle(link, slot)
            slot = self._after_cycle(link, slot)

    async def _cycle(self, link: _Link, slot: int) -> None:
        link.cycles += 1
        await self._hand_over(self.recorder.flush(self.clock.wall_ns(), link.indexes))
        for polled in link.due(slot):
            await self._run_writes(link)
            await self._poll(link, polled)

    async def _poll(self, link: _Link, polled: PolledDevice) -> None:
        readings = await self._read(link, polled.device, polled.plan)
        self._latest[readings.device] = readings
        outcome: PollOutcome = self.recorder.feed(readings)
        await self._hand_over(outcome.records)
        for change in outcome.changes:
            await self._emit(change)
        if outcome.parameters_due and polled.parameter_plan is not None:
            answer = await self._read(link, polled.device, polled.parameter_plan)
            await self._emit(self.recorder.feed_parameters(answer))

    async def _read(self, link: _Link, device: Device, plan: ReadPlan) -> Readings:
        try:
            return await link.driver.read(device, plan)
        except DeviceError as err:
            # Drivers report device faults as qualities; an error here is the port itself
            # failing, which docs/behaviour.md §2.4 item 6 records as quality 5.
            link.port_errors += 1
            level = logging.WARNING if link.port_errors == 1 else logging.DEBUG
            link.log.log(level, "%s: read failed: %s. device=%s", link.name, err, device.index)
            failed = Reading(None, Quality.DISCONNECTED)
            return Readings(device=device.index, ts_ns=self.clock.wall_ns(),
                            values={var.index: failed for var in plan.variables})

    def _after_cycle(self, link: _Link, slot: int) -> int:
        """The next slot to run; slots that passed while the cycle ran are skipped (overrun)."""
        now = self._now()
        following = link.next_slot(slot)
        if following > now:
            return following
        skipped = 0
        while following <= now:
            skipped += 1
            for polled in link.due(following):
                index = polled.device.index
                self.overruns_by_device[index] = self.overruns_by_device.get(index, 0) + 1
            following = link.next_slot(following)
        link.skipped += skipped
        link.skipped_since_warning += skipped
        mono = self.clock.monotonic_ns()
        if (link.last_warning_mono is None
                or mono - link.last_warning_mono >= OVERRUN_WARNING_INTERVAL_NS):
            took_s = (now - slot) / NS_PER_S
            link.log.warning(
                "%s: poll cycle took %.1f s, longer than DAQ_PollPeriod %d s; "
                "%d cycles skipped in the last hour",
                link.name, took_s, link.min_period_s, link.skipped_since_warning)
            link.last_warning_mono = mono
            link.skipped_since_warning = 0
        return following

    def _refuse_writes(self, link: _Link) -> None:
        """The link's poll loop has ended: a write still queued is never sent."""
        while (queued := link.writes.pop()) is not None:
            write, done = queued
            link.write_room.release()
            if not done.done():
                done.set_exception(_stopped(write.device.index))

    async def _run_writes(self, link: _Link) -> None:
        while (queued := link.writes.pop()) is not None:
            write, done = queued
            link.write_room.release()
            if done.done():
                continue
            try:
                sent = await link.driver.write(write.device, write.var, write.raw)
            except SunpmError as err:
                if not done.done():
                    done.set_exception(err)
                continue
            link.writes_done += 1
            if not done.done():
                done.set_result(sent)

    # ----------------------------------------------------------------- sinks

    async def _hand_over(self, records: Iterable[RecordReady]) -> None:
        for record in records:
            await self._records.put(record)

    async def _emit(self, event: Event) -> None:
        if self._event_sink is not None:
            await self._events.put(event)

    async def _drain_records(self) -> None:
        async with asyncio.TaskGroup() as appends:
            while (record := await self._records.get()) is not None:
                size = record.batch.get_total_buffer_size() + RECORD_OVERHEAD_BYTES
                if self._in_flight_bytes + size > RECORDS_IN_FLIGHT_BYTES:
                    await self._wait_for_room(size)
                self._in_flight_bytes += size
                self._in_flight_records += 1
                appends.create_task(self._append(record, size), name=f"append:{record.device}")

    async def _wait_for_room(self, size: int) -> None:
        """The store is behind by the whole in-flight bound: polling waits, and we say why.

        Records flow again once half the bound is acknowledged, so a store that is just
        keeping up does not flap between the two log lines at every commit.
        """
        self.store_waits += 1
        store_log.warning(
            "Store behind: %d records (%d KiB) wait for their commit; polls wait to hand over "
            "records until commits catch up (disk failing or too slow)",
            self._in_flight_records, self._in_flight_bytes // 1024)
        waited = self.clock.monotonic_ns()
        low_water = RECORDS_IN_FLIGHT_BYTES // 2
        # An empty flight always takes the next record, however large.
        while self._in_flight_records and self._in_flight_bytes + size > low_water:
            self._in_flight_room.clear()
            await self._in_flight_room.wait()
        store_log.info("Store caught up after %.1f s; records flow again",
                       (self.clock.monotonic_ns() - waited) / NS_PER_S)

    async def _append(self, record: RecordReady, size: int) -> None:
        try:
            result = await self._record_sink(record.device, record.batch)
        except SunpmError as err:
            self._dropped(record, str(err))
        else:
            if result is not None and result.dropped:
                self._dropped(record, "refused by the store (quota or storage full)")
            else:
                self.records_sent += 1
        finally:
            self._in_flight_bytes -= size
            self._in_flight_records -= 1
            self._in_flight_room.set()

    def _dropped(self, record: RecordReady, reason: str) -> None:
        # A device over its quota, or a full store: the record is dropped and counted
        # (docs/behaviour.md §6); the store journals and alarms it, and polling goes on.
        self.records_dropped += 1
        dropped = self.dropped_by_device.get(record.device, 0)
        self.dropped_by_device[record.device] = dropped + 1
        if dropped == 0:
            store_log.warning("Record dropped. device=%s reason=%s", record.device, reason)

    async def _drain_events(self) -> None:
        while (event := await self._events.get()) is not None:
            assert self._event_sink is not None
            try:
                await self._event_sink(event)
            except Exception as err:  # noqa: BLE001 - logged by _event_failed; costs one event
                self._event_failed(event, err)
            else:
                self.events_sent += 1

    def _event_failed(self, event: Event, err: Exception) -> None:
        # As a dropped record: the event is lost and counted, acquisition goes on. The first
        # failure carries its traceback; later ones are summed up at each power of two.
        self.events_failed += 1
        n = self.events_failed
        if n == 1:
            store_log.error("Event lost. kind=%s reason=%s", type(event).__name__,
                            str(err) or type(err).__name__, exc_info=err)
        elif n & (n - 1) == 0:
            store_log.warning("Events lost. count=%d kind=%s reason=%s", n, type(event).__name__,
                              str(err) or type(err).__name__)
