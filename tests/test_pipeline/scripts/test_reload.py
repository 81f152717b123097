"""A configuration reload as the runner sees it (`detach`, then `attach` with the new host): no
Lua call runs in between (an RPC waits for the new configuration), a write queued before the
reload is not sent through the new one, and the kept script acts on the new host's devices only.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from _script_plant import ENA, INVERTER, Plant, bare_host, running, running_plant
from waiting import wait_until

import config
from pipeline.clock import SystemClock
from pipeline.drivers.modbus.planner import plan_reads
from pipeline.drivers.modbus.tcp import ModbusTcpDriver
from pipeline.poller import PolledDevice, Poller, PollLink
from pipeline.recorder import Recorder
from pipeline.scripts import PollerHost, ScriptError, ScriptRunner, ScriptSource
from pipeline.scripts.loading import problem

pytestmark = pytest.mark.usefixtures("no_task_left_behind")

RACE = ScriptSource(file="race.lua", source=b"""header = { name = "race" }
inits = 0
function wsInit() inits = inits + 1 end
function ping() return { inits = inits } end
function set(p)
  local ok, answer = pcall(wd.set, p.device, "WMaxLimPct_Ena", p.value)
  return { ok = ok, answer = answer }
end
""")


def _without_inv_b(plant: Plant) -> PollerHost:
    """The host of the configuration a reload brings, which has no inv_b any more."""
    kept = [d.device for d in plant.host.devices() if d.device.name != "inv_b"]
    definitions = {d.device.def_file: d.definition for d in plant.host.devices()
                   if d.definition is not None}
    return PollerHost(devices=kept, definitions=definitions, poller=plant.poller,
                      store=plant.store, alarm=plant.host.alarm, clock=SystemClock(),
                      daq_poll_period_s=1)


async def test_a_call_during_a_reload_waits_for_the_new_configuration(tmp_path: Path) -> None:
    async with running_plant(tmp_path / "store") as plant:
        runner = ScriptRunner(plant.host, [RACE])
        async with running(runner):
            assert await runner.call("race.ping", {}) == {"inits": 1}
            await runner.detach()
            waiting = asyncio.ensure_future(runner.call("race.ping", {}))
            await asyncio.sleep(0.5)
            assert not waiting.done()
            runner.attach(plant.host, [RACE], [])
            async with asyncio.timeout(5):
                assert await waiting == {"inits": 1}


async def test_a_write_queued_before_a_reload_is_not_sent_through_the_new_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "sunpm.script.race")
    async with running_plant(tmp_path / "store") as plant:
        runner = ScriptRunner(plant.host, [RACE])
        async with running(runner):
            assert await runner.call("race.set", {"device": "inv_a", "value": 1}) == {"ok": True,
                                                                                "answer": 1}
            # The write starts after the call returns: the reload comes first.
            await runner.detach()
            runner.attach(_without_inv_b(plant), [RACE], [])
            await wait_until(lambda: "wd.set: inv_a: WMaxLimPct_Ena not written: the "
                             "configuration was reloaded" in caplog.messages, 10,
                             what="the queued write dropped")
            assert await plant.register(1, ENA) == 0
            answer = await runner.call("race.set", {"device": "inv_b", "value": 1})
            assert answer == {"ok": False, "answer": "wd.set: unknown device 'inv_b'"}
            assert await runner.call("race.set", {"device": "inv_a", "value": 1}) == {"ok": True,
                                                                                "answer": 1}
            await plant.wait_register(1, ENA, 1)
            assert await plant.register(2, ENA) == 0
            assert await runner.call("race.ping", {}) == {"inits": 1}


async def test_unchanged_load_problems_are_not_raised_again(tmp_path: Path) -> None:
    """Two problems of one file (scl.ini entries past the 16th) and a script that does not
    compile: each raises `Script failure` once, not again at a reload that leaves them as they
    were; a problem that changes is raised again."""
    broken = ScriptSource(file="broken.lua", source=b"function f(\n")
    problems = [problem("X_scl.ini", 18, "SCRIPT_File[17]", "more than 16 scripts"),
                problem("X_scl.ini", 19, "SCRIPT_File[18]", "more than 16 scripts")]
    async with bare_host(tmp_path / "store") as (host, alarms):
        runner = ScriptRunner(host, [broken, RACE], problems)
        async with running(runner):
            assert sorted(a[1] for a in alarms) == ["X_scl.ini", "X_scl.ini", "broken"]
            for _ in range(2):
                await runner.detach()
                runner.attach(host, [broken, RACE], problems)
                async with asyncio.timeout(5):
                    await runner.settled.wait()
                assert await runner.call("race.ping", {}) == {"inits": 1}
            assert len(alarms) == 3
            await runner.detach()
            runner.attach(host, [ScriptSource(file="broken.lua", source=b"x = = 1\n"), RACE],
                          problems[:1])
            async with asyncio.timeout(5):
                await runner.settled.wait()
            assert await runner.call("race.ping", {}) == {"inits": 1}
            assert [a[1] for a in alarms[3:]] == ["broken"]
            assert {s.file: s.enabled for s in runner.scripts()} == {
                "race.lua": True, "broken.lua": False, "X_scl.ini": False}


async def test_last_good_values_carry_over_to_the_next_configuration(tmp_path: Path) -> None:
    """A script that runs on across a reload still gets the last good values of the devices
    polled as before (`wd.get` does not turn nil until the new poller's first polls); a device
    whose definition changed starts afresh."""
    async with running_plant(tmp_path / "store") as plant:
        await wait_until(lambda: all(plant.host.last_good(i, 1) is not None
                                     for i in ("1", "2", "3")), 10, what="every device polled")
        definitions = {d.device.def_file: d.definition for d in plant.host.devices()
                       if d.definition is not None}
        definitions["acme_sim2.csv"] = config.parse_definition(
            INVERTER + b"5;3;104;U16;;Extra;;1;0;;4\n", "acme_sim2.csv").value
        # A row inserted above them moves every line; inv_b gets the other definition.
        devices = [replace(d.device, line=d.device.line + 1,
                           def_file="acme_sim2.csv" if d.device.name == "inv_b"
                           else d.device.def_file) for d in plant.host.devices()]
        links: dict[str, list[PolledDevice]] = {}
        for device in devices:
            definition = definitions[device.def_file]
            links.setdefault(device.interface, []).append(PolledDevice(
                device=device, definition=definition, plan=plan_reads(definition)))
        # Not started: no poll of its own yet.
        poller = Poller([PollLink(name=name, driver=ModbusTcpDriver(), devices=tuple(polled))
                         for name, polled in links.items()],
                        recorder=Recorder(), record_sink=plant.store.append_records)
        new_host = PollerHost(devices=devices, definitions=definitions, poller=poller,
                              store=plant.store, alarm=plant.host.alarm, clock=SystemClock(),
                              daq_poll_period_s=1)
        assert new_host.last_good("1", 1) is None
        new_host.keep_values_of(plant.host)
        kept = new_host.last_good("1", 1)
        assert kept is not None and kept.raw == 3000
        assert new_host.last_good("3", 1) is not None
        assert new_host.last_good("2", 1) is None


FRAGILE = ScriptSource(file="fragile.lua", source=b"""header = { name = "fragile" }
inits = 0
function wsInit() inits = inits + 1 end
function ping() return { inits = inits } end
function fail() error("broken", 0) end
function spin() while true do end end
""")


async def reload(runner: ScriptRunner, host: PollerHost, sources: list[ScriptSource]) -> None:
    await runner.detach()
    runner.attach(host, sources, [])
    async with asyncio.timeout(10):
        await runner.settled.wait()


@pytest.mark.parametrize("failure", ["errors", "overrun"])
async def test_a_script_a_failure_disabled_stays_off_at_an_unrelated_reload(
        tmp_path: Path, failure: str) -> None:
    """Disabled by an overrun or by three errors within 60 s: a reload that leaves its file as
    it was does not start it again (it would fail again, alarm again); a changed file, an
    enable (web UI, API) or an upload (`release`) does."""
    async with bare_host(tmp_path / "store") as (host, alarms):
        runner = ScriptRunner(host, [FRAGILE, RACE])
        async with running(runner):
            for _ in range(3 if failure == "errors" else 1):
                with pytest.raises(ScriptError):
                    await runner.call(f"fragile.{'fail' if failure == 'errors' else 'spin'}", {})
            assert alarms == [("Script failure", "fragile", None)]
            await reload(runner, host, [FRAGILE, RACE])
            with pytest.raises(ScriptError, match="fragile: script is disabled"):
                await runner.call("fragile.ping", {})
            assert {s.file: s.enabled for s in runner.scripts()} == {
                "fragile.lua": False, "race.lua": True}
            assert len(alarms) == 1
            # An explicit enable starts it again.
            assert await runner.enable(FRAGILE)
            assert await runner.call("fragile.ping", {}) == {"inits": 1}
            for _ in range(3):
                with pytest.raises(ScriptError):
                    await runner.call("fragile.fail", {})
            # So does an upload of the same bytes, at the reload that follows.
            runner.release("fragile.lua")
            await reload(runner, host, [FRAGILE, RACE])
            assert await runner.call("fragile.ping", {}) == {"inits": 1}
            for _ in range(3):
                with pytest.raises(ScriptError):
                    await runner.call("fragile.fail", {})
            # And a changed file.
            changed = ScriptSource(file="fragile.lua", source=FRAGILE.source + b"-- v2\n")
            await reload(runner, host, [changed, RACE])
            assert await runner.call("fragile.ping", {}) == {"inits": 1}
            assert await runner.call("race.ping", {}) == {"inits": 1}


async def test_a_call_waiting_for_a_reload_is_answered_when_the_service_stops(
        tmp_path: Path) -> None:
    """The service stops between two configurations: a call that waited for the next one is
    answered with an error, it does not wait for ever."""
    async with bare_host(tmp_path / "store") as (host, _):
        runner = ScriptRunner(host, [RACE])
        task = asyncio.create_task(runner.run(), name="scripts")
        try:
            async with asyncio.timeout(10):
                await runner.started.wait()
            await runner.detach()
            waiting = asyncio.ensure_future(runner.call("race.ping", {}))
            await asyncio.sleep(0.2)
            assert not waiting.done()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        async with asyncio.timeout(10):
            with pytest.raises(ScriptError, match=r"^race\.ping: the service is stopping$"):
                await waiting
        with pytest.raises(ScriptError, match=r"^race\.ping: the service is stopping$"):
            await runner.call("race.ping", {})


STOPPER = ScriptSource(file="stopper.lua", source=b"""header = { name = "stopper" }
function ping() return true end
function wsStop()
  local ok, w = pcall(wd.get, "inv_b", "W")
  wd.log("devices=" .. #wd.devices() .. " inv_b=" .. tostring(w))
  wd.set("inv_a", "WMaxLimPct_Ena", 1)
  wd.set("inv_b", "WMaxLimPct_Ena", 1)
end
""")


async def test_a_script_the_reload_removes_stops_under_its_own_configuration(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`wsStop` of a script no longer listed sees the devices it ran with (inv_b, which the
    reload removed, included); of its writes only the one to a device the new configuration
    polls as before is sent, never one to a device the reload removed or changed."""
    caplog.set_level(logging.INFO, "sunpm.script.stopper")
    async with running_plant(tmp_path / "store") as plant:
        await wait_until(lambda: plant.host.last_good("2", 1) is not None, 10,
                         what="inv_b polled")
        runner = ScriptRunner(plant.host, [STOPPER, RACE])
        async with running(runner):
            assert await runner.call("stopper.ping", {}) is True
            await runner.detach()
            runner.attach(_without_inv_b(plant), [RACE], [])
            async with asyncio.timeout(10):
                await runner.settled.wait()
            await plant.wait_register(1, ENA, 1)
            await wait_until(lambda: any("inv_b: WMaxLimPct_Ena not written" in m
                                         for m in caplog.messages), 10, what="inv_b refused")
            assert "devices=3 inv_b=2500" in caplog.messages
            assert ("wd.set: inv_b: WMaxLimPct_Ena not written: the reload removed or changed "
                    "the device") in caplog.messages
            assert await plant.register(2, ENA) == 0
            assert await runner.call("race.ping", {}) == {"inits": 1}


TICKER = ScriptSource(file="ticker.lua", source=b"""header = { name = "ticker" }
function wsInit() wd.every(0.5, function() wd.log("tick") end) end
""")


async def test_two_enables_at_once_leave_one_script_running(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Enable pressed twice (the web UI, the API) while the first is loading: one Lua state
    runs; none is left ticking out of reach of a disable."""
    caplog.set_level(logging.INFO, "sunpm.script.ticker")
    async with bare_host(tmp_path / "store") as (host, _):
        runner = ScriptRunner(host, [TICKER])
        async with running(runner):
            assert all(await asyncio.gather(runner.enable(TICKER), runner.enable(TICKER)))
            await runner.disable("ticker")
            ticks = caplog.messages.count("tick")
            await asyncio.sleep(1.5)
            assert caplog.messages.count("tick") == ticks
