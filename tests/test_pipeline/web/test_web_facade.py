"""Small rules of the facade that pages rely on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from config.model import Device
from pipeline.web.common import reading
from pipeline.web.facade import ALARMS_LISTED, GatewayFacade, _numeric, _trace_interface
from store.log import Log
from store.options import StoreOptions
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


async def test_the_dashboard_lists_the_newest_alarms_of_a_storm_not_all_of_them(
        tmp_path: Path) -> None:
    # A flapping input raises an alarm a poll: a day of them is 86,400 entries, read and sent at
    # every refresh of the dashboard. It lists the newest ALARMS_LISTED, newest first.
    now = time.time_ns()
    async with await Log.open(tmp_path / "store", StoreOptions(flush_s=0.05)) as log:
        raised = ALARMS_LISTED + 50
        seqs = await asyncio.gather(*(log.append_journal(
            "alarm", {"source": "GATEWAY", "alarm": "Script alarm", "subject": "s",
                      "text": str(k)}, ts_ns=now - (raised - k) * 10**9) for k in range(raised)))
        # Older than the day: never listed.
        await log.append_journal("alarm", {"source": "GATEWAY", "alarm": "Power ON"},
                                 ts_ns=now - 2 * 86_400 * 10**9)
        facade = GatewayFacade(SimpleNamespace(store=log, site=None))  # type: ignore[arg-type]
        listed = await facade.alarms()
    assert len(seqs) == raised
    assert [a["text"] for a in listed] == [
        f"Script alarm (s): {k}" for k in reversed(range(raised - ALARMS_LISTED, raised))]
