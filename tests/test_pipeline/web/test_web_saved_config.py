"""What the web UI shows right after a save is the configuration as saved, not the one the gateway
has loaded: a script uploaded, a device added or renamed, a schedule changed are there in the
answer that follows the save, whenever the gateway's reload comes.

The gateway of these tests never reloads (its configuration watch looks at the folder once a
day and is not told of the web UI's writes), so what they read cannot have come from a reload.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from web_support import UID, RunningGateway, running_gateway

from pipeline.service import gateway as gateway_module
from pipeline.service.gateway import Gateway


@pytest.fixture
def unreloaded_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                       ) -> Iterator[RunningGateway]:
    monkeypatch.setattr(gateway_module, "CONFIG_CHECK_S", 86_400.0)
    monkeypatch.setattr(Gateway, "config_written", lambda self: None)
    with running_gateway(tmp_path) as running:
        yield running


def _in_force(gateway: RunningGateway) -> list[str]:
    assert gateway.gateway is not None and gateway.gateway.site is not None
    return [d.index for d in gateway.gateway.site.daq.devices]


def test_a_saved_script_is_listed_in_the_answer_after_its_upload(
        unreloaded_gateway: RunningGateway) -> None:
    with unreloaded_gateway.client() as client:
        created = client.post("/api/scripts", json={"file": "limit.lua",
                                                    "source": "function wsInit() end\n"})
        assert created.status_code == 201, created.text
        listed = client.get("/api/scripts").json()["scripts"]
        assert [(s["file"], s["name"], s["enabled"]) for s in listed] == [
            ("limit.lua", "limit", False)]
        page = client.get("/scripts").text
        assert '<tr data-file="limit.lua">' in page
        assert client.get("/api/scripts/limit/source").text == "function wsInit() end\n"
        # Listed but not loaded: enabling it says when it starts, not that it is not listed.
        early = client.post("/api/scripts/limit/enable")
        assert early.status_code == 422
        assert early.json()["error"] == ("name: limit.lua was saved a moment ago; the gateway "
                                         "starts it with the configuration reload, within "
                                         "seconds")
        second = client.post("/scripts", data={"csrf": client.headers["X-CSRF-Token"]},
                             files={"script": ("other.lua", b"x = 1\n")})
        assert second.status_code == 200, second.text
        assert '<tr data-file="other.lua">' in second.text
        assert '<tr data-file="limit.lua">' in second.text
        assert client.delete("/api/scripts/limit").json() == {"deleted": "limit.lua"}
        assert [s["file"] for s in client.get("/api/scripts").json()["scripts"]] == [
            "other.lua"]
    gateway = unreloaded_gateway.gateway
    assert gateway is not None and gateway.site is not None
    assert gateway.site.scripts.scripts == ()        # the configuration in force never had them


def test_a_saved_device_is_listed_in_the_answer_after_its_save(
        unreloaded_gateway: RunningGateway) -> None:
    port = unreloaded_gateway.simulators[0].port
    row = {"index": "7", "interface": f"127.0.0.1:{port}", "name": "inverter_7",
           "address": "7", "acqPeriodS": "10", "timeoutMs": "1000", "serialNumber": "",
           "parameters": "", "category": "Inverter", "model": "Demo",
           "defFile": "demo_inverter.csv"}
    with unreloaded_gateway.client() as client:
        assert client.post("/api/devices", json=row).status_code == 201
        devices = {d["index"]: d for d in client.get("/api/devices").json()["devices"]}
        assert list(devices) == ["1", "2", "7"]
        assert devices["7"]["state"] == "waiting" and devices["7"]["name"] == "inverter_7"
        shown = client.get("/api/devices/7").json()
        assert shown["device"]["name"] == "inverter_7"
        assert shown["values"]["values"] == []
        assert client.get("/api/devices/7/values").json()["values"] == []
        assert client.get("/api/devices/8/values").status_code == 404
        # The form's save leads to the list, which shows the row.
        csrf = client.headers["X-CSRF-Token"]
        saved = client.post("/devices/7/edit", data={**row, "name": "renamed", "csrf": csrf})
        assert saved.status_code == 303, saved.text
        listing = client.get(saved.headers["location"]).text
        assert '<tr data-index="7">' in listing and ">renamed</a>" in listing
        assert client.get("/api/devices/7").json()["device"]["name"] == "renamed"
        assert "renamed" in client.get("/devices/7").text
        assert client.delete("/api/devices/1").status_code == 200
        assert [d["index"] for d in client.get("/api/devices").json()["devices"]] == ["2", "7"]
        assert client.get("/api/devices/1").status_code == 404
    assert _in_force(unreloaded_gateway) == ["1", "2"]


def test_saved_schedules_and_servers_give_the_next_connection_times(
        unreloaded_gateway: RunningGateway) -> None:
    with unreloaded_gateway.client() as client:
        before = client.get("/api/schedule/next").json()["servers"]
        assert list(before) == ["1"] and len(before["1"]) == 10
        answer = client.put("/api/config/schedules", json={
            "s1_0_Id": "1", "s1_0_Type": "everyday", "s1_0_StartTime": "03:17:00",
            "s1_0_Interval": "1440", "s1_0_Count": "1",
            "s2_0_Id": "1", "s2_0_Type": "everyday", "s2_0_StartTime": "04:21:00",
            "s2_0_Interval": "1440", "s2_0_Count": "1"})
        assert answer.status_code == 200, answer.text
        answer = client.put("/api/config/server2", json={
            "SERVER2_Type": "dir", "DIR2_Path": str(unreloaded_gateway.folder / "server2")})
        assert answer.status_code == 200, answer.text
        for shown in (client.get("/api/schedule/next").json()["servers"],
                      client.get("/api/config").json()["nextConnections"]):
            assert list(shown) == ["1", "2"], shown
            assert len(shown["1"]) == 10 and all(" 03:17:00 " in t for t in shown["1"]), shown
            assert all(" 04:21:00 " in t for t in shown["2"]), shown
        page = client.get("/configuration").text
        assert page.count(" 03:17:00 ") >= 10
    gateway = unreloaded_gateway.gateway
    assert gateway is not None and gateway.site is not None
    assert (gateway.config_dir / "CONFIG" / f"{UID}_var.ini").read_bytes() != \
        b"SCHEDULE_Params[0]=1|everyday|00:00:00|60|24\n"
    assert gateway.site.var_ini.schedules(2) == ()


def test_a_rejected_daq_csv_on_disk_shows_the_rows_in_force_and_why(
        unreloaded_gateway: RunningGateway) -> None:
    """A hand edit the gateway does not load: the list shows the rows it polls, and says why
    the file on disk is not in force."""
    daq = unreloaded_gateway.config_dir / "CONFIG" / f"{UID}_daq.csv"
    daq.write_bytes(daq.read_bytes() + b"x;y\n")
    with unreloaded_gateway.client() as client:
        listed = client.get("/api/devices").json()
        assert [d["index"] for d in listed["devices"]] == ["1", "2"]
        assert listed["warnings"] == [
            f"{UID}_daq.csv:4: index: 'x' is not 0..65535, IO or TIC1; file rejected"]
        page = client.get("/devices").text
        assert "daq.csv as saved:" in page and "is not 0..65535, IO or TIC1" in page


def test_a_script_upload_answers_the_warnings_of_its_own_files_only(
        unreloaded_gateway: RunningGateway) -> None:
    """Every warning of the configuration (a daq.csv row copied with its address) was answered
    as the upload's, on the Scripts page in the red box of problems."""
    port = unreloaded_gateway.simulators[0].port
    with unreloaded_gateway.client() as client:
        copy = client.post("/api/devices", json={
            "index": "7", "interface": f"127.0.0.1:{port}", "name": "copy", "address": "1",
            "acqPeriodS": "10", "defFile": "demo_inverter.csv"})
        assert copy.status_code == 201 and len(copy.json()["warnings"]) == 1, copy.text
        scl = unreloaded_gateway.config_dir / "CONFIG" / f"{UID}_scl.ini"
        scl.write_bytes(b"VENDOR_Note=kept\n")
        created = client.post("/api/scripts", json={"file": "a.lua", "source": "x = 1\n"})
        assert created.status_code == 201, created.text
        assert created.json()["warnings"] == [f"{UID}_scl.ini:1: VENDOR_Note: unknown key; "
                                              "ignored"]
        page = client.post("/scripts", data={"csrf": client.headers["X-CSRF-Token"]},
                           files={"script": ("b.lua", b"x = 2\n")})
        assert page.status_code == 200, page.text
        assert 'id="scripts-problems"' not in page.text and "shares" not in page.text
        assert 'id="warnings"' in page.text and "VENDOR_Note: unknown key" in page.text
