"""The web UI in headless Chromium against a running gateway: login, every page of the
navigation (a screenshot each), the device page's live values and charts."""

from __future__ import annotations

import time

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait
from web_browser import Browser
from web_support import UID, add_io

from pipeline.web.common import NAVIGATION, reading


def test_login_then_every_page_of_the_navigation(browser: Browser) -> None:
    browser.visit("/")
    assert "/login" in browser.driver.current_url  # type: ignore[attr-defined]
    browser.login()
    assert browser.driver.current_url.rstrip("/") == browser.url("")  # type: ignore[attr-defined]
    for path, label in NAVIGATION:
        browser.visit(path)
        heading = browser.find("main h1").text  # type: ignore[attr-defined]
        assert heading.startswith(label), (path, heading)
        assert browser.driver.title == f"{label} · {UID}"  # type: ignore[attr-defined]
        assert browser.driver.execute_script(  # type: ignore[attr-defined]
            "return document.documentElement.scrollWidth <= window.innerWidth"), path
        active = browser.find("header nav a.active").text  # type: ignore[attr-defined]
        assert active == label
        if path == "/":
            assert "INFO system: sunpm started." in \
                browser.find("#recent-log").text  # type: ignore[attr-defined]
            assert browser.find("#uid").text == UID  # type: ignore[attr-defined]
    # A stale link: a page of the UI says why, with the way back.
    browser.visit("/devices/999")
    assert browser.find("#error-message").text == "no device '999'"  # type: ignore[attr-defined]
    browser.click_and_wait("#error-back")
    assert browser.find("main h1").text == "Devices"  # type: ignore[attr-defined]
    # The dashboard's connect now: a session with server 1 at once.
    browser.visit("/")
    browser.click_and_wait("#dashboard-connect-now")
    assert browser.find("#system-message").text == \
        "Session with server 1 started."  # type: ignore[attr-defined]
    # Log out: the session ends, pages ask for the login again.
    browser.click_and_wait("header form.logout button")
    assert "/login" in browser.driver.current_url  # type: ignore[attr-defined]
    browser.visit("/devices")
    assert browser.driver.current_url.endswith("/login?next=/devices")  # type: ignore[attr-defined]


def test_wrong_password_is_refused_in_the_page(browser: Browser) -> None:
    browser.login("not-the-password")
    assert "/login" in browser.driver.current_url  # type: ignore[attr-defined]
    assert "Wrong user or password" in browser.find("#login-error").text  # type: ignore[attr-defined]
    browser.gateway.reset_throttle()


def test_device_page_shows_live_values_and_draws_charts(browser: Browser) -> None:
    browser.login()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        browser.visit("/devices/1")
        if not browser.find_all("#values tr.empty"):
            break
        time.sleep(1)
    rows = browser.find_all("#values tbody tr")
    cells = {r.find_element(By.CSS_SELECTOR, "td:nth-child(2)").text:  # type: ignore[attr-defined]
             r.find_element(By.CSS_SELECTOR, "td:nth-child(4)").text for r in rows}  # type: ignore[attr-defined]
    assert cells.get("PhVphA") == "V" and cells.get("W") == "W"
    # Refreshed values read as the server renders them.
    samples = [13.988354332375218, 229.4, 32709592, -2.00004, 0.000123456789, 12345678.25, "TH.."]
    assert browser.driver.execute_script(  # type: ignore[attr-defined]
        "return arguments[0].map(sunpm.reading)", samples) == [reading(v) for v in samples]
    # The values' age, refreshed with them every 5 s.
    age = browser.find("#values-age").text  # type: ignore[attr-defined]
    assert age.startswith("(") and age.endswith(" s old)"), age
    # Charts draw once the first record is in the store (a 10 s period).
    WebDriverWait(browser.driver, 30).until(  # type: ignore[arg-type]
        ec.presence_of_element_located((By.CSS_SELECTOR, "figure.chart .uplot, figure.chart .empty")))
    browser.screenshot("device-charts")


def test_a_chart_axis_is_as_wide_as_its_longest_label(browser: Browser) -> None:
    """The energy counter (WH, some 32 700 000 Wh) once cut to '9,580' by a fixed-width axis."""
    with browser.gateway.client() as client:
        deadline = time.monotonic() + 40
        while not client.get("/api/devices/1/history?var=12&span=1h").json()["x"]:
            assert time.monotonic() < deadline, "no energy record in the store"
            time.sleep(0.5)
    browser.login()
    browser.visit("/devices/1")
    energy = 'figure.chart[data-var="12"] .uplot'
    WebDriverWait(browser.driver, 40).until(  # type: ignore[arg-type]
        ec.presence_of_element_located((By.CSS_SELECTOR, energy)))
    room, widest, labels = browser.driver.execute_script(  # type: ignore[attr-defined]
        """var u = document.querySelector('figure.chart[data-var="12"]').uplot;
           var axis = u.axes[1];
           u.ctx.font = axis.font[0];
           var widths = axis._values.map(function (v) {
             return u.ctx.measureText(String(v)).width / devicePixelRatio; });
           return [axis._size - axis.ticks.size - axis.gap, Math.max.apply(null, widths),
                   axis._values];""")
    assert any(len(str(label)) >= 10 for label in labels), labels
    assert room >= widest, (room, widest, labels)
    browser.screenshot("device-chart-energy", scroll_to=energy)


