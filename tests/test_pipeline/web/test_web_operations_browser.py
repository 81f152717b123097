"""The discovery, diagnostics, scripts and system pages in headless Chromium against a running
gateway: a discovery of simulated SunSpec inverters imported, a trace tailed, a script uploaded,
disabled, enabled and its log read, a connection that delivers a file, a factory reset refused
beside its field; a screenshot of every page."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait
from waiting import wait_until_sync
from web_browser import Browser
from web_support import UID

from config import load_site
from pipeline.drivers.modbus.simulator import TcpSimulator
from pipeline.service.demo import SERVER_TREE, DemoInverter

SCRIPT = """header = { version = "0.3", label = "Heartbeat", name = "heartbeat" }
function wsInit()
  wd.every(0.5, function() wd.log("beat from <heartbeat>") end)
end
"""


def _until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    return wait_until_sync(check, timeout_s, what=what, every=0.3)


def _text(browser: Browser, css: str) -> str:
    return str(browser.find(css).text)  # type: ignore[attr-defined]


def _fill(browser: Browser, css: str, value: str) -> None:
    field: Any = browser.find(css)
    field.clear()
    field.send_keys(value)


def test_a_discovery_of_simulated_inverters_is_imported(browser: Browser) -> None:
    gateway = browser.gateway
    sim = TcpSimulator({3: DemoInverter(number=2), 6: DemoInverter(number=3)})
    port = gateway.call(sim.start())
    assert isinstance(port, int)
    try:
        browser.login()
        browser.visit("/discovery")
        _fill(browser, "#f-lastAddress", "300")
        browser.click_and_wait("#discovery-start")
        assert _text(browser, "#e-lastAddress") == "300 is outside 1..240"
        browser.screenshot("discovery-field-error")
        Select(browser.find("#f-interface")).select_by_value("ethernet1")
        _fill(browser, "#f-ip", "127.0.0.1")
        _fill(browser, "#f-port", str(port))
        _fill(browser, "#f-firstAddress", "1")
        _fill(browser, "#f-lastAddress", "8")
        _fill(browser, "#f-timeout", "100")
        browser.click_and_wait("#discovery-start")
        browser.screenshot("discovery-running")
        # The page follows the live log and reloads itself when the run ends.
        WebDriverWait(browser.driver, 40).until(  # type: ignore[arg-type]
            ec.presence_of_element_located((By.ID, "discovery-results")))
        browser.screenshot("discovery-results")
        log = _text(browser, "#discovery-log")
        assert f"SunSpec device found at @3 127.0.0.1:{port}" in log
        assert log.strip().endswith("End of SunSpec detection on ethernet1. 2 devices found.")
        rows = browser.find_all("#discovery-results tbody tr")
        assert len(rows) == 2
        # Long definition file names wrap: the results fit the window.
        assert browser.driver.execute_script(  # type: ignore[attr-defined]
            "return document.documentElement.scrollWidth <= window.innerWidth")
        boxes = browser.find_all("#discovery-results input[name=row]")
        assert all(box.is_selected() for box in boxes)  # type: ignore[attr-defined]
        boxes[1].click()  # type: ignore[attr-defined]      # import the first only
        browser.click_and_wait("#discovery-accept")
        browser.screenshot("discovery-imported")
        assert f"1 devices added to daq.csv: ethernet_127.0.0.1_{port}_3" in _text(
            browser, "#discovery-message")
        names = [d.name for d in load_site(gateway.config_dir).daq.devices]
        assert f"ethernet_127.0.0.1_{port}_3" in names
        assert f"ethernet_127.0.0.1_{port}_6" not in names
        browser.click_and_wait("#discovery-cancel")
        assert not browser.find_all("#discovery-run")
    finally:
        gateway.call(sim.stop())
    # The gateway applies the import: the new device shows on the Devices page.
    def listed() -> bool:
        browser.visit("/devices")
        return f"ethernet_127.0.0.1_{port}_3" in _text(browser, "#devices")
    _until(listed, 30, "imported device on the Devices page")


def test_a_trace_is_started_and_tailed(browser: Browser) -> None:
    browser.login()
    browser.visit("/diagnostics")
    Select(browser.find("#f-interface")).select_by_value("ethernet")
    _fill(browser, "#f-minutes", "1")
    browser.click_and_wait("#trace-start")
    assert _text(browser, "#diagnostics-message") == "Trace on ethernet running."
    row = browser.find("#traces tr[data-interface=ethernet]")
    assert "tracing" in row.text  # type: ignore[attr-defined]
    Select(browser.find("#tail-interface")).select_by_value("ethernet")
    _until(lambda: "127.0.0.1:" in _text(browser, "#trace-tail"), 30, "live tail")
    browser.screenshot("diagnostics-tail")
    browser.click_and_wait("#stop-ethernet")
    assert _text(browser, "#diagnostics-message") == "Trace on ethernet stopped."


def test_a_script_is_uploaded_enabled_and_its_log_read(browser: Browser,
                                                       tmp_path: Path) -> None:
    browser.login()
    browser.visit("/scripts")
    bad = tmp_path / "notes.txt"
    bad.write_text("x = 1\n")
    browser.find("#f-script").send_keys(str(bad))  # type: ignore[attr-defined]
    browser.click_and_wait("#script-upload")
    assert "a script is a plain file name ending .lua" in _text(browser, "#e-script")
    browser.screenshot("scripts-field-error")
    source = tmp_path / "heartbeat.lua"
    source.write_text(SCRIPT)
    browser.find("#f-script").send_keys(str(source))  # type: ignore[attr-defined]
    browser.click_and_wait("#script-upload")
    assert "heartbeat.lua saved" in _text(browser, "#scripts-message")

    def state() -> str:
        browser.visit("/scripts")
        rows = browser.find_all("#scripts tr[data-file='heartbeat.lua'] .script-state")
        return str(rows[0].text) if rows else ""  # type: ignore[attr-defined]

    _until(lambda: state() == "enabled", 40, "script enabled after the reload")
    browser.click_and_wait("tr[data-file='heartbeat.lua'] .script-disable")
    assert "heartbeat disabled until the next restart" in _text(browser, "#scripts-message")
    assert state() == "disabled"
    browser.click_and_wait("tr[data-file='heartbeat.lua'] .script-enable")
    assert _text(browser, "#scripts-message") == "heartbeat enabled."
    browser.screenshot("scripts-enabled")

    def logged() -> bool:
        browser.visit("/scripts/heartbeat.lua/log")
        return "INFO script:heartbeat: beat from <heartbeat>" in _text(browser, "#script-log")

    _until(logged, 20, "script log lines")
    browser.click_and_wait("a[href='/scripts']")
    browser.click_and_wait("tr[data-file='heartbeat.lua'] .script-delete", confirm=True)
    assert _text(browser, "#scripts-message") == \
        "heartbeat.lua deleted; the gateway stops it within a few seconds."
    # Not listed any more, though it runs until the reload: its buttons would answer 404.
    assert not browser.find_all("tr[data-file='heartbeat.lua']")
    assert not (browser.gateway.config_dir / "SCRIPT" / "heartbeat.lua").exists()


def test_connect_now_delivers_a_file_and_a_factory_reset_needs_the_uid(
        browser: Browser) -> None:
    gateway = browser.gateway
    for sub in SERVER_TREE:
        (gateway.folder / "server" / sub).mkdir(parents=True, exist_ok=True)
    data_dir = gateway.folder / "server" / "DATA"
    with gateway.client() as client:
        _until(lambda: all(d["lastRecord"] for d in client.get("/api/devices").json()[
            "devices"] if d["index"] in ("1", "2")), 40, "a record of each inverter")
    before = set(data_dir.glob(f"{UID}_*.csv.gz"))
    browser.login()
    browser.visit("/system")
    Select(browser.find("#f-server")).select_by_value("1")
    browser.click_and_wait("#connect-now")
    assert _text(browser, "#system-message") == "Session with server 1 started."
    landed = _until(lambda: set(data_dir.glob(f"{UID}_*.csv.gz")) - before, 30,
                    "a DATA file in the dir server")
    assert all(p.stat().st_size > 0 for p in landed)
    browser.screenshot("system-connected")

    Select(browser.find("#f-server")).select_by_value("2")
    browser.click_and_wait("#connect-now")
    assert _text(browser, "#e-server") == "connect: server 2 is not configured"

    _fill(browser, "#f-confirm", "NOT-THE-UID")
    browser.click_and_wait("#factory-reset", confirm=True)
    assert _text(browser, "#e-confirm") == "type the gateway's uid to confirm the factory reset"
    assert browser.find("#f-confirm").get_attribute("aria-invalid") == "true"  # type: ignore[attr-defined]
    browser.screenshot("system-factory-refused")
    assert load_site(gateway.config_dir).uid == UID

    _fill(browser, "#f-export-from", "tomorrow")
    browser.click_and_wait("#download-export")
    assert "'tomorrow' is not a date and time" in _text(browser, "#e-export-from")
    browser.screenshot("system-export-field-error")
