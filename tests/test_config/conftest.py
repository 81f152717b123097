"""Fixtures of the config tests: sites built from the golden examples of docs/formats.md."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from config_support import EXAMPLE_DEFS, GOLDEN


@pytest.fixture
def example_site(tmp_path: Path) -> Callable[[], Path]:
    """A factory for a directory holding the spec's example site (uid WPM00BDE4)."""

    def make() -> Path:
        site = tmp_path / "site"
        for sub in ("CONFIG", "DEF", "SCRIPT", "CERT"):
            (site / sub).mkdir(parents=True, exist_ok=True)
        for name in ("WPM00BDE4_config.ini", "WPM00BDE4_daq.csv", "WPM00BDE4_scl.ini"):
            shutil.copy(GOLDEN / name, site / "CONFIG" / name)
        shutil.copy(GOLDEN / "canonical_var.ini", site / "CONFIG" / "WPM00BDE4_var.ini")
        for name in EXAMPLE_DEFS:
            shutil.copy(GOLDEN / name, site / "DEF" / name)
        for script in ("Test script 1.lua", "Test script 2.lua"):
            (site / "SCRIPT" / script).write_text("wd.log('hello')\n", encoding="utf-8")
        return site

    return make
