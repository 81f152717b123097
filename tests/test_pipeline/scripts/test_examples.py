"""The shipped example scripts against simulated devices (pymodbus), the real poll loop, the real
store and the real `PollerHost`. Their timer periods are shortened in the source so a test runs
in seconds; nothing else of the scripts is changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _script_plant import ENA, PCT, Plant, running, running_plant
from waiting import wait_until

from pipeline.scripts import ScriptError, ScriptRunner, ScriptSource

EXAMPLES = Path(__file__).parents[3] / "pipeline" / "scripts" / "examples"

pytestmark = pytest.mark.usefixtures("no_task_left_behind")


def example(name: str, old: str, new: str) -> ScriptSource:
    text = (EXAMPLES / name).read_text()
    assert old in text
    return ScriptSource(file=name, source=text.replace(old, new).encode())


def export_limit() -> ScriptSource:
    return example("exportlimit.lua", "wd.every(10, control)", "wd.every(0.5, control)")


async def both_inverters(plant: Plant, address: int, wanted: object) -> None:
    await plant.wait_register(1, address, wanted)
    await plant.wait_register(2, address, wanted)


async def test_export_limit_lowers_the_inverters_above_the_limit_and_keeps_its_limit(
        tmp_path: Path) -> None:
    store = tmp_path / "store"
    async with running_plant(store, export_va=5000) as plant:
        runner = ScriptRunner(plant.host, [export_limit()])
        async with running(runner):
            await both_inverters(plant, ENA, 1)                  # wsInit: limiting enabled
            await both_inverters(plant, PCT, 1000)               # 100 % (sf -1: 1000)
            await plant.set_export(40000)                        # above 30000 VA
            await both_inverters(plant, PCT, lambda v: v <= 800)
            answer = await runner.call("exportlimit.setLimit", {"va": 25000})
            assert isinstance(answer, dict) and answer["limitVA"] == 25000
            assert isinstance(answer["pct"], int) and 0 <= answer["pct"] <= 80
            with pytest.raises(ScriptError) as refused:
                await runner.call("exportlimit.setLimit", {"va": "x"})
            assert str(refused.value) == "exportlimit.setLimit: va must be a number >= 0"
        saved = [json.loads(b) for b in plant.store.journal(kinds=["scriptdata"])
                 .column("body").to_pylist()]
        assert saved[-1] == {"script": "exportlimit.lua", "data": {"limitVA": 25000}}
    # A restart: a new store session and a new runner. 26000 VA is above the saved 25000 but
    # below 0.9 x 30000: only the saved limit makes the script lower the inverters.
    async with running_plant(store, export_va=26000) as plant:
        runner = ScriptRunner(plant.host, [export_limit()])
        async with running(runner):
            await both_inverters(plant, PCT, lambda v: v <= 900)
        assert plant.alarms == []


async def test_export_limit_stops_exporting_when_the_meter_falls_silent(tmp_path: Path) -> None:
    async with running_plant(tmp_path / "store", export_va=5000) as plant:
        runner = ScriptRunner(plant.host, [export_limit()])
        async with running(runner):
            await both_inverters(plant, PCT, 1000)
            # The spec's example answer (docs/behaviour.md §9.5), at 100 % before the meter goes.
            assert await runner.call("exportlimit.setLimit", {"va": 25000}) == {
                "limitVA": 25000, "pct": 100}
            await plant.stop_meter()       # its last value goes stale after 3 poll periods
            await both_inverters(plant, PCT, 0)


async def test_plant_watch_sums_power_keeps_the_peak_and_alarms_a_lost_device(
        tmp_path: Path) -> None:
    script = example("plantwatch.lua", "local PERIOD_S = 60", "local PERIOD_S = 0.5")
    async with running_plant(tmp_path / "store") as plant:
        runner = ScriptRunner(plant.host, [script])

        async def summary_is(key: str, value: int) -> bool:
            summary = await runner.call("plantwatch.summary", {})
            return isinstance(summary, dict) and summary[key] == value

        async with running(runner):
            await wait_until(lambda: summary_is("inverters", 2), 10)
            summary = await runner.call("plantwatch.summary", {})
            assert isinstance(summary, dict)
            assert summary["power"] == 3000 + 2500
            await plant.set_register(2, 100, [4000])
            await wait_until(lambda: summary_is("peakToday", 7000), 10)
            await plant.stop_meter()
            await wait_until(lambda: ("Script alarm", "plantwatch", "Linky is fail") in plant.alarms,
                             10)
        saved = [json.loads(b) for b in plant.store.journal(kinds=["scriptdata"])
                 .column("body").to_pylist()]
        assert saved[-1]["script"] == "plantwatch.lua"
        assert saved[-1]["data"]["peak"]["watts"] == 7000
