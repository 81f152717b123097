"""Gateway alarms the service raises, and the power alarms (docs/behaviour.md §8).

Every alarm is an `alarm` journal event dated when it happened (store.events fixes the
body), then an alarm session with server 1 is asked for (the scheduler keeps those at most one per
60 s). The power rules:

- a heartbeat event every 10 s while running;
- `Power ON` once the service has run 60 s (a crash loop raises none);
- `Power OFF` at a clean stop, dated then; after an unclean stop (no `Power OFF` at or after the
  last heartbeat) the next start raises it dated at that heartbeat, if the gap to now is at least
  10 s (the manual: an outage of 10 s or more).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final

import pyarrow as pa

from config.errors import SunpmError
from config.model import Device, Protocol
from pipeline.clock import NS_PER_S, Clock
from pipeline.drivers.tic import LOSS_MESSAGE, RETURN_MESSAGE
from pipeline.recorder import ValueChanged
from store.events import (
    DeviceAlarm,
    EventBodyError,
    GatewayAlarm,
    Source,
    alarm_from_body,
    journal_items,
)
from store.log import Log

log = logging.getLogger("sunpm.alarm")

HEARTBEAT_S: Final = 10
POWER_ON_AFTER_S: Final = 60
MIN_OUTAGE_S: Final = 10
#: The clock behind the last heartbeat by more than this was set back (docs/behaviour.md §11).
CLOCK_STEP_S: Final = 2
POWER_ON: Final = "Power ON"
POWER_OFF: Final = "Power OFF"

_SOURCES: Final = {Protocol.IO: Source.IO, Protocol.TIC: Source.TIC}


class Alarms:
    """Journals alarms and tells the scheduler (`on_alarm`) that one was raised."""

    def __init__(self, store: Log, clock: Clock, on_alarm: Callable[[], None]) -> None:
        self._store = store
        self._clock = clock
        self._on_alarm = on_alarm
        self.raised = 0

    async def gateway(self, name: str, *, ts_ns: int | None = None, subject: str | None = None,
                      text: str | None = None) -> None:
        body = GatewayAlarm(alarm=name, subject=subject, text=text)
        when = self._clock.wall_ns() if ts_ns is None else ts_ns
        await self._store.append_journal("alarm", body.to_fields(), ts_ns=when,
                                         commit_now=True)
        log.info("%s%s", name, f" ({subject})" if subject else "")
        self.raised += 1
        self._on_alarm()

    async def device(self, change: ValueChanged, device: Device, protocol: Protocol) -> None:
        """A change of an action 8/9 variable, dated at its poll (docs/formats.md §10)."""
        body = DeviceAlarm(source=_SOURCES.get(protocol, Source.MODBUS), name=device.name,
                           var=change.var, value=change.new_text, is_text=change.is_text)
        await self._store.append_journal("alarm", body.to_fields(), device=change.device,
                                         def_=change.def_id, ts_ns=change.ts_ns)
        log.info("Device alarm. device=%s index=%d value=%s", device.name, change.var,
                 change.new_text)
        self.raised += 1
        self._on_alarm()



def last_heartbeat(store: Log) -> int | None:
    """The time of the latest `heartbeat` event, else the latest `state` snapshot's copy (which
    keeps it once the journal's quota dropped the events); None before any (blocking)."""
    found = _last_heartbeat(store)
    return None if found is None else found[0]


def _last_heartbeat(store: Log) -> tuple[int, int | None] | None:
    """`last_heartbeat`'s time, and the seq of its `heartbeat` event (None: the time came from a
    `state` snapshot).

    Read newest segment first: the segments since the latest heartbeat, not the journal."""
    for table in store.journal_newest_first(["heartbeat", "state"]):
        if not table.num_rows:
            continue
        last = table.slice(table.num_rows - 1)
        if last.column("kind")[0].as_py() == "heartbeat":
            return (int(last.column("ts").cast(pa.int64())[0].as_py()),
                    int(last.column("seq")[0].as_py()))
        # The one field read as `store.state.GatewayState.from_body` reads it: the body's
        # delivery section (windows by the hundred) is not built for it.
        try:
            heartbeat = json.loads(last.column("body")[0].as_py()).get("last_heartbeat_ns")
        except (ValueError, AttributeError):
            return None
        return (heartbeat, None) if isinstance(heartbeat, int) else None
    return None


