"""Fixtures of the web tests: a running gateway with its web UI, and headless Chromium.

Screenshots of every page a browser test visits go to `$SUNPM_ARTIFACTS/web/` (default
`tests/artifacts/web/`, ignored by git) as `<test>-<n>-<page>.png`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from web_browser import Browser
from web_support import RunningGateway, running_gateway

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


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
