"""Device edits through the JSON API on a running gateway: every change validated whole by
`config`, errors per field, nothing written when refused, the gateway reloading what is."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import httpx
import pytest
from waiting import wait_until_sync
from web_support import UID, RunningGateway, add_io

from pipeline.drivers.modbus.simulator import TcpSimulator
from pipeline.service.demo import DemoInverter

#: The gateway reloads and polls on its own time: asked every 0.2 s, up to 20 s.
_eventually = functools.partial(wait_until_sync, within_s=20.0, every=0.2)


def _daq(gateway: RunningGateway) -> bytes:
    return (gateway.config_dir / "CONFIG" / f"{UID}_daq.csv").read_bytes()


def _indexes(client: httpx.Client) -> list[str]:
    return [d["index"] for d in client.get("/api/devices").json()["devices"]]


def _row(port: int, **changes: str) -> dict[str, str]:
    row = {"index": "7", "interface": f"127.0.0.1:{port}", "name": "inverter_7",
           "address": "1", "acqPeriodS": "10", "timeoutMs": "1000", "serialNumber": "",
           "parameters": "", "category": "Inverter", "model": "Demo",
           "defFile": "demo_inverter.csv"}
    row.update(changes)
    return row


def test_add_edit_duplicate_delete(fresh_gateway: RunningGateway) -> None:
    port = fresh_gateway.simulators[0].port
    with fresh_gateway.client() as client:
        answer = client.post("/api/devices", json=_row(port))
        assert answer.status_code == 201, answer.text
        _eventually(lambda: "7" in _indexes(client))
        # Polled by the reloaded gateway: live values come.
        _eventually(lambda: bool(client.get("/api/devices/7/values").json()["values"]))
        answer = client.put("/api/devices/7", json=_row(port, name="renamed"))
        assert answer.status_code == 200, answer.text
        _eventually(lambda: client.get("/api/devices/7").json()["device"]["name"] == "renamed")
        answer = client.post("/api/devices/7/duplicate")
        assert answer.status_code == 201, answer.text
        # Rows 7 and 8 poll inverter 1's unit: saved, and said.
        assert answer.json()["warnings"] == [
            f"{UID}_daq.csv:{line}: address: index {index} shares 127.0.0.1:{port} unit 1 "
            "with index 1 at line 2: the unit is polled twice; both kept"
            for line, index in ((4, 7), (5, 8))]
        assert answer.json()["device"]["index"] == "8"
        assert answer.json()["device"]["name"] == "renamed_copy"
        _eventually(lambda: "8" in _indexes(client))
        assert client.delete("/api/devices/8").status_code == 200
        assert client.delete("/api/devices/7").status_code == 200
        _eventually(lambda: _indexes(client) == ["1", "2"])
        assert client.delete("/api/devices/7").status_code == 404


def test_a_row_copied_with_its_address_is_saved_with_a_warning(
        fresh_gateway: RunningGateway, caplog: pytest.LogCaptureFixture) -> None:
    """A second row of one unit (same interface and address) is a warning, not a refusal: the
    form and the API save it and say so, the Devices page shows it, the gateway's load logs
    it. An error of the same save still refuses it, naming its field."""
    port = fresh_gateway.simulators[0].port
    shared = (f"{UID}_daq.csv:4: address: index 7 shares 127.0.0.1:{port} unit 1 with index 1 "
              "at line 2: the unit is polled twice; both kept")
    with fresh_gateway.client() as client:
        refused = client.post("/api/devices", json=_row(port, acqPeriodS="often"))
        assert refused.status_code == 422 and set(refused.json()["fields"]) == {"acqPeriodS"}
        with caplog.at_level(logging.WARNING, logger="sunpm.config"):
            answer = client.post("/api/devices", json=_row(port))
            assert answer.status_code == 201, answer.text
            assert answer.json()["warnings"] == [shared]
            assert b"\n7;127.0.0.1:" in _daq(fresh_gateway)
            assert shared in client.get("/devices").text
            assert client.get("/api/devices").json()["warnings"] == [shared]
            # Loaded and polled under both indexes; the load's log says which rows.
            _eventually(lambda: bool(client.get("/api/devices/7/values").json()["values"]))
            _eventually(lambda: any(r.levelno == logging.WARNING and r.getMessage() == shared
                                    for r in caplog.records))
        # The device form: saved (303 to the list), the list showing the warning.
        form = {**_row(port, index="8", name="inverter_8"), "csrf": client.headers["X-CSRF-Token"]}
        page = client.post("/devices/new", data=form)
        assert page.status_code == 303, page.text
        listing = client.get(page.headers["location"]).text
        assert 'id="warnings"' in listing and "index 8 shares" in listing
        assert '<tr data-index="8">' in listing


def test_an_index_with_leading_zeros_is_the_index(web_gateway: RunningGateway) -> None:
    """docs/formats.md §1.1: `007` in the index column is device 7. Written as typed, the row
    was answered and linked as `007`, which named no device (DELETE /api/devices/007: 404)."""
    port = web_gateway.simulators[0].port
    with web_gateway.client() as client:
        answer = client.post("/api/devices", json=_row(port, index="007", address="7"))
        assert answer.status_code == 201, answer.text
        assert answer.json()["device"]["index"] == "7"
        assert "\n7;127.0.0.1:" in _daq(web_gateway).decode()
        assert "7" in _indexes(client)
        again = client.post("/api/devices", json=_row(port, index="0007", name="other",
                                                      address="8"))
        assert again.status_code == 422
        assert again.json()["fields"] == {"index": ["index 7 is already used"]}
        page = client.post("/devices/new", data={
            **_row(port, index="01", name="other", address="8"),
            "csrf": client.headers["X-CSRF-Token"]})
        assert page.status_code == 422 and "index 1 is already used" in page.text
        assert client.delete("/api/devices/7").status_code == 200
        assert "7" not in _indexes(client)


def test_field_errors_come_from_config_and_nothing_is_written(
        web_gateway: RunningGateway) -> None:
    before = _daq(web_gateway)
    port = web_gateway.simulators[0].port
    with web_gateway.client() as client:
        answer = client.post("/api/devices", json=_row(port, address="300",
                                                       defFile="missing.csv"))
        assert answer.status_code == 422
        body = answer.json()
        assert set(body["fields"]) == {"address", "defFile"}, body
        assert body["fields"]["address"] == ["'300' is outside 1..240"]
        assert any("missing.csv" in m for m in body["fields"]["defFile"])
        assert all(p["file"] == f"{UID}_daq.csv" for p in body["problems"])
        assert body["error"] == body["problems"][0]["text"]
        answer = client.post("/api/devices", json=_row(port, acqPeriodS="often"))
        assert answer.status_code == 422, answer.text
        assert set(answer.json()["fields"]) == {"acqPeriodS"}, answer.json()
        # An index already used; a `;` that would split the row.
        answer = client.post("/api/devices", json=_row(port, index="1"))
        assert answer.status_code == 422 and set(answer.json()["fields"]) == {"index"}
        answer = client.post("/api/devices", json=_row(port, name="a;b"))
        assert answer.status_code == 422 and set(answer.json()["fields"]) == {"name"}
        # A row of empty fields (daq.csv would skip it as a blank line): not "added", and not
        # replacing (deleting) device 1.
        for answer in (client.post("/api/devices", json={}),
                       client.put("/api/devices/1", json=dict.fromkeys(_row(port), ""))):
            assert answer.status_code == 422, answer.text
            assert answer.json()["fields"] == {"index": ["missing (0..65535, IO or TIC1)"]}
        # Not a JSON object, unknown fields, unknown device.
        assert client.post("/api/devices", content=b"[1]",
                           headers={"Content-Type": "application/json"}).status_code == 400
        assert client.post("/api/devices", json={"colour": "red"}).status_code == 400
        assert client.put("/api/devices/99", json=_row(port)).status_code == 404
    assert _daq(web_gateway) == before
    assert not list((web_gateway.config_dir / "CONFIG").glob("*.new"))


def test_a_script_tag_as_device_name_is_text(fresh_gateway: RunningGateway) -> None:
    evil = "<script>alert(1)</script>"
    port = fresh_gateway.simulators[0].port
    with fresh_gateway.client() as client:
        answer = client.post("/api/devices", json=_row(port, name=evil))
        assert answer.status_code == 201, answer.text
        _eventually(lambda: "7" in _indexes(client))
        escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
        # The dashboard's status is refreshed every 2 s.
        _eventually(lambda: escaped in client.get("/").text)
        for path in ("/devices", "/devices/7", "/devices/7/edit", "/"):
            page = client.get(path).text
            assert evil not in page, path
            assert escaped in page, path
        assert client.get("/api/devices/7").json()["device"]["name"] == evil


def test_history_buckets_from_the_store(web_gateway: RunningGateway) -> None:
    """The demo inverter's voltage (Index 6, action 4) once recorded: buckets inside the span,
    each mean between its minimum and maximum, the values the device gave."""
    with web_gateway.client() as client:
        def recorded() -> bool:
            data = client.get("/api/devices/1/history?var=6&span=1h").json()
            return bool(data["x"])

        wait_until_sync(recorded, 40, every=0.2)
        data = client.get("/api/devices/1/history?var=6&span=1h").json()
        assert data["end"] - data["start"] == 3600
        assert len(data["x"]) == len(data["mean"]) == len(data["min"]) == len(data["max"])
        assert len(data["x"]) <= 500
        assert all(data["start"] <= x <= data["end"] for x in data["x"])
        for low, mean, high in zip(data["min"], data["mean"], data["max"], strict=True):
            assert 200 < low <= mean <= high < 260      # 230 V ± 2 (docs of the demo plant)
        # An action-2 variable (power, Index 8) keeps its records' min and max.
        power = client.get("/api/devices/1/history?var=8&span=24h").json()
        assert all(lo <= m <= hi for lo, m, hi in zip(power["min"], power["mean"],
                                                      power["max"], strict=True))
        assert client.get("/api/devices/1/history?var=6&span=2y").status_code == 400
        assert client.get("/api/devices/1/history?var=x").status_code == 400
        assert client.get("/api/devices/99/history?var=6").status_code == 404
        unknown = client.get("/api/devices/1/history?var=999&span=7d")
        assert unknown.status_code == 404
        assert unknown.json() == {"error": "inverter_1: no variable 999"}


def test_write_a_variable_and_ask_for_parameters(web_gateway: RunningGateway) -> None:
    with web_gateway.client() as client:
        _eventually(lambda: bool(client.get("/api/devices/1/values").json()["values"]))
        answer = client.post("/api/devices/1/write", json={"variable": "St", "value": "4"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"device": "1", "variable": 16, "name": "St", "written": 4}
        # docs/formats.md §1.1's numbers only, refused naming the field: `Decimal()` alone
        # would take full-width digits, `1_000`, NaN and Infinity.
        for text in ("lots", "\uff14", "1_000", "nan", "infinity", " +4", "1e999999999"):
            answer = client.post("/api/devices/1/write", json={"variable": "16", "value": text})
            assert answer.status_code == 422, (text, answer.text)
            message = f"{text.strip()!r} is not a number"
            assert answer.json()["error"] == f"value: {message}"
            assert [(p["field"], p["message"]) for p in answer.json()["problems"]] == \
                [("value", message)]
        # An Index with leading zeros is the Index, as in a command (docs/formats.md §12.3).
        answer = client.post("/api/devices/1/write", json={"variable": "016", "value": "4"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["variable"] == 16
        # A value the register cannot hold: the device layer refuses it, nothing is sent.
        answer = client.post("/api/devices/1/write", json={"variable": 16, "value": 70000})
        assert answer.status_code == 409, answer.text
        for raw in (False, True):
            answer = client.post("/api/devices/1/write", json={
                "variable": "W", "value": "1e999", "raw": raw})
            assert answer.status_code == 409, answer.text
        assert client.post("/api/devices/1/write",
                           json={"variable": "nope", "value": 1}).status_code == 404
        assert client.post("/api/devices/1/write", json={"value": 1}).status_code == 400
        for bad, error in (({"variable": None, "value": 1}, "variable: expected an Index or a Name"),
                           ({"variable": [16], "value": 1}, "variable: expected an Index or a Name"),
                           ({"variable": True, "value": 1}, "variable: expected an Index or a Name"),
                           ({"variable": 16, "value": None}, "value: expected a number or a text"),
                           ({"variable": 16, "value": {}}, "value: expected a number or a text")):
            answer = client.post("/api/devices/1/write", json=bad)
            assert (answer.status_code, answer.json()) == (400, {"error": error}), bad
        assert client.post("/api/devices/1/parameters").status_code == 200
        # Read after the next good poll: the device page shows the texts the inverter gave.
        read = _eventually(lambda: (p := client.get("/api/devices/1").json()["parameters"])
                           ["values"] and p)
        assert read["declared"] is True
        assert {p["name"]: p["value"] for p in read["values"]}["SN"] == "DEMO-0001"
        assert "DEMO-0001" in client.get("/devices/1").text
        assert client.post("/api/devices/99/parameters").status_code == 404
        page = client.post("/devices/1/write", data={
            "csrf": client.headers["X-CSRF-Token"], "variable": "16", "value": "x"})
        assert page.status_code == 422 and "is not a number" in page.text


@dataclass(slots=True)
class SwitchedInverter(DemoInverter):
    """The demo inverter whose state (St, an action-8 variable) the test sets."""

    state: int = 4

    def refresh(self, t_s: float) -> None:
        DemoInverter.refresh(self, t_s)
        self.holding[40108] = self.state


def test_the_dashboard_shows_the_alarms_of_the_day(fresh_gateway: RunningGateway) -> None:
    inverter = SwitchedInverter(number=1)
    sim = TcpSimulator({1: inverter})
    port = fresh_gateway.call(sim.start())
    assert isinstance(port, int)
    try:
        with fresh_gateway.client() as client:
            answer = client.post("/api/devices", json=_row(port, name="switched"))
            assert answer.status_code == 201, answer.text
            _eventually(lambda: bool(client.get("/api/devices/7/values").json().get("values")))
            # A change of St is an alarm, shown with the variable's configured Name.
            inverter.state = 7
            _eventually(lambda: any(a["text"] == "switched: St = 7" and a["source"] == "MODBUS"
                                    and a["device"] == "7"
                                    for a in client.get("/api/alarms").json()["alarms"]),
                        within_s=30)
            inverter.state = 2
            _eventually(lambda: "switched: St = 2" in client.get("/").text, within_s=30)
            alarms = client.get("/api/alarms").json()["alarms"]
            assert [a["text"] for a in alarms if a["device"] == "7"][:2] == [
                "switched: St = 2", "switched: St = 7"]      # newest first
    finally:
        fresh_gateway.call(sim.stop())


def test_the_io_editor_changes_the_io_definition_through_config(
        fresh_gateway: RunningGateway) -> None:
    with fresh_gateway.client() as client:
        name = add_io(fresh_gateway, client)
        path = fresh_gateway.config_dir / "DEF" / name
        editor = client.get("/api/devices/IO/io").json()
        rows = {r["index"]: r for r in editor["rows"]}
        assert rows[1]["kind"] == "analog input" and rows[1]["values"]["Name"] == "AI1"
        assert [m["label"] for m in rows[5]["modes"]] == ["ON/OFF contact", "S0 pulses"]
        assert rows[9]["kind"] == "relay" and rows[9]["modes"] == []
        before = path.read_bytes()
        answer = client.put("/api/devices/IO/io", json={"v1_CoefA": "lots", "v5_Action": "3",
                                                        "v2_Name": "a;b"})
        assert answer.status_code == 422
        assert set(answer.json()["fields"]) == {"v2_Name"}, answer.json()
        answer = client.put("/api/devices/IO/io", json={"v1_CoefA": "lots", "v5_Action": "3"})
        assert answer.status_code == 422
        fields = answer.json()["fields"]
        assert set(fields) == {"v1_CoefA", "v5_Action"}, fields
        assert fields["v5_Action"] == ["'3' is not 0, 1, 2, 4, 8 or 9"]
        assert path.read_bytes() == before
        page = client.post("/devices/IO/io", data={"v1_CoefA": "lots",
                                                   "csrf": client.headers["X-CSRF-Token"]})
        assert page.status_code == 422 and 'id="err-v1_CoefA"' in page.text
        assert 'value="lots"' in page.text
        # An irradiance sensor on AI1 (0-10 V, 0..1000 W/m2), DI1 counting S0 pulses.
        answer = client.put("/api/devices/IO/io", json={
            "v1_Name": "irradiance", "v1_Info3": "2", "v1_CoefA": "100", "v1_CoefB": "0",
            "v1_Unit": "W/m2", "v1_Action": "4", "v5_Info3": "2", "v5_Name": "S0_1",
            "v5_Unit": "Wh", "v5_Action": "4"})
        assert answer.status_code == 200, answer.text
        text = path.read_text()
        assert "1;1;1;2;;irradiance;;100;0;W/m2;4\n" in text
        assert "5;2;1;2;;S0_1;;1;0;Wh;4\n" in text
        assert text.startswith("io;WebdynSunPM;Webdyn;ioSunPM\n")
        assert client.get("/api/devices/1/io").status_code == 404
        _eventually(lambda: any(v["name"] == "irradiance" for v in
                                client.get("/api/devices/IO").json()["variables"]))