async def last_unclean_heartbeat(store: Log) -> int | None:
    """The last heartbeat's time if the previous run did not stop cleanly, else None.

    A clean stop journals Power OFF after the run's last heartbeat: looked for among the events
    committed after that heartbeat, not by time, since a run started with a clock in 1970 beats
    at times older than an earlier run's Power OFF."""
    found = await asyncio.to_thread(_last_heartbeat, store)
    if found is None:
        return None
    heartbeat, seq = found
    if seq is None:
        table = await asyncio.to_thread(store.journal, start_ns=heartbeat, kinds=["alarm"])
    else:
        table = await asyncio.to_thread(store.journal, kinds=["alarm"], seq_from=seq + 1)
    for item in journal_items(table):
        body = alarm_from_body(item.body)
        if isinstance(body, GatewayAlarm) and body.alarm == POWER_OFF:
            return None
    return heartbeat


class PowerWatch:
    """Heartbeats and the Power ON / Power OFF alarms of one run."""

    def __init__(self, store: Log, alarms: Alarms, clock: Clock) -> None:
        self._store = store
        self._alarms = alarms
        self._clock = clock
        self.power_on_raised = asyncio.Event()
        #: True while Power ON is journaled: the alarm it raises asks for the start-up session.
        self.raising_power_on = False
        self.heartbeats_failed = 0
        self.stopped = False

    async def after_start(self) -> int | None:
        """Raise the Power OFF an unclean stop left unsaid; returns the heartbeat it is dated at
        (None when there is none to raise)."""
        heartbeat = await last_unclean_heartbeat(self._store)
        if heartbeat is None:
            return None
        gap_ns = self._clock.wall_ns() - heartbeat
        if gap_ns < -CLOCK_STEP_S * NS_PER_S:
            # The clock is behind the last heartbeat: a box without a battery-backed clock
            # started in 1970 (or a clock was set back). How long it was off cannot be told, and
            # a power cut is not left unsaid.
            log.warning("The previous run stopped without a clean stop; Power OFF dated at its "
                        "last heartbeat, %d s after the clock now: the outage's length is "
                        "unknown", round(-gap_ns / NS_PER_S))
            await self._alarms.gateway(POWER_OFF, ts_ns=heartbeat)
            return heartbeat
        if gap_ns < MIN_OUTAGE_S * NS_PER_S:
            log.info("Unclean stop shorter than %d s; no Power OFF. gap_s=%.1f", MIN_OUTAGE_S,
                     gap_ns / NS_PER_S)
            return None
        log.warning("The previous run stopped without a clean stop; Power OFF dated at its "
                    "last heartbeat. gap_s=%.1f", gap_ns / NS_PER_S)
        await self._alarms.gateway(POWER_OFF, ts_ns=heartbeat)
        return heartbeat

    async def heartbeats(self) -> None:
        """A heartbeat now and every 10 s on the clock; each goes with the next group commit
        (the beat does not wait for it, so a slow commit never shifts the beats)."""
        pending: set[asyncio.Task[int]] = set()
        try:
            while True:
                beat = asyncio.ensure_future(self._store.append_journal(
                    "heartbeat", {}, ts_ns=self._clock.wall_ns()))
                pending.add(beat)
                beat.add_done_callback(self._beat_done(pending))
                await self._clock.sleep(HEARTBEAT_S)
        finally:
            # Appends already queued complete with the store's next commit (or its close).
            for beat in list(pending):
                if beat.done():
                    pending.discard(beat)

    def _beat_done(self, pending: set[asyncio.Task[int]]) -> Callable[[asyncio.Task[int]], None]:
        def done(beat: asyncio.Task[int]) -> None:
            pending.discard(beat)
            if not beat.cancelled() and beat.exception() is not None:
                self.heartbeats_failed += 1
                if self.heartbeats_failed == 1:
                    log.warning("Heartbeat not stored: %s", beat.exception())
        return done

    async def power_on(self) -> None:
        await self._clock.sleep(POWER_ON_AFTER_S)
        self.raising_power_on = True
        try:
            await self._alarms.gateway(POWER_ON)
        except SunpmError as err:
            log.error("Power ON not stored: %s", err)
        finally:
            self.raising_power_on = False
        self.power_on_raised.set()

    async def clean_stop(self) -> None:
        self.stopped = True
        await self._alarms.gateway(POWER_OFF)


