"""The `wd` API (docs/behaviour.md §9.2) against pymodbus devices polled by the real poll loop."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from _script_plant import PCT, running, running_plant
from waiting import wait_until

from config import parse_definition
from config.model import Device
from pipeline.clock import SystemClock
from pipeline.scripts import PollerHost, ScriptRunner, ScriptSource
from pipeline.scripts.host import ScriptDevice
from pipeline.scripts.wd import scaled_for_lua
from store.events import JsonValue

pytestmark = pytest.mark.usefixtures("no_task_left_behind")

API = ScriptSource(file="api.lua", source=b"""
header = { name = "api" }
local function try(f, ...)
  local ok, a, b = pcall(f, ...)
  if ok then return {a, b} end
  return {error = a}
end
function get(p) return try(wd.get, p.device, p.variable) end
function getTag(p) return wd.getTag(p.tag) end
function set(p) return try(wd.set, p.device, p.variable, p.value) end
function setTag(p) return try(wd.setTag, p.tag, p.value) end
function devices() return wd.devices() end
function relay(p) return try(wd.setRelay, p.state) end
function alarms(p)
  local out = {}
  for i = 1, p.n do out[i] = wd.alarm(p.text) end
  return out
end
function logs(p) for i = 1, p.n do wd.log(p.text) end print("printed", 1, nil) end
function now() return wd.now() end
local fired, ids = {}, {}
function timers()
  local first = wd.every(0.5, function() fired[#fired + 1] = "every" end)
  wd.after(0.2, function() fired[#fired + 1] = "after" end)
  local cancelled = wd.after(0.2, function() fired[#fired + 1] = "cancelled" end)
  return {first, wd.cancel(cancelled), wd.cancel(cancelled), wd.cancel(9999)}
end
function fired_list() return #fired > 0 and fired or {} end
function too_many()
  local n = 0
  while true do
    local ok, err = pcall(wd.after, 3600, function() end)
    if not ok then return {n, err} end
    n = n + 1
  end
end
function bad_timer(p) return try(wd.every, p.s, p.fn and function() end or 5) end
""")


async def poll_values(runner: ScriptRunner) -> None:
    async def polled() -> bool:
        return isinstance(await runner.call("api.get", {"device": "inv_a", "variable": "W"}),
                          list)

    await wait_until(polled, 10, every=0.1)


async def get(runner: ScriptRunner, device: JsonValue, variable: JsonValue) -> JsonValue:
    return await runner.call("api.get", {"device": device, "variable": variable})


async def get_is(runner: ScriptRunner, device: JsonValue, variable: JsonValue,
                 wanted: JsonValue) -> bool:
    return await get(runner, device, variable) == wanted


async def test_get_and_get_tag_give_scaled_values_and_ages(tmp_path: Path) -> None:
    async with running_plant(tmp_path / "store", export_va=70000) as plant:
        runner = ScriptRunner(plant.host, [API])
        async with running(runner):
            await poll_values(runner)
            value = await get(runner, "inv_a", "W")
            assert isinstance(value, list) and value[0] == 3000
            assert isinstance(value[1], float) and 0 <= value[1] < 3
            # The same variable by index (number or digits) and by tag; the device by index.
            by: list[tuple[JsonValue, JsonValue]] = [(1, 1), ("1", "1"), ("inv_a", "01"),
                                                     ("inv_a", "acPower")]
            for device, variable in by:
                again = await get(runner, device, variable)
                assert isinstance(again, list) and again[0] == 3000
            pct = await get(runner, "inv_b", "WMaxLimPct")        # 1000 x 10^-1
            assert isinstance(pct, list) and pct[0] == 100 and isinstance(pct[0], int)
            sinsti = await get(runner, "Linky", "SINSTI")         # U32 over two registers
            assert isinstance(sinsti, list) and sinsti[0] == 70000
            assert await get(runner, "nobody", "W") == {"error": "wd.get: unknown device 'nobody'"}
            assert await get(runner, "inv_a", "nothing") == {
                "error": "wd.get: inv_a: unknown variable 'nothing'"}
            # Digits other than ASCII are no Index: a script's error, not an internal one.
            for odd in ("\u00b2", "\uff11", "1_0"):
                assert await get(runner, "inv_a", odd) == {
                    "error": f"wd.get: inv_a: unknown variable '{odd}'"}, odd
            assert await get(runner, True, "W") == {
                "error": "wd.get: device must be a name or an index, got boolean"}
            rows = await runner.call("api.getTag", {"tag": "acPower"})
            assert isinstance(rows, list)
            assert [(r["device"], r["index"], r["value"]) for r in rows  # type: ignore[index, call-overload]
                    ] == [("inv_a", 1, 3000), ("inv_b", 1, 2500)]
            assert await runner.call("api.getTag", {"tag": "unknown"}) == {}
            await plant.stop_meter()
            # The last good value stays for 3 poll periods (1 s each), then nil.
            await wait_until(lambda: get_is(runner, "Linky", "SINSTI", {}), 10, every=0.1)
            devices = await runner.call("api.devices", {})
            assert devices == [
                {"index": 1, "name": "inv_a", "category": "Inverter", "model": "Sim",
                 "state": "ok"},
                {"index": 2, "name": "inv_b", "category": "Inverter", "model": "Sim",
                 "state": "ok"},
                {"index": 3, "name": "Linky", "category": "Meter", "model": "Linky",
                 "state": "fail"}]
            now = await runner.call("api.now", {})
            assert isinstance(now, float) and abs(now - time.time()) < 2


async def test_set_and_set_tag_validate_then_write_through_the_poll_loop(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture
                                                                         ) -> None:
    async with running_plant(tmp_path / "store") as plant:
        runner = ScriptRunner(plant.host, [API])
        async with running(runner):
            before = await runner.call("api.set", {"device": "inv_a", "variable": "WMaxLimPct",
                                                   "value": 50})
            assert before == {"error": "wd.set: inv_a: scale factor WMaxLimPct_SF not read yet"}
            await poll_values(runner)
            assert await runner.call("api.set", {"device": "inv_a", "variable": "WMaxLimPct",
                                                 "value": 42.5}) == [42.5]
            await plant.wait_register(1, PCT, 425)
            assert await runner.call("api.set", {"device": "inv_a", "variable": "W",
                                                 "value": 70000}) == {
                "error": "wd.set: inv_a: 70000 is out of range for U16"}
            assert await runner.call("api.set", {"device": "inv_a", "variable": "W",
                                                 "value": "x"}) == {
                "error": "wd.set: inv_a: value must be a number, got string"}
            answer = await runner.call("api.setTag", {"tag": "cmdPwrPercent", "value": 60})
            assert answer == [{"queued": {"inv_a": 60, "inv_b": 60}, "rejected": {}}]
            await plant.wait_register(1, PCT, 600)
            await plant.wait_register(2, PCT, 600)
            answer = await runner.call("api.setTag", {"tag": "cmdPwrPercent", "value": 7000})
            assert answer == [{"queued": {}, "rejected": {
                "inv_a": "wd.setTag: inv_a: 70000 is out of range for U16",
                "inv_b": "wd.setTag: inv_b: 70000 is out of range for U16"}}]
            assert await runner.call("api.setTag", {"tag": "nothing", "value": 1}) == {
                "error": "wd.setTag: no device has the tag 'nothing'"}
            assert await runner.call("api.relay", {"state": 2}) == {
                "error": "wd.setRelay: state must be 0, 1 or a boolean, got 2"}
            assert await runner.call("api.relay", {"state": True}) == {}
            await wait_until(lambda: any("wd.setRelay: setRelay: no IO device is configured" in
                                         r.getMessage() for r in caplog.records), 5)
        assert plant.alarms == []


async def test_timers_alarms_and_log_keep_their_limits(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sunpm")
    async with running_plant(tmp_path / "store") as plant:
        runner = ScriptRunner(plant.host, [API])
        async with running(runner):
            assert await runner.call("api.timers", {}) == [1, True, False, False]
            await asyncio.sleep(1.3)
            fired = await runner.call("api.fired_list", {})
            assert isinstance(fired, list)
            assert fired[0] == "after" and "cancelled" not in fired
            assert 2 <= fired.count("every") <= 3
            # 1 every and 0 after timers remain: 31 more fit. (Called by pcall directly, the
            # errors carry no script position.)
            assert await runner.call("api.too_many", {}) == [
                31, "wd.after: more than 32 timers"]
            assert await runner.call("api.bad_timer", {"s": 0.1, "fn": True}) == {
                "error": "wd.every: seconds must be a number in 0.5..86400, got 0.1"}
            assert await runner.call("api.bad_timer", {"s": 1, "fn": False}) == {
                "error": "wd.every: the second argument must be a function"}
            limited = await runner.call("api.alarms", {"n": 12, "text": "x" * 80})
            assert limited == [True] * 10 + [False] * 2
            await runner.call("api.logs", {"n": 120, "text": "y" * 1200})
        script_alarms = [a for a in plant.alarms if a[0] == "Script alarm"]
        assert script_alarms == [("Script alarm", "api", "x" * 64)] * 10
        lines = [r.getMessage() for r in caplog.records if r.name == "sunpm.script.api"
                 and r.levelname == "INFO"]
        assert lines == ["y" * 1000] * 100


async def test_a_device_without_a_link_is_absent_and_has_no_values(tmp_path: Path) -> None:
    async with running_plant(tmp_path / "store") as plant:
        unwired = Device(line=4, index="4", interface="SERIAL2", name="rtu_inv", address=5,
                         acq_period_s=1, def_file="acme_sim.csv")
        devices = [*(d.device for d in plant.host.devices()), unwired]
        definitions = {d.device.def_file: d.definition for d in plant.host.devices()
                       if d.definition is not None}
        host = PollerHost(devices=devices, definitions=definitions, poller=plant.poller,
                          store=plant.store, alarm=plant.host.alarm, clock=SystemClock(),
                          daq_poll_period_s=1)
        runner = ScriptRunner(host, [API])
        async with running(runner):
            await poll_values(runner)
            assert await get(runner, "rtu_inv", "W") == {}
            devices_seen = await runner.call("api.devices", {})
            assert isinstance(devices_seen, list)
            assert [d["state"] for d in devices_seen] == [  # type: ignore[index, call-overload]
                "ok", "ok", "ok", "absent"]


@pytest.mark.parametrize(("data", "wanted"), [
    ("012345", 12345), ("0.5", 0.5), ("-7", -7),
    # Text to the recorder (docs/formats.md §8.2), so text to scripts: a Linky status word
    # (STGE, 8 hex digits) read as `0E+1` gave 0, `01E40000` an OverflowError (an internal
    # error of wd.get), and `1E999999999` built a billion-digit integer.
    ("00E00001", b"00E00001"), ("01E40000", b"01E40000"), ("1E999999999", b"1E999999999"),
    ("003A0001", b"003A0001"), ("1_000", b"1_000"), ("NaN", b"NaN"), ("Infinity", b"Infinity"),
    ("\uff11\uff12", "\uff11\uff12".encode()), ("TH..", b"TH..")])
def test_a_tic_value_is_a_number_to_scripts_exactly_when_the_recorder_says_so(
        data: str, wanted: object) -> None:
    definition = parse_definition(b"tic;Meter;Enedis;Linky\n1;STGE;;;;STGE;;1;0;;1\n",
                                  "T_TIC.csv").value
    device = ScriptDevice(device=Device(line=1, index="TIC1", interface="", name="Linky", address=None,
                                        def_file="T_TIC.csv"),
                          definition=definition, poll_period_s=1, state="ok")
    got = scaled_for_lua(device, definition.variables[0], data)
    assert got == wanted and type(got) is type(wanted)
