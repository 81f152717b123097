"""The web UI in headless Chromium against a running gateway: login, every page of the
navigation (a screenshot each), the device page's live values and charts."""

from __future__ import annotations

import time

from conftest import Browser
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from pipeline.web.common import NAVIGATION


def test_login_then_every_page_of_the_navigation(browser: Browser) -> None:
    browser.visit("/")
    assert "/login" in browser.driver.current_url  # type: ignore[attr-defined]
    browser.login()
    assert browser.driver.current_url.rstrip("/") == browser.url("")  # type: ignore[attr-defined]
    for path, label in NAVIGATION:
        browser.visit(path)
        heading = browser.find("main h1").text  # type: ignore[attr-defined]
        assert heading.startswith(label), (path, heading)
        active = browser.find("header nav a.active").text  # type: ignore[attr-defined]
        assert active == label


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
    # Charts draw once the first record is in the store (a 10 s period).
    WebDriverWait(browser.driver, 30).until(  # type: ignore[arg-type]
        ec.presence_of_element_located((By.CSS_SELECTOR, "figure.chart .uplot, figure.chart .empty")))
    browser.screenshot("device-charts")