def _fill(browser: Browser, values: dict[str, str]) -> None:
    for name, value in values.items():
        field = browser.find(f"#f-{name}")
        field.clear()  # type: ignore[attr-defined]
        field.send_keys(value)  # type: ignore[attr-defined]


def test_add_a_device_with_a_field_error_first(browser: Browser) -> None:
    port = browser.gateway.simulators[1].port
    browser.login()
    browser.visit("/devices")
    browser.click_and_wait("#add-device")
    browser.screenshot("device-form")
    assert browser.find("#f-index").get_attribute("value") == "3"  # type: ignore[attr-defined]
    _fill(browser, {"name": "<script>alert(1)</script>", "interface": f"127.0.0.1:{port}",
                    "address": "300", "acqPeriodS": "10", "category": "Inverter"})
    Select(browser.find("#f-defFile")).select_by_value("demo_inverter.csv")  # type: ignore[arg-type]
    browser.click_and_wait("#save")
    browser.screenshot("device-form-refused", scroll_to="#f-address")
    error = browser.find("#err-address").text  # type: ignore[attr-defined]
    assert error == "'300' is outside 1..240"
    assert browser.find("#f-address").get_attribute("aria-invalid") == "true"  # type: ignore[attr-defined]
    _fill(browser, {"address": "1"})
    browser.click_and_wait("#save")
    assert "/devices?saved=3" in browser.driver.current_url  # type: ignore[attr-defined]
    browser.screenshot("device-saved")
    # The list the save leads to has the row, and says it polls inverter_2's unit again.
    warning = browser.find("#warnings").text  # type: ignore[attr-defined]
    assert f"index 3 shares 127.0.0.1:{port} unit 1 with index 2" in warning, warning
    name = browser.find('tr[data-index="3"] .device-name')
    # The name is text: no script ran, no element was made of it.
    assert name.text == "<script>alert(1)</script>"  # type: ignore[attr-defined]
    assert browser.driver.execute_script(  # type: ignore[attr-defined]
        "return document.querySelectorAll('main script').length") == 0
    browser.visit("/devices/3")
    assert browser.find("main h1").text.startswith("<script>alert(1)</script>")  # type: ignore[attr-defined]


def test_schedule_with_a_planted_mistake_shows_the_field_error(browser: Browser) -> None:
    browser.login()
    browser.visit("/configuration")
    _fill(browser, {"s1_0_StartTime": "24:00:00"})
    browser.click_and_wait("#save-schedules")
    browser.screenshot("schedule-refused", scroll_to="#schedules")
    field = browser.find("#f-s1_0_StartTime")
    assert field.get_attribute("value") == "24:00:00"  # type: ignore[attr-defined]
    assert field.get_attribute("aria-invalid") == "true"  # type: ignore[attr-defined]
    error = browser.find("#err-s1_0_StartTime").text  # type: ignore[attr-defined]
    assert "'24:00:00' is not HH:MM:SS" in error
    assert browser.find("#problems-schedules").is_displayed()  # type: ignore[attr-defined]
    # Fixed, it is saved, and the page the save leads to shows the saved schedules' times (the
    # scheduler's computation), whenever the reload comes. Waiting for the reload by visiting
    # `/configuration#schedules` again and again failed under load: after the first visit,
    # the same URL with a fragment only scrolled the page, so a first visit made before the
    # reload kept the old times for the 45 s of the loop.
    _fill(browser, {"s1_0_StartTime": "00:15:00"})
    browser.click_and_wait("#save-schedules")
    assert "saved=schedules" in browser.driver.current_url  # type: ignore[attr-defined]
    times = [li.text for li in browser.find_all("#next-1 li")]  # type: ignore[attr-defined]
    assert len(times) == 10 and all(t[14:19] == "15:00" for t in times), times
    gateway = browser.gateway.gateway
    assert gateway is not None
    deadline = time.monotonic() + 45
    while not (gateway.site is not None and gateway.site.var_ini.schedules(1)[0].start_s == 900):
        assert time.monotonic() < deadline, "the saved schedules were not loaded"
        time.sleep(0.2)
    browser.screenshot("schedule-saved", scroll_to="#schedules")


def _device_rows(browser: Browser) -> dict[str, str]:
    """index -> name of the Devices page's rows."""
    rows = browser.find_all("#devices tbody tr[data-index]")
    return {r.get_attribute("data-index"):  # type: ignore[attr-defined]
            r.find_element(By.CSS_SELECTOR, ".device-name").text for r in rows}  # type: ignore[attr-defined]


