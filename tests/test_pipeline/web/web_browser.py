"""Headless Chromium on a running gateway's web UI for the browser tests (the `browser`
fixture of conftest.py makes one). Its own module, not conftest: `from conftest import` takes
whichever conftest was imported first when several test folders run in one session.

Screenshots of every page a browser test visits go to `$SUNPM_ARTIFACTS/web/` (default
`tests/artifacts/web/`, ignored by git) as `<test>-<n>-<page>.png`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from web_support import RunningGateway

ROOT = Path(__file__).resolve().parents[3]


def artifacts_dir() -> Path:
    base = Path(os.environ.get("SUNPM_ARTIFACTS", ROOT / "tests" / "artifacts"))
    folder = base / "web"
    folder.mkdir(parents=True, exist_ok=True)
    return folder



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
        """Load the page anew. Asked for the address it shows, with a fragment
        (`/configuration#schedules`), Chromium only scrolls to the fragment: a test visiting
        again to see a change saw the page of its first visit."""
        driver: Any = self.driver
        url = self.url(path)
        again = "#" in url and driver.current_url == url
        driver.get(url)
        if again:
            driver.refresh()
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
