"""When each server gets a session (docs/behaviour.md §4.1).

One `SlotScheduler` per configured server slot runs sessions one at a time:

- at the `var.ini` connection times of its family (`SCHEDULE_` or `SCHEDULE2_`), placed in
  `NTP_TimeZone` with its DST rule (`config.connection_times`);
- on request: start-up (at Power ON), `connect`, a local configuration change, an alarm (server 1
  only, at most one alarm session per 60 s: alarms inside the 60 s share the next one);
- after a failure: 5, 10, 20, 40 min, then hourly until one succeeds (60 min at once for a
  non-retriable failure), `exporters.session.retry_delay_s`.

A trigger arriving during a session starts one more after it. Waits run on the monotonic clock and
are cut into steps of at most 60 s, so a wall clock step moves the next connection time with it: a
step forward runs a connection it passed at once (one session, however many it passed), and after a
step back of more than 2 s the next connection is the first one after the corrected time, not the
one planned before the step (a day ahead after a box's clock that ran a day fast is corrected).
A step back never runs the connection just run again within 60 s of its start: a clock corrected
by a few seconds right after a connection's time would otherwise give the same connection twice.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from config import connection_times
from config.errors import SunpmError
from config.model import Schedule
from exporters.session import SessionResult, Trigger, retry_delay_s
from pipeline.clock import NS_PER_S, Clock

log = logging.getLogger("sunpm.session")

ALARM_SESSION_GAP_S: Final = 60
_MAX_WAIT_S: Final = 60.0
#: The wall clock moving back against the monotonic clock by more than this is a step back
#: (docs/behaviour.md §11), after which the next connection is looked for again.
_STEP_NS: Final = 2 * NS_PER_S
#: A step back brings the connection just run again only when the corrected clock reaches its time
#: this long after it started or later (a clock a day fast, corrected): sooner, it is the same
#: connection twice.
_RERUN_GAP_NS: Final = 60 * NS_PER_S
#: Spans looked through in turn for the next connection times: two days hold every instant of an
#: everyday schedule; a weekday needs a week, the first/middle/last of a month up to 31 days, and
#: a whole year ends any search a preview of several of them makes.
LOOKAHEAD_SPANS: Final = (timedelta(days=2), timedelta(days=35), timedelta(days=400))

RunSession = Callable[[Trigger], Awaitable[SessionResult]]


def next_connection(schedules: Sequence[Schedule], time_zone: str,
                    after: datetime) -> datetime | None:
    """The first scheduled instant strictly after `after` (None when the family has no entry)."""
    times = next_connections(schedules, time_zone, after, 1)
    return times[0] if times else None


def next_connections(schedules: Sequence[Schedule], time_zone: str, after: datetime,
                     count: int) -> list[datetime]:
    """The first `count` scheduled instants strictly after `after`, looked for within each of
    `LOOKAHEAD_SPANS` in turn until enough are found (the web UI's preview of the next connection
    times is this computation)."""
    if not schedules or count <= 0:
        return []
    start = after + timedelta(microseconds=1)
    times: list[datetime] = []
    for span in LOOKAHEAD_SPANS:
        times = connection_times(schedules, start, start + span, time_zone)
        if len(times) >= count:
            break
    return times[:count]


class _UpcomingTimes:
    """`next_connection` over a list computed once and used until it runs out: a schedule every
    minute is 5,760 instants for two days to place in the time zone, at every session."""

    def __init__(self, schedules: Sequence[Schedule], time_zone: str) -> None:
        self._schedules = schedules
        self._zone = time_zone
        self._start: datetime | None = None
        self._times: list[datetime] = []

    def after(self, instant: datetime) -> datetime | None:
        if not self._schedules:
            return None
        # The list holds every instant of [start, start + span), for the first of the spans that
        # holds any: the first one after `instant` found there is the next one. Before `start`
        # (the clock stepped back), or past its last one, it is computed again.
        if self._start is not None and instant >= self._start:
            position = bisect.bisect_right(self._times, instant)
            if position < len(self._times):
                return self._times[position]
        self._start = instant + timedelta(microseconds=1)
        for span in LOOKAHEAD_SPANS:
            self._times = connection_times(self._schedules, self._start, self._start + span,
                                           self._zone)
            if self._times:
                break
        return self._times[0] if self._times else None


class SlotScheduler:
    """Runs one server slot's sessions at its triggers (see the module docstring)."""

    def __init__(self, slot: int, run_session: RunSession, *, schedules: Sequence[Schedule],
                 time_zone: str, clock: Clock) -> None:
        self.slot = slot
        self._run_session = run_session
        self._schedules = tuple(schedules)
        self._zone = time_zone
        self._upcoming = _UpcomingTimes(self._schedules, time_zone)
        self._clock = clock
        self._requests: list[Trigger] = []
        self._wake = asyncio.Event()
        self._alarm_pending = False
        self._last_alarm_session_ns: int | None = None   # monotonic
        self.failures = 0
        self.last_result: SessionResult | None = None
        self.last_end_ns: int | None = None             # wall
        self.sessions = 0
        self.running = False

    def request(self, trigger: Trigger) -> None:
        """Ask for a session (start-up, `connect`, configuration change)."""
        if trigger not in self._requests:
            self._requests.append(trigger)
        self._wake.set()

    def request_alarm(self) -> None:
        """An alarm was raised: one alarm session at most every 60 s."""
        self._alarm_pending = True
        self._wake.set()

    def _wall(self) -> datetime:
        return datetime.fromtimestamp(self._clock.wall_ns() / NS_PER_S, UTC)

    async def run(self) -> None:
        retry_at: int | None = None         # monotonic ns
        # The connection time last run, and when it started (monotonic ns).
        last_run: tuple[datetime, int] | None = None
        scheduled = self._upcoming.after(self._wall())
        offset = self._clock.wall_ns() - self._clock.monotonic_ns()
        while True:
            stepped, offset = offset, self._clock.wall_ns() - self._clock.monotonic_ns()
            if offset < stepped - _STEP_NS:
                scheduled = self._after_step_back(last_run)
            trigger = self._due(retry_at, scheduled)
            if trigger is None:
                await self._wait(retry_at, scheduled)
                continue
            if trigger is Trigger.SCHEDULE and scheduled is not None:
                last_run = (scheduled, self._clock.monotonic_ns())
                scheduled = self._upcoming.after(self._wall())
            if trigger is Trigger.ALARM:
                self._last_alarm_session_ns = self._clock.monotonic_ns()
            # A session run for any reason sends the alarms too, and ends a pending retry.
            self._alarm_pending = False
            retry_at = None
            result = await self._session(trigger)
            if result.ok:
                self.failures = 0
            else:
                self.failures += 1
                delay_s = retry_delay_s(self.failures, retriable=result.retriable)
                retry_at = self._clock.monotonic_ns() + delay_s * NS_PER_S
                log.info("Session retry planned. server=%d in_s=%d failures=%d", self.slot,
                         delay_s, self.failures)

    def _after_step_back(self, last_run: tuple[datetime, int] | None) -> datetime | None:
        """The first connection time after the corrected wall time, but not the one just run
        when it would come again within `_RERUN_GAP_NS` of its start."""
        wall = self._wall()
        upcoming = self._upcoming.after(wall)
        if upcoming is None or last_run is None or upcoming != last_run[0]:
            return upcoming
        due_ns = self._clock.monotonic_ns() + int((upcoming - wall).total_seconds() * NS_PER_S)
        if due_ns - last_run[1] >= _RERUN_GAP_NS:
            return upcoming
        return self._upcoming.after(upcoming)

    async def _session(self, trigger: Trigger) -> SessionResult:
        self.running = True
        try:
            result = await self._run_session(trigger)
        except SunpmError as err:
            # Settings a transport refuses, a journal write failing: the session failed.
            log.warning("server %d: session failed: %s", self.slot, err)
            result = SessionResult(ok=False, reason=str(err), retriable=True)
        except Exception as err:  # a session bug must not stop the gateway
            log.error("server %d: session failed on an unexpected error: %s", self.slot, err,
                      exc_info=err)
            result = SessionResult(ok=False, reason=f"internal error: {err}", retriable=True)
        finally:
            self.running = False
        self.sessions += 1
        self.last_result = result
        self.last_end_ns = self._clock.wall_ns()
        return result

    def _alarm_ready_ns(self) -> int:
        if self._last_alarm_session_ns is None:
            return 0
        return self._last_alarm_session_ns + ALARM_SESSION_GAP_S * NS_PER_S

    def _due(self, retry_at: int | None, scheduled: datetime | None) -> Trigger | None:
        now = self._clock.monotonic_ns()
        if self._requests:
            return self._requests.pop(0)
        if self._alarm_pending and self._alarm_ready_ns() <= now:
            return Trigger.ALARM
        if scheduled is not None and scheduled <= self._wall():
            return Trigger.SCHEDULE
        if retry_at is not None and retry_at <= now:
            return Trigger.RETRY
        return None

    async def _wait(self, retry_at: int | None, scheduled: datetime | None) -> None:
        now = self._clock.monotonic_ns()
        deadline = now + int(_MAX_WAIT_S * NS_PER_S)
        if scheduled is not None:
            until_ns = int((scheduled - self._wall()).total_seconds() * NS_PER_S)
            deadline = min(deadline, now + max(0, until_ns))
        if retry_at is not None:
            deadline = min(deadline, retry_at)
        if self._alarm_pending:
            deadline = min(deadline, max(now, self._alarm_ready_ns()))
        if await self._clock.wait_until(deadline, self._wake):
            self._wake.clear()