#: `ALARM_DeviceLost=1`: this many recording periods in a row without a good read.
LOST_AFTER_PERIODS: Final = 3
DEVICE_LOST: Final = "Device lost"
DEVICE_BACK: Final = "Device back"


def lost_devices(store: Log, names: Mapping[str, str]) -> set[str]:
    """The devices (daq index) whose latest `Device lost`/`Device back` in the journal is a loss,
    found by their subject, the daq name (blocking): a device renamed since starts afresh."""
    table = store.journal(kinds=["alarm"])
    latest: dict[str, bool] = {}
    for item in journal_items(table.sort_by("seq")):
        try:
            body = alarm_from_body(item.body)
        except EventBodyError:
            continue
        if isinstance(body, GatewayAlarm) and body.subject is not None \
                and body.alarm in (DEVICE_LOST, DEVICE_BACK):
            latest[body.subject] = body.alarm == DEVICE_LOST
    return {index for index, name in names.items() if latest.get(name, False)}


def accessory_lost(store: Log) -> bool:
    """Whether the latest `Loss of ICT accessory`/`Return ICT accessory` in the journal is a
    loss (blocking; reads the journal's segments back to it, newest first)."""
    for table in store.journal_newest_first(["alarm"]):
        for item in reversed(journal_items(table)):
            try:
                body = alarm_from_body(item.body)
            except EventBodyError:
                continue
            if isinstance(body, GatewayAlarm) and body.alarm in (LOSS_MESSAGE,
                                                                 RETURN_MESSAGE):
                return body.alarm == LOSS_MESSAGE
    return False


class DeviceWatch:
    """`Device lost` after 3 records in a row without a good value, `Device back` at the next
    record with one (docs/behaviour.md §8, `ALARM_DeviceLost=1`); subject the device's daq name."""

    def __init__(self, alarms: Alarms, names: dict[str, str],
                 lost: Iterable[str] = ()) -> None:
        self._alarms = alarms
        #: daq index → name, the subjects (a reload replaces them).
        self.names = names
        self._bad: dict[str, int] = {}
        #: Lost devices; at a start, those the journal left lost (`lost_devices`), so a device
        #: still silent is not lost again and one answering again is back.
        self._lost: set[str] = set(lost)

    def record(self, device: str, good: bool, ts_ns: int) -> Awaitable[None] | None:
        """The alarm to raise for this record, if any (the caller schedules it)."""
        if good:
            self._bad[device] = 0
            if device in self._lost:
                self._lost.discard(device)
                return self._alarms.gateway(DEVICE_BACK, ts_ns=ts_ns,
                                            subject=self.names.get(device, device))
            return None
        self._bad[device] = self._bad.get(device, 0) + 1
        if self._bad[device] >= LOST_AFTER_PERIODS and device not in self._lost:
            self._lost.add(device)
            return self._alarms.gateway(DEVICE_LOST, ts_ns=ts_ns,
                                        subject=self.names.get(device, device))
        return None


STORAGE_CHECK_S: Final = 10.0


class StorageWatch:
    """`Storage full` / `Storage available` from the store's `storage` journal events (the
    store journals each episode's start and end; docs/behaviour.md §6), dated at those events,
    subject the device's daq name or `journal`. Events of earlier runs were theirs to raise."""

    def __init__(self, store: Log, alarms: Alarms, clock: Clock,
                 names: Callable[[], dict[str, str]]) -> None:
        self._store = store
        self._alarms = alarms
        self._clock = clock
        self._names = names

    async def run(self) -> None:
        last = self._store.watermark().journal
        while True:
            await self._clock.sleep(STORAGE_CHECK_S)
            try:
                last = await self._check(last)
            except SunpmError as err:
                # The journal unreadable or full: the same events are read again next time.
                log.warning("Storage alarms not checked: %s", err)

    async def _check(self, last: int) -> int:
        table = await asyncio.to_thread(self._store.journal, kinds=["storage"],
                                        seq_from=last + 1)
        for item in journal_items(table.sort_by("seq")):
            body = json.loads(item.body)
            event = body.get("event")
            if event in ("full", "available"):
                device = str(body.get("device") or "journal")
                subject = self._names().get(device, device)
                await self._alarms.gateway("Storage full" if event == "full"
                                           else "Storage available", ts_ns=item.ts_ns,
                                           subject=subject)
            last = max(last, item.seq)
        return last
