"""Scripts across configuration reloads on a running gateway (docs/behaviour.md §9.1 steps 3-5):
a script whose file did not change keeps its Lua variables and timers (no `wsStop`, no second
`wsInit`) and reads the new configuration's devices; a changed file restarts that script only; a
script taken out of scl.ini gets `wsStop`; a file that does not load is not alarmed again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _service_plant import UID, RunningPlant, running_gateway, wait_for
from waiting import wait_until

from config import parse_daq, render_daq
from config.model import Device
from pipeline.drivers.modbus.simulator import TcpSimulator
from pipeline.service.admin import Admin
from pipeline.service.commands import CommandError
from pipeline.service.demo import INVERTER_FILE, DemoInverter
from pipeline.service.maintenance import change_config
from store import Log, StoreOptions
from store.events import JsonValue
from store.state import replay

pytestmark = pytest.mark.usefixtures("no_task_left_behind")

SCL = f"CONFIG/{UID}_scl.ini"


def counter(name: str, version: str = "1") -> bytes:
    """A script counting timer ticks in a Lua global; `wsInit` and `wsStop` runs are counted
    in its saved data, which outlives its Lua state."""
    return f"""header = {{ name = "{name}", version = "{version}" }}
ticks = 0
local function bump(key) wd.save(key, (wd.load(key) or 0) + 1) end
function wsInit()
  bump("inits")
  wd.every(0.5, function() ticks = ticks + 1 end)
end
function wsStop() bump("stops"); wd.log("wsStop ran") end
function count()
  return {{ ticks = ticks, inits = wd.load("inits") or 0, stops = wd.load("stops") or 0,
           version = header.version }}
end
""".encode()


async def call(plant: RunningPlant, rpc_name: str) -> dict[str, JsonValue]:
    """The RPC's answer; while a reload swaps the scripts it may be refused for a moment."""
    answers: list[JsonValue] = []

    async def answered() -> bool:
        try:
            answers.append(await plant.gateway.call_script(rpc_name, {}))
        except CommandError as err:
            if "unknown script" not in str(err):
                raise
            return False
        return True

    await wait_until(answered, 20, what=f"an answer of {rpc_name}", every=0.2)
    answer = answers[-1]
    assert isinstance(answer, dict), answer
    return answer


async def reload_config(plant: RunningPlant, write: dict[str, bytes] | None = None) -> None:
    """A local edit (config.ini's log level, or the files given), then the reload it makes."""
    gateway = plant.gateway
    loaded = gateway.site
    if write is None:
        level = "debug" if loaded is not None and loaded.settings.log_level != "debug" \
            else "info"
        change_config(plant.config_dir, UID, {"LOG_Level": level})
    else:
        for rel, data in write.items():
            (plant.config_dir / rel).write_bytes(data)
    gateway.config_written()
    await wait_for(lambda: gateway.site is not loaded, 20, "the reload")


async def ticks_over(plant: RunningPlant, rpc_name: str, floor: int) -> dict[str, JsonValue]:
    answer: dict[str, JsonValue] = {}

    async def more() -> bool:
        answer.update(await call(plant, rpc_name))
        return isinstance(answer["ticks"], int) and answer["ticks"] > floor

    await wait_until(more, 20, what=f"{rpc_name} ticking past {floor}", every=0.2)
    return answer


async def test_an_unchanged_script_keeps_its_variables_and_timer_across_a_reload(
        tmp_path: Path) -> None:
    extra = {"SCRIPT/keep.lua": counter("keep"), SCL: b"SCRIPT_File[0]=keep.lua\n"}
    async with running_gateway(tmp_path, inverters=0, extra_files=extra) as plant:
        before = await ticks_over(plant, "keep.count", 3)
        await reload_config(plant)
        after = await ticks_over(plant, "keep.count", int(str(before["ticks"])))
        assert (after["inits"], after["stops"]) == (1, 0)
        # The timer of wsInit still runs: the count goes on from where it was.
        await reload_config(plant)
        again = await ticks_over(plant, "keep.count", int(str(after["ticks"])))
        assert (again["inits"], again["stops"]) == (1, 0)
    # The stop of the service is the one wsStop.
    async with await Log.open(tmp_path / "data" / "store", StoreOptions()) as store:
        saved = replay(store).script_data["keep.lua"]
    assert saved == {"inits": 1, "stops": 1}


