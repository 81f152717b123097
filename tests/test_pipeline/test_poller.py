"""Poll loop: slots, order, overruns, writes, sinks, clock steps (docs/behaviour.md §2.1, §11)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from itertools import pairwise

import pyarrow as pa
import pytest
from _recorder_defs import DAY0_NS, NS, ScriptedDriver, definition, device, good, variable

import pipeline.poller as poller_module
from config.errors import SunpmError
from config.model import Action, Device, Quality
from pipeline.clock import ManualClock, SystemClock
from pipeline.drivers._base import DeviceError, Reading, ReadPlan
from pipeline.poller import (
    RECORD_OVERHEAD_BYTES,
    ClockStepped,
    Event,
    PolledDevice,
    Poller,
    PollLink,
    WriteSuperseded,
    link_name,
    next_slot_ns,
)
from pipeline.recorder import ParameterRead, Recorder, ValueChanged

DEFN = definition([variable(1, Action.INSTANT), variable(2, Action.ALARM_ON_CHANGE),
                   variable(3, Action.PARAMETER)])
PLAN = ReadPlan(definition=DEFN, variables=(DEFN.variables[0], DEFN.variables[1]))
PARAM_PLAN = ReadPlan(definition=DEFN, variables=(DEFN.variables[2],))


def counting(dev: Device, plan: ReadPlan, n: int) -> Mapping[int, Reading]:
    return {v.index: good(n) for v in plan.variables}


def polled(index: str, acq: int = 60, *, parameters: bool = True) -> PolledDevice:
    return PolledDevice(device=device(index, acq_period_s=acq), definition=DEFN, plan=PLAN,
                        parameter_plan=PARAM_PLAN if parameters else None)


class Sinks:
    def __init__(self) -> None:
        self.records: list[tuple[str, pa.RecordBatch]] = []
        self.events: list[Event] = []
        self.gate: asyncio.Event | None = None

    async def record(self, dev: str, batch: pa.RecordBatch) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.records.append((dev, batch))

    async def event(self, event: Event) -> None:
        self.events.append(event)

    def ends(self, dev: str) -> list[int]:
        return [b.column("ts").cast(pa.int64())[0].as_py() for d, b in self.records if d == dev]


pytestmark = pytest.mark.usefixtures("no_task_left_behind")


@asynccontextmanager
async def running(poller: Poller) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(poller.run(), name="test-poller")
    try:
        yield task
    finally:
        poller.stop()
        clock = poller.clock
        assert isinstance(clock, ManualClock)
        for _ in range(100):   # let the cycles in progress finish
            if task.done():
                break
            await clock.advance(1)
        async with asyncio.timeout(5):
            await task


def make(clock: ManualClock, links: Sequence[tuple[str, ScriptedDriver, Sequence[PolledDevice]]],
         sinks: Sinks, *, period: int = 10, recorder: Recorder | None = None) -> Poller:
    return Poller([PollLink(name=n, driver=d, devices=tuple(p)) for n, d, p in links],
                  recorder=recorder or Recorder(), record_sink=sinks.record,
                  event_sink=sinks.event, daq_poll_period_s=period, clock=clock)


def test_slots_are_multiples_from_midnight_and_midnight_itself() -> None:
    assert next_slot_ns(DAY0_NS, 10) == DAY0_NS + 10 * NS
    assert next_slot_ns(DAY0_NS + 5 * NS, 10) == DAY0_NS + 10 * NS
    assert next_slot_ns(DAY0_NS + 86395 * NS, 7) == DAY0_NS + 86400 * NS  # 86400 % 7 != 0
    assert next_slot_ns(DAY0_NS + 86400 * NS, 7) == DAY0_NS + 86407 * NS


def test_link_names_group_devices_by_connection_and_bus() -> None:
    assert link_name(device("1", interface="192.168.1.5")) == "192.168.1.5:502"
    assert link_name(device("2", interface="192.168.1.5:502")) == "192.168.1.5:502"
    assert link_name(device("3", interface="192.168.1.5:1502")) == "192.168.1.5:1502"
    assert link_name(device("4", interface="serial2")) == "SERIAL2"
    assert link_name(device("IO", interface="")) == "IO"
    assert link_name(device("TIC1", interface="")) == "TIC1"


async def test_devices_are_polled_at_slots_in_daq_index_order_links_concurrently() -> None:
    clock = ManualClock(wall_ns=DAY0_NS + 3 * NS)
    bus, tcp = ScriptedDriver(clock, counting, read_s=0.5), ScriptedDriver(clock, counting, read_s=0.5)
    sinks = Sinks()
    poller = make(clock, [("SERIAL1", bus, [polled("10", parameters=False),
                                            polled("2", parameters=False),
                                            polled("1", acq=5, parameters=False)]),
                          ("127.0.0.1:502", tcp, [polled("3", parameters=False)])], sinks)
    mono0 = clock.monotonic_ns()
    async with running(poller):
        await clock.advance(20)
    # the bus: at 5 s only device 1 (P = 5), at 10 s all three in ascending index order
    reads = [(d, (t - mono0) / NS + 3) for op, d, t in bus.log if op == "read"]
    assert [d for d, _ in reads] == ["1", "1", "2", "10", "1", "1", "2", "10"]
    assert [round(t, 3) for _, t in reads][:4] == [5.0, 10.0, 10.5, 11.0]
    # the TCP link ran at the same slot, not after the bus
    tcp_reads = [round((t - mono0) / NS + 3, 3) for op, _, t in tcp.log]
    assert tcp_reads == [10.0, 20.0]


async def test_records_reach_the_sink_at_period_ends_and_events_the_event_sink() -> None:
    clock = ManualClock(wall_ns=DAY0_NS + 1 * NS)
    driver = ScriptedDriver(clock, counting)
    sinks = Sinks()
    poller = make(clock, [("SERIAL1", driver, [polled("1", acq=60)])], sinks)
    async with running(poller):
        await clock.advance(185)
    assert sinks.ends("1") == [DAY0_NS + k * 60 * NS for k in (1, 2, 3)]
    (_, batch) = sinks.records[0]
    # polls at 10..50 s belong to the first period; the value is the last good one
    table = pa.Table.from_batches([batch]).to_pylist()
    # (read 1 was the parameter read after the first good poll)
    assert {r["var"]: r["value"] for r in table} == {1: 5.0, 2: 5.0}
    params = [e for e in sinks.events if isinstance(e, ParameterRead)]
    assert len(params) == 1 and params[0].values == {3: "1"}
    changes = [e for e in sinks.events if isinstance(e, ValueChanged)]
    assert len(changes) == 17 and all(c.var == 2 for c in changes)
    counters = poller.counters()
    assert counters.records_sent == 3 and counters.events_sent == 18
    latest = poller.latest("1")
    assert latest is not None and latest.values[1].value == driver.reads - 1
    assert changes[-1].new_text == str(driver.reads - 1)


async def test_a_failing_event_sink_costs_its_events_not_the_polling(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(wall_ns=DAY0_NS + 1 * NS)
    driver = ScriptedDriver(clock, counting)
    sinks = Sinks()
    failures = 0

    async def event(e: Event) -> None:
        nonlocal failures
        if isinstance(e, ValueChanged) and e.new_text in ("3", "4", "5"):
            failures += 1
            raise SunpmError("journal append failed: No space left on device")
        if isinstance(e, ValueChanged) and e.new_text == "9":
            raise RuntimeError("a bug in a hook")
        sinks.events.append(e)

    poller = Poller([PollLink(name="SERIAL1", driver=driver, devices=(polled("1", acq=60),))],
                    recorder=Recorder(), record_sink=sinks.record, event_sink=event,
                    daq_poll_period_s=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="sunpm.store"):
        async with running(poller) as task:
            await clock.advance(185)
            assert not task.done()
    assert failures == 3
    counters = poller.counters()
    assert counters.events_failed == 4 and counters.events_sent == 18 - 4
    assert counters.records_sent == 3       # polling and recording went on
    lost = [r for r in caplog.records if r.getMessage().startswith("Event")]
    assert lost[0].getMessage() == (
        "Event lost. kind=ValueChanged reason=journal append failed: No space left on device")
    assert lost[0].exc_info is not None and len(lost) == 3   # first, then at counts 2, 4, 8…
    assert "count=2" in lost[1].getMessage()
    assert lost[2].getMessage() == "Events lost. count=4 kind=ValueChanged reason=a bug in a hook"


async def test_overrun_skips_cycles_and_warns_at_most_hourly(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(wall_ns=DAY0_NS + 1 * NS)
    driver = ScriptedDriver(clock, counting, read_s=7)  # two devices: 14 s per 10 s cycle
    sinks = Sinks()
    poller = make(clock, [("SERIAL2", driver, [polled("1", parameters=False),
                                                polled("2", parameters=False)])], sinks)
    with caplog.at_level(logging.WARNING, logger="sunpm.modbus"):
        async with running(poller):
            await clock.advance(2 * 3600)
    warnings = [r.getMessage() for r in caplog.records if "poll cycle took" in r.getMessage()]
    assert warnings[0] == ("SERIAL2: poll cycle took 14.0 s, longer than DAQ_PollPeriod 10 s; "
                           "1 cycles skipped in the last hour")
    assert len(warnings) == 2   # the first overrun, then one an hour later
    # each 14 s cycle makes the next slot (10 s later) pass: one cycle in two runs
    assert warnings[1].endswith("180 cycles skipped in the last hour")
    (link,) = poller.counters().links
    assert link.cycles == 360 and link.skipped in (359, 360)
    assert poller.counters().overruns_by_device == {"1": link.skipped, "2": link.skipped}


async def test_writes_go_ahead_of_polls_and_a_newer_write_replaces_a_queued_one() -> None:
    clock = ManualClock(wall_ns=DAY0_NS + 1 * NS)
    driver = ScriptedDriver(clock, counting, read_s=1)
    sinks = Sinks()
    poller = make(clock, [("SERIAL1", driver, [polled("1", parameters=False),
                                               polled("2", parameters=False)])], sinks)
    var = DEFN.variables[0]
    mono0 = clock.monotonic_ns()
    async with running(poller):
        await clock.advance(8.5)                     # wall 9.5 s, the link is idle
        first = asyncio.create_task(poller.write("2", var, 5))
        await clock.advance(0.2)
        # the link was idle: the write started at once, not at the next slot
        assert driver.log[-1][:2] == ("write", "2")
        await clock.advance(0.9)                     # 10.6 s: device 1 is being read
        queued = asyncio.create_task(poller.write("2", var, 6))
        newer = asyncio.create_task(poller.write("2", var, 7))
        await clock.advance(5)
        await first
        with pytest.raises(WriteSuperseded):
            await queued
        await newer
    assert driver.writes == [("2", 1, 5), ("2", 1, 7)]
    ops = [(op, d, round((t - mono0) / NS + 1, 3)) for op, d, t in driver.log]
    # the write queued during device 1's read went before device 2's read
    assert ops[:4] == [("write", "2", 9.5), ("read", "1", 10.5), ("write", "2", 11.5),
                       ("read", "2", 12.5)]


async def test_full_record_queue_slows_polling_instead_of_growing_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 32 records' overhead: the bound in bytes holds fewer than 32 of these 2-variable records
    monkeypatch.setattr(poller_module, "RECORDS_IN_FLIGHT_BYTES", 32 * RECORD_OVERHEAD_BYTES)
    clock = ManualClock(wall_ns=DAY0_NS + 1 * NS)
    driver = ScriptedDriver(clock, counting, read_s=0.001)
    sinks = Sinks()
    sinks.gate = asyncio.Event()   # the store does not acknowledge anything
    poller = make(clock, [("SERIAL1", driver, [polled("1", acq=1)])], sinks, period=1)
    async with running(poller):
        await clock.advance(400)
        reads_blocked = driver.reads
        await clock.advance(100)
        assert driver.reads == reads_blocked      # the link waits to hand over its record
        assert reads_blocked < 400 - 100          # 64 queued + < 32 in flight, then it stopped
        sinks.gate.set()
        await clock.advance(10)
    assert driver.reads > reads_blocked
    ends = sinks.ends("1")
    assert len(ends) >= reads_blocked - 1 and ends[:5] == [DAY0_NS + k * NS for k in range(2, 7)]


async def test_wall_clock_steps_are_logged_and_polling_stays_on_the_monotonic_clock(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(wall_ns=DAY0_NS + 1 * NS)
    driver = ScriptedDriver(clock, counting)
    sinks = Sinks()
    other = ScriptedDriver(clock, counting)
    poller = make(clock, [("SERIAL1", driver, [polled("1", acq=60, parameters=False)]),
                          ("127.0.0.1:502", other, [polled("2", acq=60, parameters=False)])],
                  sinks)
    with caplog.at_level(logging.WARNING, logger="sunpm.clock"):
        async with running(poller):
            await clock.advance(125)
            clock.step_wall(-30 * NS)
            await clock.advance(60)
            clock.step_wall(3600 * NS)
            await clock.advance(60)
            clock.step_wall(-3 * 3600 * NS)
            await clock.advance(60)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["wall clock stepped by -30 s", "wall clock stepped by +3600 s",
                        "wall clock reset by -10800 s"]
    steps = [e for e in sinks.events if isinstance(e, ClockStepped)]
    assert [(s.step_ns // NS, s.reset) for s in steps] == [(-30, False), (3600, False), (-10800, True)]
    # both links re-aligned, neither took the jumps for overruns
    assert [(k.link, k.skipped) for k in poller.counters().links] == [
        ("SERIAL1", 0), ("127.0.0.1:502", 0)]
    assert [t for _, _, t in other.log] == [t for _, _, t in driver.log]
    reads = [t for op, _, t in driver.log]
    # steps of whole tens of seconds keep the slots' phase: polls stay 10 s apart on the
    # monotonic clock, no stall after a step back, no burst after a step forward
    assert {round((b - a) / NS, 3) for a, b in pairwise(reads)} == {10.0}
    ends = [(e - DAY0_NS) // NS for e in sinks.ends("1")]
    drops = [i for i, (a, b) in enumerate(pairwise(ends)) if b <= a]
    assert len(drops) == 1                       # only the reset sends record times back
    assert ends[: drops[0] + 1] == sorted(set(ends[: drops[0] + 1]))
    assert ends[:3] == [60, 120, 180]            # [60, 120) was not recorded twice
    assert ends[drops[0] + 1] < ends[drops[0]] - 3600


class FailingPort(ScriptedDriver):
    async def read(self, dev: Device, plan: ReadPlan):  # type: ignore[no-untyped-def]
        self.reads += 1
        raise DeviceError("SERIAL3: /dev/ttyUSB7: no such device")


async def test_a_port_that_fails_gives_quality_5_records_not_a_crash() -> None:
    clock = ManualClock(wall_ns=DAY0_NS + 1 * NS)
    driver = FailingPort(clock, counting)
    sinks = Sinks()
    poller = make(clock, [("SERIAL3", driver, [polled("1", acq=60)])], sinks)
    async with running(poller):
        await clock.advance(65)
    (_, batch) = sinks.records[0]
    assert set(batch.column("quality").to_pylist()) == {Quality.DISCONNECTED}
    assert poller.counters().links[0].port_errors == 6


async def test_records_refused_by_the_sink_are_counted_and_polling_goes_on() -> None:
    clock = ManualClock(wall_ns=DAY0_NS + 1 * NS)
    driver = ScriptedDriver(clock, counting)

    class Full(SunpmError):
        pass

    class Dropped:
        dropped = True

    answers = 0

    async def refuse(dev: str, batch: pa.RecordBatch) -> Dropped:
        nonlocal answers
        answers += 1
        if answers % 2:
            raise Full("device 1 over its quota")
        return Dropped()   # what Log.append_records answers when its quota drops a record

    poller = Poller([PollLink(name="SERIAL1", driver=driver,
                              devices=(polled("1", acq=10, parameters=False),))],
                    recorder=Recorder(), record_sink=refuse, clock=clock)
    async with running(poller):
        await clock.advance(55)
    counters = poller.counters()
    assert counters.records_dropped == 4 and counters.dropped_by_device == {"1": 4}
    assert driver.reads == 5


async def test_request_parameters_reads_them_after_the_next_poll() -> None:
    clock = ManualClock(wall_ns=DAY0_NS + 1 * NS)
    driver = ScriptedDriver(clock, counting)
    sinks = Sinks()
    poller = make(clock, [("SERIAL1", driver, [polled("1")])], sinks)
    async with running(poller):
        await clock.advance(25)
        poller.request_parameters("1")
        await clock.advance(10)
    params = [e for e in sinks.events if isinstance(e, ParameterRead)]
    assert [p.ts_ns // NS - DAY0_NS // NS for p in params] == [10, 30]
    with pytest.raises(SunpmError, match="device 9"):
        poller.request_parameters("9")


async def test_replacing_a_device_applies_its_new_definition_at_once() -> None:
    clock = ManualClock(wall_ns=DAY0_NS + 1 * NS)
    driver = ScriptedDriver(clock, counting)
    sinks = Sinks()
    poller = make(clock, [("SERIAL1", driver, [polled("1")])], sinks)
    other = definition([variable(1, Action.INSTANT), variable(5, Action.INSTANT)],
                       file_name="inv_v2.csv")
    async with running(poller):
        await clock.advance(15)
        poller.replace_device(PolledDevice(
            device=device("1", acq_period_s=60), definition=other,
            plan=ReadPlan(definition=other, variables=other.variables)))
        await clock.advance(50)
    (_, batch) = sinks.records[0]
    assert batch.column("var").to_pylist() == [1, 5]
    assert batch.column("def").to_pylist() == [other.snapshot_id] * 2


async def test_slow_drift_is_absorbed_so_polls_stay_on_wall_clock_slots(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(wall_ns=DAY0_NS + 1 * NS)
    answered: list[int] = []

    def answer(dev: Device, plan: ReadPlan, n: int) -> Mapping[int, Reading]:
        answered.append(clock.wall_ns() - DAY0_NS)
        return counting(dev, plan, n)

    driver = ScriptedDriver(clock, answer)
    poller = make(clock, [("SERIAL1", driver, [polled("1", parameters=False)])], Sinks())
    with caplog.at_level(logging.WARNING, logger="sunpm.clock"):
        async with running(poller):
            for _ in range(8):          # 4 s of drift in 0.5 s slews, one per slot
                await clock.advance(7)
                clock.step_wall(NS // 2)
                await clock.advance(3)
    assert not caplog.records
    # 4 s of drift never accumulate: an answer lands after its wall-clock slot by the read time
    # (0.01 s) plus at most the slews since the deadline was set (one or two of 0.5 s)
    assert all(0.01 * NS <= t % (10 * NS) <= 1.02 * NS for t in answered), answered
    assert len(answered) == 8


async def test_system_clock_waits_until_the_deadline_or_the_wake_event() -> None:
    clock = SystemClock()
    wake = asyncio.Event()
    start = clock.monotonic_ns()
    assert await clock.wait_until(start + NS // 20, wake) is False
    assert clock.monotonic_ns() - start >= NS // 20
    asyncio.get_running_loop().call_later(0.02, wake.set)
    start = clock.monotonic_ns()
    assert await clock.wait_until(start + 5 * NS, wake) is True
    assert clock.monotonic_ns() - start < NS


def test_a_device_on_two_links_is_refused() -> None:
    clock = ManualClock(wall_ns=DAY0_NS)
    driver = ScriptedDriver(clock, counting)
    with pytest.raises(SunpmError, match="device 1: on two links, SERIAL1 and SERIAL2"):
        Poller([PollLink(name="SERIAL1", driver=driver, devices=(polled("1"),)),
                PollLink(name="SERIAL2", driver=driver, devices=(polled("1"),))],
               recorder=Recorder(), record_sink=Sinks().record, clock=clock)


async def test_a_write_the_stop_leaves_unsent_fails_and_a_later_one_is_refused() -> None:
    """A write queued while the last device of the last cycle is read, or after `stop` (a
    configuration reload, the service's stop), is answered at once with an error: no poll
    loop will ever send it, and a `writeVariable` must not wait its 600 s for nothing."""
    clock = ManualClock(wall_ns=DAY0_NS + 1 * NS)
    driver = ScriptedDriver(clock, counting, read_s=1)
    sinks = Sinks()
    poller = make(clock, [("SERIAL1", driver, [polled("1", parameters=False),
                                               polled("2", parameters=False)])], sinks)
    var = DEFN.variables[0]
    async with running(poller):
        await clock.advance(10.5)                    # 11.5 s: device 2 is being read
        assert driver.log[-1][:2] == ("read", "2")
        left = asyncio.create_task(poller.write("1", var, 5))
        await clock.advance(0.1)
        poller.stop()
        await clock.advance(2)
        async with asyncio.timeout(5):
            with pytest.raises(DeviceError, match=r"^writeVariable: 1: not written: polling "
                                                  r"stopped \(configuration reload or stop\)$"):
                await left
        with pytest.raises(DeviceError, match=r"^writeVariable: 2: not written: polling "
                                              r"stopped"):
            await poller.write("2", var, 6)
    assert driver.writes == []
