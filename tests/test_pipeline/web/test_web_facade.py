"""Small rules of the facade that pages rely on."""

from __future__ import annotations

import pytest

from config.model import Device
from pipeline.web.common import reading
from pipeline.web.facade import _numeric, _trace_interface
from store.traces import TRACE_INTERFACES


@pytest.mark.parametrize(("value", "charted"), [
    (229.4, True), (0, True), (None, True),
    # TIC values are verbatim text: an index or a current is a number, a tariff period is not.
    ("015276039", True), ("002", True), ("-3.5", True),
    ("TH..", False), ("HP..", False), ("", False), ("NaN", False), ("inf", False),
])
def test_a_live_value_is_charted_when_it_is_a_number(value: float | str | None,
                                                     charted: bool) -> None:
    assert _numeric(value) is charted


@pytest.mark.parametrize(("index", "interface", "traced"), [
    ("1", "192.168.1.20:502", "ethernet"), ("2", "SERIAL2", "serial2"),
    ("IO", "", "io"), ("TIC1", "", "tic"),
])
def test_a_devices_diag_link_names_the_interface_its_frames_are_traced_on(
        index: str, interface: str, traced: str) -> None:
    device = Device(line=2, index=index, interface=interface, name="d", address=1,
                    acq_period_s=60, timeout_ms=1000, category="", model="", def_file="d.csv")
    assert _trace_interface(device) == traced
    assert traced in TRACE_INTERFACES


@pytest.mark.parametrize(("value", "shown"), [
    (13.988354332375218, "13.9884"), (229.4, "229.4"), (32709592.0, "32709592"), (7, "7"),
    (-2.00004, "-2"), (0.000123456789, "0.000123457"), (1.5e-07, "1.5e-07"), ("TH..", "TH.."),
    (None, ""), (12345678.25, "12345678.25"),
])
def test_a_live_value_reads_short_on_the_page(value: float | str | None, shown: str) -> None:
    assert reading(value) == shown