async def test_a_changed_file_restarts_that_script_only(tmp_path: Path) -> None:
    extra = {"SCRIPT/a.lua": counter("a"), "SCRIPT/b.lua": counter("b"),
             SCL: b"SCRIPT_File[0]=a.lua\nSCRIPT_File[1]=b.lua\n"}
    async with running_gateway(tmp_path, inverters=0, extra_files=extra) as plant:
        a_before = await ticks_over(plant, "a.count", 3)
        await ticks_over(plant, "b.count", 3)
        await reload_config(plant, {"SCRIPT/b.lua": counter("b", version="2")})

        async def b_restarted() -> bool:
            return (await call(plant, "b.count"))["version"] == "2"

        await wait_until(b_restarted, 20, what="b's new version", every=0.2)
        b_after = await call(plant, "b.count")
        assert (b_after["inits"], b_after["stops"]) == (2, 1)
        a_after = await ticks_over(plant, "a.count", int(str(a_before["ticks"])))
        assert (a_after["inits"], a_after["stops"]) == (1, 0)


async def test_a_script_taken_out_of_the_list_gets_wsstop(tmp_path: Path) -> None:
    extra = {"SCRIPT/a.lua": counter("a"), "SCRIPT/b.lua": counter("b"),
             SCL: b"SCRIPT_File[0]=a.lua\nSCRIPT_File[1]=b.lua\n"}
    async with running_gateway(tmp_path, inverters=0, extra_files=extra) as plant:
        a_before = await ticks_over(plant, "a.count", 2)
        await call(plant, "b.count")
        await reload_config(plant, {SCL: b"SCRIPT_File[0]=a.lua\n"})
        a_after = await ticks_over(plant, "a.count", int(str(a_before["ticks"])))
        assert (a_after["inits"], a_after["stops"]) == (1, 0)
        with pytest.raises(CommandError, match="unknown script 'b'"):
            await plant.gateway.call_script("b.count", {})
        admin = Admin(plant.gateway)

        async def stopped() -> bool:
            return any(line.endswith("script:b: wsStop ran")
                       for line in await admin.script_log("b"))

        await wait_until(stopped, 20, what="b's wsStop in its log", every=0.2)
        assert [s.file for s in admin.scripts()] == ["a.lua"]


PROBE = b"""header = { name = "probe" }
function wsInit() wd.save("inits", (wd.load("inits") or 0) + 1) end
function devices() return { devices = #wd.devices() } end
function read()
  local value = wd.get("inverter_new", "W")
  return { value = value, devices = #wd.devices(), inits = wd.load("inits") }
end
"""


async def test_a_kept_script_reads_a_device_the_reload_added(tmp_path: Path) -> None:
    extra = {"SCRIPT/probe.lua": PROBE, SCL: b"SCRIPT_File[0]=probe.lua\n"}
    added = TcpSimulator({1: DemoInverter(number=2)})
    port = await added.start()
    try:
        async with running_gateway(tmp_path, inverters=1, extra_files=extra) as plant:
            # The scripts start just after the poller (a busy box answered `unknown script`).
            listed = (await call(plant, "probe.devices"))["devices"]
            with pytest.raises(CommandError, match=r"wd\.get: unknown device 'inverter_new'"):
                await plant.gateway.call_script("probe.read", {})
            assert isinstance(listed, int)
            daq_rel = f"CONFIG/{UID}_daq.csv"
            daq = parse_daq((plant.config_dir / daq_rel).read_bytes(), daq_rel).value
            rows = [*daq.devices, Device(
                line=len(daq.devices) + 2, index="2", interface=f"127.0.0.1:{port}",
                name="inverter_new", address=1, acq_period_s=10, timeout_ms=1000,
                parameters="1", category="Inverter", model="Demo", def_file=INVERTER_FILE)]
            await reload_config(plant, {daq_rel: render_daq(type(daq)(
                devices=tuple(rows), serial=daq.serial, blocks=daq.blocks | {"devices"}))})
            answer: dict[str, JsonValue] = {}

            async def read() -> bool:
                answer.update(await call(plant, "probe.read"))
                return answer.get("value") is not None

            await wait_until(read, 30, what="a value of the added device", every=0.5)
            assert isinstance(answer["value"], int | float)
            assert (answer["devices"], answer["inits"]) == (listed + 1, 1)
    finally:
        await added.stop()


