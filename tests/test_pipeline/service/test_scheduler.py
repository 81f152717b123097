"""Session triggers of `SlotScheduler` on a manual clock: var.ini times in the configured zone
(DST included), alarm sessions at most one per 60 s, requests during a session, retries."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from config.model import Schedule, ScheduleType
from exporters.session import SessionResult, Trigger
from pipeline.clock import NS_PER_S, ManualClock
from pipeline.service.scheduler import (
    SlotScheduler,
    _UpcomingTimes,
    next_connection,
    next_connections,
)

pytestmark = pytest.mark.usefixtures("no_task_left_behind")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def every(interval_min: int, count: int, start_s: int = 0) -> Schedule:
    return Schedule(line=None, id=1, type=ScheduleType.EVERYDAY, start_s=start_s,
                    interval_min=interval_min, count=count)


def test_next_connection_in_the_zone_across_spring_dst() -> None:
    # docs/formats.md §5: `7|everyday|01:30:00|30|3` on 2021-03-28 gives 01:30, 03:00, 03:30 local
    # (00:30, 01:00, 01:30 UTC).
    entry = Schedule(line=None, id=7, type=ScheduleType.EVERYDAY, start_s=5400,
                     interval_min=30, count=3)
    got = []
    t = at("2021-03-28T00:00:00")
    for _ in range(4):
        nxt = next_connection([entry], "Europe/Paris", t)
        assert nxt is not None
        got.append(nxt)
        t = nxt
    assert got == [at("2021-03-28T00:30:00"), at("2021-03-28T01:00:00"),
                   at("2021-03-28T01:30:00"), at("2021-03-28T23:30:00")]


def test_next_connection_autumn_ambiguous_time_is_its_first_occurrence() -> None:
    entry = Schedule(line=None, id=8, type=ScheduleType.EVERYDAY, start_s=9000,
                     interval_min=1440, count=1)
    assert next_connection([entry], "Europe/Paris", at("2021-10-30T23:00:00")) == \
        at("2021-10-31T00:30:00")


def test_next_connection_is_strictly_after() -> None:
    assert next_connection([every(1, 1440)], "UTC", at("2021-01-01T10:00:00")) == \
        at("2021-01-01T10:01:00")
    assert next_connection([], "UTC", at("2021-01-01T10:00:00")) is None


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris"])
def test_upcoming_times_kept_between_sessions_answer_as_next_connection(zone: str) -> None:
    # The scheduler keeps two days of instants between sessions; asked at any time, moving on,
    # stepping back or jumping days ahead (across both 2021 DST changes), it answers what
    # next_connection computes afresh.
    schedules = [every(1, 1440), every(30, 3, start_s=5400),
                 Schedule(line=None, id=2, type=ScheduleType.FIRST, start_s=3600)]
    upcoming = _UpcomingTimes(schedules, zone)
    t = at("2021-03-27T22:00:00")
    steps = [timedelta(seconds=s) for s in (1, 59, 60, 61, 3599, -7200, 0, 86_400 * 3, 17)]
    for k in range(120):
        t += steps[k % len(steps)] if k % 40 else timedelta(days=100)
        assert upcoming.after(t) == next_connection(schedules, zone, t), t
    assert _UpcomingTimes([], zone).after(t) is None


class Sessions:
    """Records (trigger, wall time) and answers from a script of results."""

    def __init__(self, clock: ManualClock, results: list[SessionResult] | None = None) -> None:
        self.clock = clock
        self.calls: list[tuple[Trigger, int]] = []
        self.results = results or []
        self.hold: asyncio.Event | None = None

    async def __call__(self, trigger: Trigger) -> SessionResult:
        self.calls.append((trigger, self.clock.wall_ns() // NS_PER_S))
        if self.hold is not None:
            await self.hold.wait()
        return self.results.pop(0) if self.results else SessionResult(ok=True)


T0 = int(at("2021-06-01T10:00:30").timestamp())


async def running(scheduler: SlotScheduler) -> asyncio.Task[None]:
    return asyncio.create_task(scheduler.run(), name="scheduler")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_schedule_every_minute_on_whole_minutes() -> None:
    clock = ManualClock(T0 * NS_PER_S)
    sessions = Sessions(clock)
    task = await running(SlotScheduler(1, sessions, schedules=[every(1, 1440)],
                                       time_zone="Europe/Paris", clock=clock))
    await clock.advance(150)
    await stop(task)
    assert sessions.calls == [(Trigger.SCHEDULE, T0 + 30), (Trigger.SCHEDULE, T0 + 90),
                              (Trigger.SCHEDULE, T0 + 150)]


async def test_alarm_sessions_at_most_one_per_60_s() -> None:
    clock = ManualClock(T0 * NS_PER_S)
    sessions = Sessions(clock)
    scheduler = SlotScheduler(1, sessions, schedules=[], time_zone="UTC", clock=clock)
    task = await running(scheduler)
    await clock.advance(1)
    scheduler.request_alarm()
    await clock.advance(10)
    for _ in range(3):          # three more alarms inside the 60 s share one session
        scheduler.request_alarm()
        await clock.advance(5)
    await clock.advance(70)
    scheduler.request_alarm()   # 35 s after the last alarm session: at its 60 s
    await clock.advance(30)
    await clock.advance(100)
    scheduler.request_alarm()   # more than 60 s after it: at once
    await clock.advance(1)
    await stop(task)
    assert sessions.calls == [(Trigger.ALARM, T0 + 1), (Trigger.ALARM, T0 + 61),
                              (Trigger.ALARM, T0 + 121), (Trigger.ALARM, T0 + 226)]


async def test_a_request_during_a_session_runs_one_more_after_it() -> None:
    clock = ManualClock(T0 * NS_PER_S)
    sessions = Sessions(clock)
    sessions.hold = asyncio.Event()
    scheduler = SlotScheduler(2, sessions, schedules=[], time_zone="UTC", clock=clock)
    task = await running(scheduler)
    scheduler.request(Trigger.STARTUP)
    await clock.advance(1)
    scheduler.request(Trigger.COMMAND)
    scheduler.request(Trigger.COMMAND)          # the same trigger twice while waiting: once
    await clock.advance(1)
    assert [c[0] for c in sessions.calls] == [Trigger.STARTUP]
    sessions.hold.set()
    await clock.advance(1)
    await stop(task)
    assert [c[0] for c in sessions.calls] == [Trigger.STARTUP, Trigger.COMMAND]


async def test_retries_after_5_10_20_40_min_then_hourly_and_reset_on_success() -> None:
    clock = ManualClock(T0 * NS_PER_S)
    fail = SessionResult(ok=False, reason="refused", retriable=True)
    sessions = Sessions(clock, [fail] * 5 + [SessionResult(ok=True)])
    scheduler = SlotScheduler(1, sessions, schedules=[], time_zone="UTC", clock=clock)
    task = await running(scheduler)
    scheduler.request(Trigger.COMMAND)
    for _ in range(200):
        await clock.advance(60)
    await stop(task)
    offsets = [t - T0 for _, t in sessions.calls]
    assert [c[0] for c in sessions.calls] == [Trigger.COMMAND] + [Trigger.RETRY] * 5
    assert offsets == [0, 300, 900, 2100, 4500, 8100]
    assert scheduler.failures == 0


async def test_non_retriable_failure_waits_an_hour() -> None:
    clock = ManualClock(T0 * NS_PER_S)
    sessions = Sessions(clock, [SessionResult(ok=False, reason="530 login", retriable=False)])
    scheduler = SlotScheduler(1, sessions, schedules=[], time_zone="UTC", clock=clock)
    task = await running(scheduler)
    scheduler.request(Trigger.COMMAND)
    for _ in range(61):
        await clock.advance(60)
    await stop(task)
    assert [t - T0 for _, t in sessions.calls] == [0, 3600]


def test_next_connections_look_further_until_enough_are_found() -> None:
    after = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    monthly = [Schedule(line=1, id=1, type=ScheduleType.FIRST, start_s=3600)]
    times = next_connections(monthly, "Europe/Paris", after, 10)
    assert len(times) == 10
    local = [t.astimezone(ZoneInfo("Europe/Paris")) for t in times]
    assert [(t.month, t.day, t.hour) for t in local] == [(m, 1, 1) for m in range(4, 13)] + [
        (1, 1, 1)]
    # The first of them is what the scheduler waits for, three weeks ahead.
    assert next_connection(monthly, "Europe/Paris", after) == times[0]
    hourly = [Schedule(line=1, id=1, start_s=0, interval_min=60, count=24)]
    times = next_connections(hourly, "UTC", after, 3)
    assert times == [after + timedelta(hours=k) for k in (1, 2, 3)]
    assert times[0] == next_connection(hourly, "UTC", after)
    assert next_connections([], "UTC", after, 3) == []


@pytest.mark.parametrize(("entry", "start", "due"), [
    # A Tuesday: the next Monday is six days on.
    (Schedule(line=None, id=3, type=ScheduleType.MONDAY, start_s=3 * 3600),
     "2021-06-01T10:00:30", "2021-06-07T01:00:00"),
    # Four days before the first of the month.
    (Schedule(line=None, id=4, type=ScheduleType.FIRST, start_s=3600),
     "2021-06-27T10:00:30", "2021-06-30T23:00:00"),
])
async def test_weekly_and_monthly_schedules_run_days_ahead(entry: Schedule, start: str,
                                                           due: str) -> None:
    start_s, due_s = int(at(start).timestamp()), int(at(due).timestamp())
    clock = ManualClock(start_s * NS_PER_S)
    sessions = Sessions(clock)
    task = await running(SlotScheduler(1, sessions, schedules=[entry],
                                       time_zone="Europe/Paris", clock=clock))
    await clock.advance(due_s - start_s + 3600)
    await stop(task)
    assert sessions.calls == [(Trigger.SCHEDULE, due_s)]


@pytest.mark.parametrize("back_s", [30, 3600, 86_400])
async def test_a_wall_clock_stepped_back_keeps_the_schedule_of_the_new_time(back_s: int) -> None:
    # Every 10 min. At 10:05:30 the wall clock is stepped back (NTP correcting a clock that ran
    # ahead, docs/behaviour.md §11): the connections follow the new wall time, at 10:10 of the
    # corrected clock, not only once it has caught up with the 10:10 planned before the step.
    clock = ManualClock(T0 * NS_PER_S)
    sessions = Sessions(clock)
    task = await running(SlotScheduler(1, sessions, schedules=[every(10, 144)],
                                       time_zone="Europe/Paris", clock=clock))
    await clock.advance(300)
    clock.step_wall(-back_s * NS_PER_S)
    corrected = T0 + 300 - back_s
    await clock.advance(1_200)
    await stop(task)
    firsts = [(corrected // 600 + k) * 600 for k in (1, 2)]
    assert sessions.calls == [(Trigger.SCHEDULE, t) for t in firsts]


async def test_a_wall_clock_stepped_forward_by_decades_runs_one_session_then_the_schedule(
        ) -> None:
    # A box without a battery-backed clock starts in 1970; NTP then sets the date: the
    # connection missed meanwhile runs once, within the 60 s a wait lasts at most, then the
    # schedule goes on.
    clock = ManualClock(30 * NS_PER_S)
    sessions = Sessions(clock)
    task = await running(SlotScheduler(1, sessions, schedules=[every(10, 144)],
                                       time_zone="Europe/Paris", clock=clock))
    await clock.advance(100)
    clock.step_wall((T0 - 130) * NS_PER_S)
    await clock.advance(600)
    await stop(task)
    assert [c[0] for c in sessions.calls] == [Trigger.SCHEDULE, Trigger.SCHEDULE]
    assert T0 <= sessions.calls[0][1] <= T0 + 60 and sessions.calls[1][1] == T0 + 570


@pytest.mark.parametrize("back_s", [0.5, 2, 2.5, 5, 30, 59])
async def test_a_wall_clock_stepped_back_during_a_connection_does_not_run_it_again(
        back_s: float) -> None:
    # Every minute, on whole minutes. NTP corrects the clock by a few seconds while the
    # connection of 10:01:00 runs: the corrected clock reads 10:01:00 again a few seconds later,
    # and that connection was just run; the next one is 10:02:00 of the corrected clock.
    clock = ManualClock(T0 * NS_PER_S)
    sessions = Sessions(clock)
    sessions.hold = asyncio.Event()
    task = await running(SlotScheduler(1, sessions, schedules=[every(1, 1440)],
                                       time_zone="UTC", clock=clock))
    await clock.advance(30.2)
    assert sessions.calls == [(Trigger.SCHEDULE, T0 + 30)]
    clock.step_wall(round(-back_s * NS_PER_S))
    sessions.hold.set()
    await clock.advance(200)
    await stop(task)
    starts = [t for _, t in sessions.calls]
    assert starts == [T0 + 30, T0 + 90, T0 + 150, T0 + 210][:len(starts)]
    assert len(starts) >= 3


async def test_a_clock_a_day_fast_corrected_during_a_connection_runs_it_again_a_day_later(
        ) -> None:
    # Once a day at 10:01. The connection ran by a clock a day fast, which NTP then corrects:
    # the connection of the corrected 10:01 is the next one, a day later, not two.
    clock = ManualClock(T0 * NS_PER_S)
    sessions = Sessions(clock)
    sessions.hold = asyncio.Event()
    task = await running(SlotScheduler(1, sessions, schedules=[every(1440, 1, start_s=36_060)],
                                       time_zone="UTC", clock=clock))
    await clock.advance(31)
    clock.step_wall(-86_400 * NS_PER_S)
    sessions.hold.set()
    await clock.advance(86_400)
    await stop(task)
    assert sessions.calls == [(Trigger.SCHEDULE, T0 + 30), (Trigger.SCHEDULE, T0 + 30)]
