"""Defects found by walking the pages in headless Chromium: what an installer meets when a
session ends while a form is open, or when a form with an uploaded file is refused."""

from __future__ import annotations

from pathlib import Path

from selenium.webdriver.support.ui import Select
from web_browser import Browser

from pipeline.service.demo import INVERTER_DEF


def _fill(browser: Browser, css: str, value: str) -> None:
    field = browser.find(css)
    field.clear()  # type: ignore[attr-defined]
    field.send_keys(value)  # type: ignore[attr-defined]


def test_a_form_sent_after_the_session_ended_leads_back_to_its_page(browser: Browser) -> None:
    """A Save after a restart (sessions live in memory) went to the login, then to a bare
    '405: Method Not Allowed' of the form's action address, out of the UI."""
    browser.login()
    browser.visit("/configuration")
    sessions = browser.gateway.plugin.context.sessions  # type: ignore[union-attr]
    sessions.close_all(keep=None)
    _fill(browser, "#f-DAQ_PollPeriod", "2")
    browser.click_and_wait("#save-acquisition")
    assert browser.driver.current_url.endswith(  # type: ignore[attr-defined]
        "/login?next=/configuration")
    browser.find("#user").send_keys("admin")  # type: ignore[attr-defined]
    browser.find("#password").send_keys(browser.gateway.password)  # type: ignore[attr-defined]
    browser.click_and_wait("#login")
    browser.screenshot("back-on-the-form")
    assert browser.find("main h1").text == "Configuration"  # type: ignore[attr-defined]
    # A form's action address reached again (reload, history, bookmark): its page.
    browser.visit("/system/connect")
    assert browser.find("main h1").text == "System"  # type: ignore[attr-defined]
    browser.visit("/scripts/x.lua/delete")
    assert browser.find("main h1").text.startswith("Scripts")  # type: ignore[attr-defined]


def test_a_form_of_an_earlier_session_is_refused_inside_the_ui(browser: Browser) -> None:
    """A page left open while its user logged in again elsewhere carries the old session's
    token: the refusal was a bare '403: missing or wrong CSRF token' text."""
    browser.login()
    browser.visit("/system")
    assert browser.driver.execute_async_script(  # type: ignore[attr-defined]
        """var done = arguments[arguments.length - 1];
           fetch('/api/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                body: JSON.stringify({user: 'admin', password: arguments[0]})})
             .then(function (r) { done(r.status); });""", browser.gateway.password) == 200
    browser.click_and_wait("#connect-now")
    browser.screenshot("earlier-session-refused")
    assert browser.find("main h1").text == "Not done"  # type: ignore[attr-defined]
    message = browser.find("#error-message").text  # type: ignore[attr-defined]
    assert message.startswith("missing or wrong CSRF token: this form came from an earlier")
    browser.click_and_wait("#error-back")
    assert browser.find("main h1").text == "System"  # type: ignore[attr-defined]
    browser.click_and_wait("#connect-now")
    assert browser.find("#system-message").text == \
        "Session with server 1 started."  # type: ignore[attr-defined]


def test_an_uploaded_definition_survives_a_refused_save(browser: Browser,
                                                        tmp_path: Path) -> None:
    """A refused device form dropped its uploaded definition (a browser cannot refill a file
    field): the list then read '<file> (missing)' and the next save failed with
    'missing from /DEF' until the file was chosen again."""
    definition = tmp_path / "walk_inverter.csv"
    definition.write_bytes(INVERTER_DEF)
    browser.login()
    browser.visit("/devices/new")
    _fill(browser, "#f-name", "uploaded")
    _fill(browser, "#f-interface", f"127.0.0.1:{browser.gateway.simulators[1].port}")
    _fill(browser, "#f-address", "300")
    browser.find("#f-defUpload").send_keys(str(definition))  # type: ignore[attr-defined]
    browser.click_and_wait("#save")
    browser.screenshot("upload-kept", scroll_to="#f-defUpload")
    assert browser.find("#err-address").text == "'300' is outside 1..240"  # type: ignore[attr-defined]
    chosen = Select(browser.find("#f-defFile")).first_selected_option  # type: ignore[arg-type]
    assert chosen.text == "walk_inverter.csv (uploaded)"
    assert "walk_inverter.csv as uploaded is kept" in \
        browser.find("#kept-upload").text  # type: ignore[attr-defined]
    _fill(browser, "#f-address", "1")
    browser.click_and_wait("#save")
    assert "/devices?saved=" in browser.driver.current_url  # type: ignore[attr-defined]
    assert (browser.gateway.config_dir / "DEF" / "walk_inverter.csv").read_bytes() == \
        INVERTER_DEF
