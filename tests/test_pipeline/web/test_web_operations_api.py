"""The discovery, diagnostics, scripts and system API (docs/web.md) against a running gateway:
field errors as 422 with the field named, conflicts as 409, writes refused without the CSRF token,
downloads that hold what the gateway captured or delivered."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import math
import tarfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from waiting import wait_until_sync
from web_support import UID, RunningGateway, running_gateway

from config import load_site
from pipeline.drivers.modbus.simulator import TcpSimulator
from pipeline.service.demo import SERVER_TREE, DemoInverter
from store.events import journal_items

TICKER = """header = { version = "1.0", label = "<script>alert(1)</script>", name = "ticker" }
function wsInit()
  wd.every(0.5, function() wd.log("tick <b>") end)
end
"""


def _until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    return wait_until_sync(check, timeout_s, what=what, every=0.2)


def _problems(answer: httpx.Response) -> dict[str, str]:
    assert answer.status_code == 422, answer.text
    return {p["field"]: p["message"] for p in answer.json()["problems"]}


def _rows(config_dir: Path) -> list[tuple[object, ...]]:
    return [(d.index, d.name, d.interface, d.address, d.acq_period_s, d.def_file)
            for d in load_site(config_dir).daq.devices]


def test_discovery_refuses_bad_parameters_naming_the_field(web_gateway: RunningGateway) -> None:
    with web_gateway.client() as client:
        assert _problems(client.post("/api/discovery", json={
            "interface": "ethernet1", "ip": "127.0.0.1", "firstAddress": 30,
            "lastAddress": 20})) == {"firstAddress": "firstAddress 30 is above lastAddress 20"}
        assert _problems(client.post("/api/discovery", json={
            "interface": "ethernet1"})) == {"ip": "ip is required for ethernet1"}
        assert _problems(client.post("/api/discovery", json={
            "interface": "ethernet1", "ip": "127.0.0.1", "timeout": "soon"})) == {
            "timeout": "expected a whole number, got 'soon'"}
        assert _problems(client.post("/api/discovery", json={
            "interface": "serial2"})) == {"interface": "serial2 has no path"}
        # A misspelt parameter was left out: the run scanned port 502.
        assert _problems(client.post("/api/discovery", json={
            "interface": "ethernet1", "ip": "127.0.0.1", "ports": "1502"})) == {
            "ports": "not a discovery parameter (interface, ip, port, firstAddress, "
                     "lastAddress, maxDevices, timeout)"}
        assert client.post("/api/discovery/import", json={"rows": [0]}).status_code == 409
        assert client.get("/api/discovery").json() == {"state": "idle"}


def _hostile_inverter() -> DemoInverter:
    """A SunSpec inverter whose manufacturer (`Mn`) is markup."""
    device = DemoInverter(number=2)
    text = b"<img src=x onerror=alert(1)>".ljust(32, b"\0")
    device.set_words(40004, [int.from_bytes(text[k:k + 2], "big") for k in range(0, 32, 2)])
    return device


def test_a_discovery_runs_streams_its_lines_and_imports(tmp_path: Path) -> None:
    with running_gateway(tmp_path, inverters=1) as gateway:
        sim = TcpSimulator({2: DemoInverter(number=1), 4: DemoInverter(number=3),
                            5: _hostile_inverter()})
        port = gateway.call(sim.start())
        try:
            with gateway.client() as client:
                started = client.post("/api/discovery", json={
                    "interface": "ethernet1", "ip": "127.0.0.1", "port": port,
                    "firstAddress": 1, "lastAddress": 5, "timeout": 100})
                assert started.status_code == 202, started.text
                assert started.json()["state"] == "running"
                busy = client.post("/api/discovery", json={"ip": "127.0.0.1", "port": port})
                assert (busy.status_code, busy.json()) == (
                    409, {"error": "discoverDevices: a discovery is already running"})
                lines: list[str] = []

                def ended() -> dict[str, Any] | None:
                    state = client.get("/api/discovery", params={"after": len(lines)}).json()
                    lines.extend(state["lines"])
                    return state if state["state"] != "running" else None

                state = _until(ended, 30, "end of the discovery")
                assert state["state"] == "done" and state["scanned"] == 5
                assert lines[-1].endswith(":End of SunSpec detection on ethernet1. 3 devices "
                                          "found.")
                assert [(d["unitId"], d["serialNumber"], d["alreadyConfigured"])
                        for d in state["devices"]] == [(2, "DEMO-0001", False),
                                                       (4, "DEMO-0003", False),
                                                       (5, "DEMO-0002", False)]
                assert state["devices"][2]["manufacturer"] == "<img src=x onerror=alert(1)>"
                shown = client.get("/discovery").text
                assert "&lt;img src=x onerror=alert(1)&gt;" in shown and "<img" not in shown
                before = _rows(gateway.config_dir)
                bad = client.post("/api/discovery/import", json={"rows": [7]})
                assert _problems(bad) == {"rows": "discovery: no device 7 in the results (0..2)"}
                imported = client.post("/api/discovery/import", json={"rows": [1]})
                assert imported.status_code == 200, imported.text
                assert imported.json()["added"] == [f"ethernet_127.0.0.1_{port}_4"]
                again = client.post("/api/discovery/import", json={"rows": [0]})
                assert again.status_code == 409
                assert client.delete("/api/discovery").json() == {"state": "idle"}
            site = load_site(gateway.config_dir)
            # Added after the rows there were, which are left as they were.
            assert _rows(gateway.config_dir)[:-1] == before
            row = site.daq.devices[-1]
            assert (row.name, row.address, row.interface) == (
                f"ethernet_127.0.0.1_{port}_4", 4, f"127.0.0.1:{port}")
            assert (gateway.config_dir / "DEF" / row.def_file).is_file()
        finally:
            gateway.call(sim.stop())


def test_a_trace_is_started_tailed_and_downloaded(web_gateway: RunningGateway) -> None:
    with web_gateway.client() as client:
        assert _problems(client.post("/api/traces", json={"interface": "ethernet",
                                                          "minutes": 2000})) == {
            "minutes": "2000 is outside 0..1440"}
        assert "interface" in _problems(client.post("/api/traces", json={
            "interface": "modem", "minutes": 1}))
        answer = client.post("/api/traces", json={"interface": "ethernet", "minutes": 1})
        assert answer.status_code == 200 and answer.json()["running"]
        tail = _until(lambda: client.get("/api/traces/tail", params={
            "interface": "ethernet"}).json()["lines"], 30, "traced frames")
        assert all("127.0.0.1:" in line for line in tail)
        zipped = client.get("/api/traces/download", params={"interface": "ethernet"})
        assert zipped.status_code == 200
        assert zipped.headers["content-disposition"].startswith(
            f'attachment; filename="{UID}_traces_')
        with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
            [name] = archive.namelist()
            assert name.startswith(f"{UID}_ethernet_")
            assert len(archive.read(name).decode().splitlines()) >= len(tail)
        stopped = client.post("/api/traces", json={"interface": "ethernet", "minutes": 0})
        assert stopped.json()["running"] is False
        # A device's Diag link: the diagnostics page starts on the device's interface.
        devices = client.get("/devices").text
        assert '<a href="/diagnostics?interface=ethernet" class="diag">diag</a>' in devices
        assert [d["traceInterface"] for d in client.get("/api/devices").json()["devices"]
                if d["index"] in ("1", "2")] == ["ethernet", "ethernet"]
        serial = client.get("/diagnostics", params={"interface": "serial2"}).text
        assert '<option value="serial2" selected>' in serial
        bad = client.get("/api/traces/download", params={"interface": "modem"})
        assert bad.status_code == 400 and "unknown interface 'modem'" in bad.json()["error"]
        # The page's download link: the page again, the error beside the interface.
        page = client.get("/diagnostics/download", params={"interface": "modem"})
        assert page.status_code == 422 and 'id="e-interface"' in page.text
        assert "unknown interface &#39;modem&#39;" in page.text


def test_a_script_goes_through_its_whole_life_by_the_api(web_gateway: RunningGateway) -> None:
    with web_gateway.client() as client:
        bad = client.post("/api/scripts", json={"file": "../x.lua", "source": "x = 1"})
        assert _problems(bad) == {"file": "'../x.lua': a script is a plain file name ending .lua"}
        # U+2028 ends a line for Python: the name was listed in scl.ini, its file left staged
        # as `.new`, and the configuration rejected (every script stopped).
        scl = web_gateway.config_dir / "CONFIG" / f"{UID}_scl.ini"
        listed = scl.read_bytes() if scl.exists() else None
        bad = client.post("/api/scripts", json={"file": "x\u2028y.lua", "source": "x = 1"})
        assert bad.status_code == 422, bad.text
        assert "control character" in bad.text
        assert (scl.read_bytes() if scl.exists() else None) == listed
        assert not list((web_gateway.config_dir / "SCRIPT").glob("*.new"))
        created = client.post("/api/scripts", json={"file": "ticker.lua", "source": TICKER})
        assert created.status_code == 201, created.text

        def running() -> dict[str, Any] | None:
            listed = client.get("/api/scripts").json()["scripts"]
            return next((s for s in listed if s["name"] == "ticker" and s["enabled"]), None)

        script = _until(running, 30, "script enabled after the reload")
        assert script["label"] == "<script>alert(1)</script>"
        lines = _until(lambda: client.get("/api/scripts/ticker/log").json()["lines"], 20,
                       "script log lines")
        assert "INFO script:ticker: tick <b>" in lines[0]
        page = client.get("/scripts").text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
        log_page = client.get("/scripts/ticker.lua/log").text
        assert "tick &lt;b&gt;" in log_page
        assert client.post("/api/scripts/ticker/disable").json()["enabled"] is False
        assert client.post("/api/scripts/ticker.lua/enable").json()["enabled"] is True
        assert client.get("/api/scripts/ticker/source").text == TICKER
        assert client.post("/api/scripts/nosuch/enable").status_code == 404
        assert client.delete("/api/scripts/ticker").json() == {"deleted": "ticker.lua"}
        assert not (web_gateway.config_dir / "SCRIPT" / "ticker.lua").exists()
        _until(lambda: client.get("/api/scripts").json()["scripts"] == [], 30,
               "script gone after the reload")


def test_writes_without_the_csrf_token_are_refused(web_gateway: RunningGateway) -> None:
    with web_gateway.client() as client:
        del client.headers["X-CSRF-Token"]
        for path, body in (("/api/discovery", {"ip": "127.0.0.1"}),
                           ("/api/traces", {"interface": "ethernet", "minutes": 1}),
                           ("/api/scripts", {"file": "a.lua", "source": "x = 1"}),
                           ("/api/system/connect", {"server": 1}),
                           ("/api/system/factory", {"confirm": UID})):
            answer = client.post(path, json=body)
            assert answer.status_code == 403, (path, answer.text)
        assert client.get("/api/discovery").json() == {"state": "idle"}
        assert not (web_gateway.config_dir / "SCRIPT" / "a.lua").exists()


def test_system_actions_answer_with_their_field(web_gateway: RunningGateway) -> None:
    for sub in SERVER_TREE:          # the folders of a receiving server's tree
        (web_gateway.folder / "server" / sub).mkdir(parents=True, exist_ok=True)
    server_data = web_gateway.folder / "server" / "DATA"
    with web_gateway.client() as client:
        _until(lambda: all(d["lastRecord"] for d in client.get("/api/devices").json()[
            "devices"]), 40, "a record of each inverter")
        before = set(server_data.glob("*.csv.gz")) if server_data.is_dir() else set()
        assert client.post("/api/system/connect", json={"server": 1}).json()["result"] == "OK"
        _until(lambda: set(server_data.glob(f"{UID}_*.csv.gz")) - before, 30,
               "a DATA file delivered")
        assert _problems(client.post("/api/system/connect", json={"server": 2})) == {
            "server": "connect: server 2 is not configured"}
        assert _problems(client.post("/api/system/factory", json={"confirm": "nope"})) == {
            "confirm": "type the gateway's uid to confirm the factory reset"}
        assert _problems(client.post("/api/system/update", json={"url": "http://x/p.spm"})) == {
            "package": "updateFirmware: SYSTEM_UpdateCommand is not set"}
        assert client.post("/api/system/dance").status_code == 404
        now = time.time()
        start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600))
        end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 60))
        logs = client.get("/api/logs", params={"from": start, "to": end})
        assert logs.status_code == 200 and "INFO system: sunpm started." in logs.text
        assert _problems(client.get("/api/logs", params={"from": end, "to": start})) == {
            "to": "must be after 'from'"}
        assert _problems(client.get("/api/logs", params={"from": "yesterday", "to": end})) == {
            "from": "'yesterday' is not a date and time (2021-02-05T09:15:00Z)"}
        # Beyond the store's 64-bit nanoseconds: a 500 from the store's comparison.
        assert _problems(client.get("/api/logs", params={"from": start,
                                                         "to": "9999-12-31T23:59:59Z"})) == {
            "to": "'9999-12-31T23:59:59Z' is outside 1970-01-01..2262-04-11"}
        assert _problems(client.get("/api/export", params={
            "server": 1, "from": "0001-01-01T00:00:00+14:00", "to": end})) == {
            "from": "'0001-01-01T00:00:00+14:00' is outside 1970-01-01..2262-04-11"}
        assert _problems(client.get("/api/export", params={
            "server": 1, "from": "1969-12-31", "to": end})) == {
            "from": "'1969-12-31' is outside 1970-01-01..2262-04-11"}
        exported = client.get("/api/export", params={"server": 1, "from": start, "to": end})
        assert exported.status_code == 200, exported.text
        delivered = {p.name: p.read_bytes() for p in server_data.glob(f"{UID}_*.csv.gz")}
        with zipfile.ZipFile(io.BytesIO(exported.content)) as archive:
            rebuilt = {n.removeprefix("DATA/"): archive.read(n) for n in archive.namelist()
                       if n.startswith("DATA/")}
        for name, data in delivered.items():
            assert rebuilt[name] == data
        assert _problems(client.get("/api/export", params={
            "server": 2, "from": start, "to": end})) == {"server": "server 2 is not configured"}


def _files_in_force(gateway: RunningGateway) -> dict[str, bytes]:
    assert gateway.gateway is not None and gateway.gateway.site is not None
    return dict(gateway.gateway.site.files())


def test_the_debug_archive_is_made_and_downloaded(web_gateway: RunningGateway) -> None:
    config_ini = web_gateway.config_dir / "CONFIG" / f"{UID}_config.ini"
    with web_gateway.client() as client:
        assert client.put("/api/config/server1", json={
            "FTP_Password": "archived-s3cret"}).status_code == 200
        assert b"archived-s3cret" in config_ini.read_bytes()
        deadline = time.monotonic() + 20
        while b"archived-s3cret" not in _files_in_force(web_gateway)[f"CONFIG/{UID}_config.ini"]:
            assert time.monotonic() < deadline, "the new configuration was not loaded"
            time.sleep(0.2)
        answer = client.post("/api/system/archive")
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/gzip"
        disposition = answer.headers["content-disposition"]
        name = disposition.partition('filename="')[2].rstrip('"')
        assert name.startswith(f"{UID}_SYSTEME_") and name.endswith(".tar.gz"), disposition
        with tarfile.open(fileobj=io.BytesIO(answer.content), mode="r:gz") as tar:
            members = set(tar.getnames())
            status = json.loads(tar.extractfile("status.json").read())  # type: ignore[union-attr]
            log = tar.extractfile("log.txt").read().decode()  # type: ignore[union-attr]
            archived_ini = tar.extractfile(  # type: ignore[union-attr]
                f"config/CONFIG/{UID}_config.ini").read().decode()
        assert f"config/CONFIG/{UID}_daq.csv" in members
        # Passwords are never sent to a browser, nor to the server's /LOG: shown as set.
        assert "FTP_Password=***" in archived_ini and "DIR_Path=" in archived_ini
        assert b"archived-s3cret" not in answer.content
        assert b"archived-s3cret" not in gzip.decompress(answer.content)
        assert status["uid"] == UID
        assert "INFO system: sunpm started." in log
        # The same file waits in the data folder for server 1's next session.
        assert (web_gateway.data_dir / "archives" / name).read_bytes() == answer.content
        # The page's form answers the download too.
        page = client.post("/system/archive")
        assert page.status_code == 200 and page.content[:2] == b"\x1f\x8b"


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(["interface", "minutes", "server", "rows", "from",
                                             "to", "confirm"]),
                            st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                                      st.floats(allow_nan=True), st.text(max_size=30),
                                      st.lists(st.integers(-5, 5), max_size=3)),
                            max_size=4))
def test_fuzzed_bodies_get_a_clear_refusal_never_a_crash(web_gateway: RunningGateway,
                                                         body: dict[str, Any]) -> None:
    with web_gateway.client() as client:
        for path in ("/api/traces", "/api/discovery/import", "/api/system/connect",
                     "/api/system/factory"):
            # Encoded here: Python's encoder writes NaN and Infinity, which strict JSON (and
            # httpx's `json=`) refuses; the server must answer them with 400.
            answer = client.post(path, content=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
            assert answer.status_code in (200, 400, 409, 422), (path, body, answer.text)
            assert answer.json()
            if answer.status_code >= 400:
                assert answer.json()["error"]
            if any(isinstance(v, float) and not math.isfinite(v) for v in body.values()):
                assert answer.status_code == 400, (path, body, answer.text)
        for path in ("/api/logs", "/api/export", "/api/traces/tail"):
            query = {k: str(v) for k, v in body.items()}
            answer = client.get(path, params=query)
            assert answer.status_code in (200, 422), (path, query, answer.text)
        # Stop whatever trace the body started.
        client.post("/api/traces", json={"interface": str(body.get("interface", "")),
                                         "minutes": 0})


def test_a_command_runs_through_the_executor(web_gateway: RunningGateway) -> None:
    with web_gateway.client() as client:
        status = client.post("/api/commands", json={"rpcName": "sunpm.status",
                                                    "callerId": "web-1"}).json()
        assert status["callerId"] == "web-1" and status["result"]["uid"] == UID
        assert client.post("/api/commands", json={"rpcName": "sunpm.nosuch"}).json() == {
            "error": "unknown command 'sunpm.nosuch'", "callerId": None}
        relay = client.post("/api/commands", json={"rpcName": "sunpm.setRelay",
                                                   "parameters": {"state": 3}}).json()
        assert relay["error"] == "setRelay: state must be 0 or 1, got 3"
        assert _problems(client.post("/api/commands", json={"rpcName": 7})) == {
            "rpcName": "expected '<script>.<command>', e.g. 'sunpm.status'"}
        assert _problems(client.post("/api/commands", json={
            "rpcName": "sunpm.status", "parameters": [1]})) == {"parameters": "expected an object"}
        assert _problems(client.post("/api/commands", json={
            "rpcName": "sunpm.status", "callerId": 1.5})) == {
            "callerId": "expected a string or an integer"}


def test_json_no_journal_can_hold_is_a_400_never_a_500(web_gateway: RunningGateway) -> None:
    """NaN, Infinity (an out-of-range number) and nesting past 32 levels: Python's decoder takes
    the first two and recurses on the third; a command with them could not be journaled."""
    deep = '{"rpcName": "sunpm.status", "parameters": {"a": ' + "[" * 50_000 + "]" * 50_000 + "}}"
    with web_gateway.client() as client:
        for body, error in [
                ('{"rpcName": "sunpm.setRelay", "parameters": {"state": NaN}}',
                 "body: invalid JSON: NaN is not a JSON number"),
                ('{"rpcName": "sunpm.setRelay", "parameters": {"state": 1e999}}',
                 "body: invalid JSON: 1e999 is out of range"),
                (deep, "body: invalid JSON: nested deeper than 32 levels")]:
            for path in ("/api/commands", "/api/devices", "/api/traces"):
                answer = client.post(path, content=body.encode(),
                                     headers={"Content-Type": "application/json"})
                assert answer.status_code == 400, (path, answer.text[:200])
            assert client.post("/api/commands", content=body.encode(), headers={
                "Content-Type": "application/json"}).json()["error"] == \
                f"expected a JSON object ({error})"
        # What is journaled stays readable: the next command runs.
        assert client.post("/api/commands", json={"rpcName": "sunpm.getParameters"}).json() == \
            {"result": "OK", "callerId": None}


def test_the_system_page_shows_the_sd_mirror(fresh_gateway: RunningGateway) -> None:
    card = fresh_gateway.folder / "card"
    card.mkdir()
    with fresh_gateway.client() as client:
        assert "no mirror (SD_MirrorPath is empty)" in client.get("/system").text
        answer = client.put("/api/config/storage", json={"SD_MirrorPath": str(card)})
        assert answer.status_code == 200, answer.text
        _until(lambda: f'<span class="good">ok</span>, mirror in {card}' in
               client.get("/system").text, 30, "the mirror on the System page")


def test_an_uploaded_package_is_checked_staged_and_installed(tmp_path: Path) -> None:
    installed = tmp_path / "installed.spm"
    installer = tmp_path / "install.sh"
    installer.write_text(f'#!/bin/sh\ncp "$1" {installed}\n')
    installer.chmod(0o755)
    package = b"sunpm update package\x00\x01"
    md5 = hashlib.md5(package, usedforsecurity=False).hexdigest()
    with running_gateway(tmp_path, inverters=1,
                         extra={"SYSTEM_UpdateCommand": str(installer)}) as gateway, \
            gateway.client() as client:
        def upload(name: str, data: bytes, checksum: str) -> httpx.Response:
            return client.post("/api/system/update", files={"package": (name, data)},
                               data={"md5": checksum})

        assert _problems(upload("wgapp_9.9.spm", package, "0" * 32)) == {
            "md5": f"checksum mismatch (expected {'0' * 32}, got {md5})"}
        assert _problems(upload("notes.txt", package, "")) == {
            "package": "'notes.txt': a package is a plain file name ending .spm"}
        assert _problems(upload("wgapp_9.9.spm", b"", "")) == {
            "package": "wgapp_9.9.spm is empty"}
        assert not installed.exists()
        assert not (gateway.data_dir / "update").exists() or \
            not any((gateway.data_dir / "update").iterdir())
        # A package past the 1 MiB of other requests goes through, copied as it arrives.
        large = bytes(range(256)) * (6 * 2**12)
        answer = upload("wgapp_9.8.spm", large, hashlib.md5(large, usedforsecurity=False)
                        .hexdigest())
        assert answer.status_code == 200, answer.text
        assert (gateway.data_dir / "update" / "wgapp_9.8.spm").read_bytes() == large
        assert client.post("/api/devices", content=b"x" * (2**20 + 1),
                           headers={"Content-Type": "application/json"}).status_code == 413
        answer = upload("wgapp_9.9.spm", package, md5)
        assert answer.status_code == 200, answer.text
        staged = gateway.data_dir / "update" / "wgapp_9.9.spm"
        assert staged.read_bytes() == package
        _until(lambda: installed.is_file() and installed.read_bytes() == package, 20,
               "SYSTEM_UpdateCommand given the package")
        # Installed as a command of the local channel: journaled with its answer, as the
        # update by URL is; the refused uploads never reached the executor.
        store = gateway.gateway.store if gateway.gateway is not None else None
        assert store is not None
        table = gateway.call(asyncio.to_thread(store.journal, kinds=["command", "result"]))
        updates = [(i.kind, json.loads(i.body)) for i in journal_items(table.sort_by("seq"))
                   if "updateFirmware" in i.body]
        assert [(kind, body["channel"]) for kind, body in updates] == [
            ("command", "local"), ("result", "local"), ("command", "local"), ("result", "local")]
        assert [body["parameters"] for kind, body in updates if kind == "command"] == [
            {"package": "wgapp_9.8.spm", "checksum": hashlib.md5(
                large, usedforsecurity=False).hexdigest()},
            {"package": "wgapp_9.9.spm", "checksum": md5}]
        assert all(body["result"] == "OK" for kind, body in updates if kind == "result")
        # The page's form: the same checks, the refusal beside its field.
        page = client.post("/system/update", files={"package": ("wgapp_9.9.spm", package)},
                           data={"md5": "f" * 32, "csrf": client.headers["X-CSRF-Token"]})
        assert page.status_code == 422 and 'id="e-md5"' in page.text
