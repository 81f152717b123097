"""A configuration reload as the runner sees it (`detach`, then `attach` with the new host): no
Lua call runs in between (an RPC waits for the new configuration), a write queued before the
reload is not sent through the new one, and the kept script acts on the new host's devices only.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from _script_plant import ENA, running, running_plant

from pipeline.clock import SystemClock
from pipeline.scripts import PollerHost, ScriptRunner, ScriptSource

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
            # The new configuration has no inv_b any more.
            kept = [d.device for d in plant.host.devices() if d.device.name != "inv_b"]
            definitions = {d.device.def_file: d.definition for d in plant.host.devices()
                           if d.definition is not None}
            new_host = PollerHost(devices=kept, definitions=definitions, poller=plant.poller,
                                  store=plant.store, alarm=plant.host.alarm, clock=SystemClock(),
                                  daq_poll_period_s=1)
            runner.attach(new_host, [RACE], [])
            await asyncio.sleep(1.5)
            assert await plant.register(1, ENA) == 0
            assert ("wd.set: inv_a: WMaxLimPct_Ena not written: the configuration was "
                    "reloaded") in caplog.messages
            answer = await runner.call("race.set", {"device": "inv_b", "value": 1})
            assert answer == {"ok": False, "answer": "wd.set: unknown device 'inv_b'"}
            assert await runner.call("race.set", {"device": "inv_a", "value": 1}) == {"ok": True,
                                                                                "answer": 1}
            await plant.wait_register(1, ENA, 1)
            assert await plant.register(2, ENA) == 0
            assert await runner.call("race.ping", {}) == {"inits": 1}