def script_failures(plant: RunningPlant) -> list[str | None]:
    store = plant.gateway.store
    assert store is not None
    table = store.journal(kinds=["alarm"]).sort_by("seq")
    bodies = [json.loads(b) for b in table.column("body").to_pylist()]
    return [b.get("subject") for b in bodies if b["alarm"] == "Script failure"]


async def test_an_unchanged_broken_script_is_not_alarmed_again_at_a_reload(
        tmp_path: Path) -> None:
    extra = {"SCRIPT/syn.lua": b'header = {name = "syn"}\nfunction f(\n',
             "SCRIPT/ok.lua": counter("ok"),
             SCL: b"SCRIPT_File[0]=syn.lua\nSCRIPT_File[1]=ok.lua\n"}
    async with running_gateway(tmp_path, inverters=0, extra_files=extra) as plant:
        await wait_for(lambda: script_failures(plant) == ["syn"], 20, "the load failure")
        await reload_config(plant)
        await ticks_over(plant, "ok.count", 0)
        await reload_config(plant)
        await ticks_over(plant, "ok.count", 0)
        assert script_failures(plant) == ["syn"]
        statuses = {s.file: s for s in Admin(plant.gateway).scripts()}
        assert not statuses["syn.lua"].enabled and "syntax" in statuses["syn.lua"].last_error
        # Changed and still broken: loaded again, alarmed again.
        await reload_config(plant, {"SCRIPT/syn.lua": b'header = {name = "syn"}\nx = = 1\n'})
        await wait_for(lambda: script_failures(plant) == ["syn", "syn"], 20,
                       "the changed file's failure")


async def test_a_script_disabled_from_the_web_stays_off_until_uploaded_again(
        tmp_path: Path) -> None:
    source = counter("held")
    extra = {"SCRIPT/held.lua": source, "SCRIPT/other.lua": counter("other"),
             SCL: b"SCRIPT_File[0]=held.lua\nSCRIPT_File[1]=other.lua\n"}
    async with running_gateway(tmp_path, inverters=0, extra_files=extra) as plant:
        admin = Admin(plant.gateway)
        await call(plant, "held.count")
        await admin.disable_script("held")
        await reload_config(plant)
        await ticks_over(plant, "other.count", 0)
        assert {s.file: s.enabled for s in admin.scripts()} == {"held.lua": False,
                                                                 "other.lua": True}
        # The same bytes uploaded again change no file, so make no reload of their own: the
        # script starts again with the next one.
        await admin.upload_script("held.lua", source)
        await reload_config(plant)
        # The new configuration is in force before its scripts are reconciled: until then the
        # held script still answers that it is disabled (seen on a busy box).
        await wait_for(lambda: {s.file: s.enabled for s in admin.scripts()}.get("held.lua"), 20,
                       "held.lua enabled again")
        answer = await ticks_over(plant, "held.count", 0)
        assert (answer["inits"], answer["stops"]) == (2, 1)
        other = await call(plant, "other.count")
        assert (other["inits"], other["stops"]) == (1, 0)


RESET = b"""header = { name = "reset" }
function state() return { ready = wd.get("inverter_1", "W") ~= nil } end
function wsStop() wd.set("inverter_1", "Hz_SF", -3) end
"""


async def test_the_writes_of_wsstop_at_the_stop_of_the_service_reach_the_devices(
        tmp_path: Path) -> None:
    """A script resetting a device in `wsStop` (an export limit back to 100 %) gets its write
    sent when the service stops: the scripts stop before polling does."""
    extra = {"SCRIPT/reset.lua": RESET, SCL: b"SCRIPT_File[0]=reset.lua\n"}
    async with running_gateway(tmp_path, inverters=1, extra_files=extra) as plant:
        inverter = plant.simulators[0].units[1]
        assert inverter.holding[40087] == (-2) & 0xFFFF

        async def polled() -> bool:
            return (await call(plant, "reset.state"))["ready"] is True

        await wait_until(polled, 30, what="inverter_1 polled", every=0.5)
    assert inverter.holding[40087] == (-3) & 0xFFFF
