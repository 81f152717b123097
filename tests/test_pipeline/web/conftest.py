"""Fixtures of the web tests: a running gateway with its web UI, and headless Chromium.

Screenshots of every page a browser test visits go to `$SUNPM_ARTIFACTS/web/` (default
`tests/artifacts/web/`, ignored by git) as `<test>-<n>-<page>.png`.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web_support import RunningGateway, running_gateway

ROOT = Path(__file__).resolve().parents[3]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def artifacts_dir() -> Path:
    base = Path(os.environ.get("SUNPM_ARTIFACTS", ROOT / "tests" / "artifacts"))
    folder = base / "web"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def web_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """A gateway polling two simulated inverters, its web UI on an ephemeral port."""
    with running_gateway(tmp_path_factory.mktemp("web")) as running:
        yield running


@pytest.fixture
def fresh_gateway(tmp_path: Path) -> Iterator[RunningGateway]:
    """A gateway of the test's own (throttling, password and configuration tests)."""
    with running_gateway(tmp_path) as running:
        yield running


class Browser:
    """Headless Chromium on the gateway's web UI; every `visit` keeps a screenshot."""

    def __init__(self, driver: object, gateway: RunningGateway, name: str) -> None:
        self.driver = driver
        self.gateway = gateway
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        self.shots = 0

    def url(self, path: str) -> str:
        return self.gateway.url.rstrip("/") + path

    def visit(self, path: str) -> None:
        self.driver.get(self.url(path))  # type: ignore[attr-defined]
        self.screenshot(path)

    def screenshot(self, label: str, *, scroll_to: str | None = None) -> Path:
        if scroll_to is not None:
            self.driver.execute_script(  # type: ignore[attr-defined]
                "document.querySelector(arguments[0]).scrollIntoView()", scroll_to)
        self.shots += 1
        slug = re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_") or "root"
        path = artifacts_dir() / f"{self.name}-{self.shots:02d}-{slug}.png"
        self.driver.save_screenshot(str(path))  # type: ignore[attr-defined]
        return path

    def find(self, css: str) -> object:
        from selenium.webdriver.common.by import By
        return self.driver.find_element(By.CSS_SELECTOR, css)  # type: ignore[attr-defined]

    def find_all(self, css: str) -> list[object]:
        from selenium.webdriver.common.by import By
        return list(self.driver.find_elements(By.CSS_SELECTOR, css))  # type: ignore[attr-defined]

    def login(self, password: str | None = None) -> None:
        self.visit("/login")
        self.find("#user").send_keys("admin")  # type: ignore[attr-defined]
        self.find("#password").send_keys(  # type: ignore[attr-defined]
            password if password is not None else self.gateway.password)
        self.click_and_wait("#login")
        self.screenshot("after-login")

    def click_and_wait(self, css: str, *, confirm: bool = False) -> None:
        """Click a link or submit button (accepting its question) and wait until the next
        page has loaded. A click returns once the request is sent; the page that was there
        is recognised by a mark set on its window, which the next page does not carry (an
        element's staleness cannot be asked safely while Chromium swaps documents)."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        driver: Any = self.driver
        driver.execute_script("window.__sunpmOldPage = true;")
        driver.find_element("css selector", css).click()
        if confirm:
            WebDriverWait(driver, 5).until(ec.alert_is_present())
            driver.switch_to.alert.accept()

        def next_page_loaded(_: object) -> bool:
            try:
                return bool(driver.execute_script(
                    "return window.__sunpmOldPage !== true && document.readyState === 'complete';"))
            except WebDriverException:
                return False

        WebDriverWait(driver, 20).until(next_page_loaded)


def _have_browser() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists() and \
        shutil.which(CHROMEDRIVER) is not None


@pytest.fixture
def browser(web_gateway: RunningGateway, request: pytest.FixtureRequest) -> Iterator[Browser]:
    """Headless Chromium (Debian's chromium and chromium-driver, installed by .ci/run)."""
    if not _have_browser():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} missing (.ci/run installs them)")
        pytest.skip("chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-sync"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield Browser(driver, web_gateway, request.node.name)
    finally:
        driver.quit()
