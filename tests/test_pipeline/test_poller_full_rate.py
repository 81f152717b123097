"""The poll loop at full rate: records waiting for a group commit never make polls wait, and a
store that cannot keep up slows polling with a log line that says so."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pytest
from _recorder_defs import DAY0_NS, NS, ScriptedDriver, definition, device, good, variable
from poller_runs import polling, wait_whole_second

import pipeline.poller as poller_module
from config.model import Action, Device
from pipeline.clock import Clock, ManualClock, SystemClock
from pipeline.drivers._base import Reading, ReadPlan
from pipeline.poller import PolledDevice, Poller, PollLink
from pipeline.recorder import Recorder
from store import Log, StoreOptions

VARIABLES = 20
DEFN = definition([variable(i, Action.INSTANT) for i in range(1, VARIABLES + 1)])
PLAN = ReadPlan(definition=DEFN, variables=DEFN.variables)

pytestmark = pytest.mark.usefixtures("no_task_left_behind")


def answer(dev: Device, plan: ReadPlan, n: int) -> Mapping[int, Reading]:
    return {v.index: good(n + v.index) for v in plan.variables}


def plant(clock: Clock, devices: int, *, read_s: float) -> list[PollLink]:
    """One device per TCP endpoint, as a plant of 254 inverters with their own addresses."""
    links = []
    for k in range(1, devices + 1):
        dev = device(str(k), acq_period_s=1, interface=f"10.0.{k // 250}.{k % 250 + 1}")
        links.append(PollLink(name=f"10.0.{k // 250}.{k % 250 + 1}:502",
                              driver=ScriptedDriver(clock, answer, read_s=read_s),
                              devices=(PolledDevice(device=dev, definition=DEFN, plan=PLAN),)))
    return links


class GroupCommit:
    """A record sink acknowledging as the store does: at the first commit tick (every whole
    second of the clock) after the append, never sooner."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.acknowledged: dict[str, int] = {}
        self.open = True
        self.opened = asyncio.Event()

    async def append(self, dev: str, batch: pa.RecordBatch) -> None:
        tick = (self.clock.monotonic_ns() // NS + 1) * NS
        await self.clock.wait_until(tick)
        while not self.open:
            await self.opened.wait()
        self.acknowledged[dev] = self.acknowledged.get(dev, 0) + 1


async def test_a_commit_cycle_of_200_devices_waits_in_flight_without_skipping_a_poll() -> None:
    # 200 devices at 1 s acknowledged once a second: with a fixed number of appends in flight
    # (64 before), polls waited for acknowledgements and most cycles were skipped.
    clock = ManualClock(wall_ns=DAY0_NS + NS // 2)
    sink = GroupCommit(clock)
    poller = Poller(plant(clock, 200, read_s=0.01), recorder=Recorder(),
                    record_sink=sink.append, daq_poll_period_s=1, clock=clock)
    task = asyncio.create_task(poller.run())
    for _ in range(10):
        await clock.advance(1)
    poller.stop()
    for _ in range(5):
        await clock.advance(1)
    async with asyncio.timeout(5):
        await task
    counters = poller.counters()
    assert counters.overruns_by_device == {}
    assert all(link.skipped == 0 and link.cycles == 10 for link in counters.links)
    # each cycle closes the previous second's record (the tenth is open at stop)
    assert sink.acknowledged == {str(k): 9 for k in range(1, 201)}
    assert counters.records_sent == 1800 and counters.records_in_flight == 0
    assert counters.store_waits == 0


async def test_a_store_that_cannot_keep_up_slows_polling_and_says_so(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # A 20-value record weighs about 3 KiB in flight: a bound of 30 KiB holds 10 of 20 devices.
    monkeypatch.setattr(poller_module, "RECORDS_IN_FLIGHT_BYTES", 30 * 1024)
    clock = ManualClock(wall_ns=DAY0_NS + NS // 2)
    sink = GroupCommit(clock)
    sink.open = False                             # the disk hangs
    poller = Poller(plant(clock, 20, read_s=0.01), recorder=Recorder(),
                    record_sink=sink.append, daq_poll_period_s=1, clock=clock)
    with caplog.at_level(logging.INFO, logger="sunpm.store"):
        task = asyncio.create_task(poller.run())
        for _ in range(12):
            await clock.advance(1)
        stalled = poller.counters()
        sink.open = True                          # the disk is back
        sink.opened.set()
        for _ in range(3):
            await clock.advance(1)
        poller.stop()
        for _ in range(30):                       # what waited in the queue drains
            if task.done():
                break
            await clock.advance(1)
        async with asyncio.timeout(5):
            await task
    assert stalled.store_waits >= 1 and stalled.records_sent == 0
    assert 0 < stalled.records_in_flight <= 10
    assert min(link.cycles for link in stalled.links) < 12      # polls did wait
    messages = [r.getMessage() for r in caplog.records]
    behind = [m for m in messages if m.startswith("Store behind:")]
    assert behind and "wait for their commit; polls wait" in behind[0]
    assert any(m.startswith("Store caught up after") for m in messages)
    done = poller.counters()
    assert done.records_in_flight == 0 and done.records_dropped == 0
    assert sum(done.overruns_by_device.values()) > 0     # the slots missed meanwhile, counted
    assert done.records_sent == sum(sink.acknowledged.values()) > stalled.records_in_flight


async def test_254_devices_x_20_values_every_second_all_land_in_a_store_with_default_flush(
        tmp_path: Path) -> None:
    """The issue's plant: every value of every poll recorded with `STORE_FlushSeconds=1`."""
    seconds = 4
    log = await Log.open(tmp_path / "store", StoreOptions())
    assert log.options.flush_s == 1.0
    clock = SystemClock()
    recorder = Recorder()
    links = plant(clock, 254, read_s=0.002)
    poller = Poller(links, recorder=recorder, record_sink=log.append_records,
                    daq_poll_period_s=1, clock=clock)
    await wait_whole_second()
    async with polling(poller, log.close) as stop:
        await asyncio.sleep(seconds + 0.2)
        await stop()
        counters = poller.counters()
        rows = {str(k): log.records(str(k)).num_rows for k in range(1, 255)}
    assert counters.overruns_by_device == {} and counters.store_waits == 0
    assert counters.records_dropped == 0 and counters.records_in_flight == 0
    built = {str(k): recorder.counters(str(k)).records for k in range(1, 255)}
    assert min(built.values()) >= seconds - 1   # the last period is still open at stop
    # every record built was stored, 20 values each: nothing waited out a poll
    assert rows == {k: n * VARIABLES for k, n in built.items()}
    assert counters.records_sent == sum(built.values())
