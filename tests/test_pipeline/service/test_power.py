"""Power ON / Power OFF on a manual clock over a real store: Power ON after 60 s of running,
heartbeats every 10 s, Power OFF at a clean stop, and after an unclean stop a Power OFF dated at
the last heartbeat when the outage lasted at least 10 s."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from _service_plant import running_gateway
from waiting import wait_until

from pipeline.clock import NS_PER_S, ManualClock
from pipeline.service.alarms import Alarms, PowerWatch
from store import Log, StoreOptions

pytestmark = pytest.mark.usefixtures("no_task_left_behind")

T0 = 1_622_541_600 * NS_PER_S
OPTIONS = StoreOptions(flush_s=0.01)


def journal(log: Log, kind: str) -> list[tuple[int, dict[str, object]]]:
    table = log.journal(kinds=[kind]).sort_by("seq")
    return [(ts, json.loads(body)) for ts, body in zip(
        table.column("ts").cast("int64").to_pylist(), table.column("body").to_pylist(),
        strict=True)]


def power_alarms(log: Log) -> list[tuple[int, str]]:
    return [(ts, str(body["alarm"])) for ts, body in journal(log, "alarm")
            if str(body["alarm"]).startswith("Power")]


async def until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    await wait_until(check, timeout_s)


class Run:
    """One run of the gateway's power watch on `clock` (what `Gateway.run` does)."""

    def __init__(self, log: Log, clock: ManualClock) -> None:
        self.alarm_sessions = 0
        self.alarms = Alarms(log, clock, self._asked)
        self.watch = PowerWatch(log, self.alarms, clock)
        self.tasks: list[asyncio.Task[None]] = []

    def _asked(self) -> None:
        self.alarm_sessions += 1

    async def start(self) -> int | None:
        dated = await self.watch.after_start()
        self.tasks = [asyncio.create_task(self.watch.heartbeats(), name="heartbeat"),
                      asyncio.create_task(self.watch.power_on(), name="power-on")]
        return dated

    async def halt(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_power_on_after_60_s_and_clean_stop(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    async with await Log.open(tmp_path, OPTIONS) as log:
        run = Run(log, clock)
        assert await run.start() is None            # a first start: nothing to say
        await clock.advance(59)
        await log.commit()
        assert power_alarms(log) == []
        await clock.advance(1)
        await until(lambda: run.watch.power_on_raised.is_set())
        await log.commit()
        assert power_alarms(log) == [(T0 + 60 * NS_PER_S, "Power ON")]
        assert run.alarm_sessions == 1
        await clock.advance(5)
        await run.halt()
        await run.watch.clean_stop()
        beats = [ts for ts, _ in journal(log, "heartbeat")]
        assert beats == [T0 + k * 10 * NS_PER_S for k in range(7)]
    async with await Log.open(tmp_path, OPTIONS) as log:
        clock = ManualClock(T0 + 300 * NS_PER_S)
        run = Run(log, clock)
        assert await run.start() is None             # stopped cleanly: no inferred Power OFF
        await run.halt()
        assert power_alarms(log) == [(T0 + 60 * NS_PER_S, "Power ON"),
                                     (T0 + 65 * NS_PER_S, "Power OFF")]


async def test_crash_loop_shorter_than_60_s_raises_no_power_on(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    async with await Log.open(tmp_path, OPTIONS) as log:
        run = Run(log, clock)
        await run.start()
        await clock.advance(45)
        await run.halt()                             # killed: no clean stop
        await log.commit()
        assert power_alarms(log) == []


async def test_unclean_stop_power_off_dated_at_last_heartbeat(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    async with await Log.open(tmp_path, OPTIONS) as log:
        run = Run(log, clock)
        await run.start()
        await clock.advance(25)                      # heartbeats at 0, 10, 20
        await run.halt()
        await log.commit()
    last_beat = T0 + 20 * NS_PER_S
    # Back 9.9 s after the last heartbeat: an outage under 10 s says nothing.
    async with await Log.open(tmp_path, OPTIONS) as log:
        clock = ManualClock(last_beat + int(9.9 * NS_PER_S))
        run = Run(log, clock)
        assert await run.start() is None
        await clock.advance(1)
        await run.halt()
        await log.commit()
        assert power_alarms(log) == []
        last_beat = max(ts for ts, _ in journal(log, "heartbeat"))
    assert last_beat == T0 + int(29.9 * NS_PER_S)
    # Back 40 s after it: Power OFF dated at that heartbeat, an alarm session asked for.
    async with await Log.open(tmp_path, OPTIONS) as log:
        clock = ManualClock(last_beat + 40 * NS_PER_S)
        run = Run(log, clock)
        assert await run.start() == last_beat
        assert run.alarm_sessions == 1
        await run.halt()
        await log.commit()
        assert power_alarms(log) == [(last_beat, "Power OFF")]
    # The next start after a clean stop of a run too short for a heartbeat of its own says
    # nothing more: that outage was reported.
    async with await Log.open(tmp_path, OPTIONS) as log:
        clock = ManualClock(last_beat + 100 * NS_PER_S)
        assert await Run(log, clock).watch.after_start() is None
        assert power_alarms(log) == [(last_beat, "Power OFF")]


async def test_a_clean_stop_starts_no_alarm_session(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The stop's Power OFF is journaled (and goes with the next start's first session): a
    server-1 session begun during the stop would only be cut off, with a WARNING each time."""
    caplog.set_level(logging.INFO, logger="sunpm")
    async with running_gateway(tmp_path, inverters=0) as plant:
        scheduler = plant.gateway.schedulers[1]
        plant.stop.set()
        await asyncio.wait_for(asyncio.shield(plant.task), 20)
    assert not scheduler._alarm_pending
    assert not [r.getMessage() for r in caplog.records
                if "session started (alarm)" in r.getMessage()
                or "session interrupted" in r.getMessage()]
    async with await Log.open(tmp_path / "data" / "store", OPTIONS) as log:
        assert [alarm for _, alarm in power_alarms(log)] == ["Power OFF"]


async def _a_run_in_2021(store: Path, *, clean_stop: bool) -> None:
    """A run of 25 s from T0 (heartbeats at 0, 10 and 20 s), ended by a clean stop (its Power
    OFF) or a power cut."""
    clock = ManualClock(T0)
    async with await Log.open(store, OPTIONS) as log:
        run = Run(log, clock)
        await run.start()
        await clock.advance(25)
        await run.halt()
        if clean_stop:
            await run.watch.clean_stop()
        else:
            await log.commit()


async def test_a_power_cut_is_reported_when_the_box_restarts_with_its_clock_in_1970(
        tmp_path: Path) -> None:
    # A box without a battery-backed clock loses power (no clean stop) and starts again in
    # 1970, before NTP sets the date: how long it was off cannot be told, and the Power OFF it
    # owes is raised, dated at the last heartbeat (it read as an outage shorter than 10 s).
    await _a_run_in_2021(tmp_path, clean_stop=False)
    async with await Log.open(tmp_path, OPTIONS) as log:
        run = Run(log, ManualClock(30 * NS_PER_S))
        dated = await run.start()
        await run.halt()
        assert dated == T0 + 20 * NS_PER_S
        await log.commit()
        assert power_alarms(log) == [(T0 + 20 * NS_PER_S, "Power OFF")]


async def test_a_run_in_1970_that_crashed_is_reported_though_an_older_power_off_is_later(
        tmp_path: Path) -> None:
    # A clean stop in 2021 (its Power OFF), then a run started in 1970 that crashes before NTP
    # sets the date: its outage is owed a Power OFF. The 2021 one is later in time but older in
    # the journal, and does not say that run stopped cleanly.
    await _a_run_in_2021(tmp_path, clean_stop=True)
    clock = ManualClock(30 * NS_PER_S)
    async with await Log.open(tmp_path, OPTIONS) as log:
        run = Run(log, clock)
        dated = await run.start()
        await clock.advance(25)                      # heartbeats at 30, 40, 50 s after 1970
        await run.halt()
        assert dated is None
        await log.commit()
    async with await Log.open(tmp_path, OPTIONS) as log:
        run = Run(log, ManualClock(T0 + 3600 * NS_PER_S))
        dated = await run.start()
        await run.halt()
        assert dated == 50 * NS_PER_S
        await log.commit()
        assert power_alarms(log) == [(T0 + 25 * NS_PER_S, "Power OFF"),
                                     (50 * NS_PER_S, "Power OFF")]
