"""An ALARM journal event that cannot be a line of an ALARM file (a device alarm without its
definition snapshot: an older journal) is set aside, as MQTT does (docs/spec-notes.md, "Event
set aside"): the rest of the file and of the session is delivered."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest
from _service_plant import running_gateway, session_with_server_1, wait_for

pytestmark = pytest.mark.usefixtures("no_task_left_behind")


async def test_a_device_alarm_without_its_definition_is_set_aside_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_gateway(tmp_path, inverters=0) as plant:
        store = plant.gateway.store
        assert store is not None
        poison = await store.append_journal("alarm", {"source": "MODBUS", "name": "inverter_1",
                                                      "var": 5, "value": "1"}, commit_now=True)
        await store.append_journal("alarm", {"source": "GATEWAY", "alarm": "Test after"},
                                   commit_now=True)
        # A session's cut is its start to the second: the next second takes both events.
        second = time.time_ns() // 1_000_000_000
        await wait_for(lambda: time.time_ns() // 1_000_000_000 > second, 5, "the next second")
        await session_with_server_1(plant)
        await session_with_server_1(plant)
        texts = [gzip.decompress(p.read_bytes()).decode()
                 for p in (plant.server_dir / "ALARM").iterdir()]
        assert any("GATEWAY;Test after" in t for t in texts), texts
        assert not any("inverter_1" in t for t in texts), texts
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert errors == [f"server 1: alarm event {poison} ({errors[0].split('(')[1].split(')')[0]}"
                          ") cannot be sent: alarm event "
                          f"{poison} about a device has no definition snapshot; set aside, the "
                          "later ones go on"], errors
        marks = [json.loads(b) for b in store.journal(kinds=["delivered"]).column("body")
                 .to_pylist() if "setAside" in json.loads(b)]
        assert [(m["server"], m["stream"], m["event"]) for m in marks] == [(1, "ALARM", poison)]


async def test_a_parameter_read_without_its_definition_is_set_aside_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The same rule for a `param` event of an older journal: its `_P_` file goes without it."""
    async with running_gateway(tmp_path, inverters=1) as plant:
        store = plant.gateway.store
        assert store is not None
        poison = await store.append_journal("param", {"values": {"1": "7"}}, device="1",
                                            commit_now=True)
        second = time.time_ns() // 1_000_000_000
        await wait_for(lambda: time.time_ns() // 1_000_000_000 > second, 5, "the next second")
        await session_with_server_1(plant)
        await session_with_server_1(plant)
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and errors[0].startswith(f"server 1: param event {poison} ("), \
            errors
        assert errors[0].endswith("cannot be sent: parameters of device 1 has no definition "
                                  "snapshot; set aside, the later ones go on"), errors
        marks = [json.loads(b) for b in store.journal(kinds=["delivered"]).column("body")
                 .to_pylist() if "setAside" in json.loads(b)]
        assert [(m["server"], m["stream"], m["event"]) for m in marks] == [(1, "PARAM", poison)]