def test_duplicate_edit_and_delete_a_device_through_the_pages(browser: Browser) -> None:
    browser.login()
    browser.visit("/devices")
    before = _device_rows(browser)
    browser.visit("/devices/1")
    browser.click_and_wait("a[href='/devices/1/duplicate']")
    browser.screenshot("device-duplicate-form")
    index = browser.find("#f-index").get_attribute("value")  # type: ignore[attr-defined]
    assert index == str(max(int(k) for k in before if k.isdigit()) + 1)
    assert browser.find("#f-name").get_attribute("value") == "inverter_1_copy"  # type: ignore[attr-defined]
    port = browser.gateway.simulators[0].port
    assert browser.find("#f-interface").get_attribute("value") == f"127.0.0.1:{port}"  # type: ignore[attr-defined]
    browser.click_and_wait("#save")
    # The list the save leads to has the copy, polling inverter_1's unit as well.
    assert f"/devices?saved={index}" in browser.driver.current_url  # type: ignore[attr-defined]
    assert _device_rows(browser).get(index) == "inverter_1_copy"
    assert f"index {index} shares 127.0.0.1:{port} unit 1 with index 1" in \
        browser.find("#warnings").text  # type: ignore[attr-defined]

    browser.click_and_wait(f"a[href='/devices/{index}/edit']")
    browser.screenshot("device-edit-form")
    assert browser.find("main h1").text.startswith("Edit inverter_1_copy")  # type: ignore[attr-defined]
    _fill(browser, {"name": "second_inverter", "acqPeriodS": "often"})
    browser.click_and_wait("#save")
    browser.screenshot("device-edit-refused", scroll_to="#f-acqPeriodS")
    assert browser.find("#f-acqPeriodS").get_attribute("aria-invalid") == "true"  # type: ignore[attr-defined]
    assert "often" in browser.find("#err-acqPeriodS").text  # type: ignore[attr-defined]
    # Refused: nothing saved, what was typed is still in the form.
    assert browser.find("#f-name").get_attribute("value") == "second_inverter"  # type: ignore[attr-defined]
    browser.visit("/devices")
    assert _device_rows(browser).get(index) == "inverter_1_copy"
    browser.visit(f"/devices/{index}/edit")
    _fill(browser, {"name": "second_inverter"})
    browser.click_and_wait("#save")
    assert _device_rows(browser).get(index) == "second_inverter"

    browser.visit(f"/devices/{index}/edit")
    browser.click_and_wait("#delete", confirm=True)
    assert f"/devices?deleted={index}" in browser.driver.current_url  # type: ignore[attr-defined]
    assert f"Device {index} deleted" in browser.find("#notice").text  # type: ignore[attr-defined]
    assert _device_rows(browser) == before


def test_the_io_editor_shows_a_mistake_beside_its_field(browser: Browser) -> None:
    with browser.gateway.client() as client:
        add_io(browser.gateway, client)
    browser.login()
    browser.visit("/devices/IO")
    browser.click_and_wait("#io-editor")
    browser.screenshot("io-editor")
    assert browser.driver.execute_script(  # type: ignore[attr-defined]
        "return document.documentElement.scrollWidth <= window.innerWidth")
    assert browser.find("#f-v1_Name").get_attribute("value") == "AI1"  # type: ignore[attr-defined]
    _fill(browser, {"v1_CoefA": "ten", "v1_Unit": "W/m2"})
    browser.click_and_wait("#save-io")
    browser.screenshot("io-editor-refused")
    assert browser.find("#f-v1_CoefA").get_attribute("aria-invalid") == "true"  # type: ignore[attr-defined]
    assert "ten" in browser.find("#err-v1_CoefA").text  # type: ignore[attr-defined]
    assert browser.find("#f-v1_Unit").get_attribute("value") == "W/m2"  # type: ignore[attr-defined]
    _fill(browser, {"v1_CoefA": "10"})
    browser.click_and_wait("#save-io")
    assert "Saved" in browser.find("#notice").text  # type: ignore[attr-defined]
    assert browser.find("#f-v1_CoefA").get_attribute("value") == "10"  # type: ignore[attr-defined]


def test_password_change_in_the_page_asks_for_the_current_one(browser: Browser) -> None:
    browser.login()
    new = "a-long-password"
    for current, saved in (("not-the-password", False), (browser.gateway.password, True)):
        browser.visit("/configuration")
        for css, text in (("#f-currentPassword", current), ("#f-newPassword", new),
                          ("#f-confirmPassword", new)):
            browser.find(css).send_keys(text)  # type: ignore[attr-defined]
        browser.click_and_wait("#save-password")
        if not saved:
            assert "wrong password" in browser.find("#form-password").text  # type: ignore[attr-defined]
            assert browser.find("#f-currentPassword").get_attribute(  # type: ignore[attr-defined]
                "aria-invalid") == "true"
    assert "saved=password" in browser.driver.current_url  # type: ignore[attr-defined]
    browser.gateway.password = new
