"""A wall clock step is said once (docs/behaviour.md §11): the poll loop logs it, the gateway's
event sink, which receives the same step, adds no second line (a reset read `wall clock reset by
-10800 s` then `wall clock stepped by -10800 s`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from pipeline.poller import ClockStepped
from pipeline.service.gateway import Gateway

NS = 1_000_000_000


@pytest.mark.parametrize("step_s", [-30, 3600, -10_800])
async def test_the_gateway_adds_no_second_line_for_a_clock_step(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, step_s: int) -> None:
    gateway = Gateway(tmp_path / "config", tmp_path / "data")
    unused: Any = object()
    gateway.store, gateway.alarms = unused, unused
    sink = gateway._event_sink(unused)
    with caplog.at_level(logging.DEBUG, logger="sunpm"):
        await sink(ClockStepped(ts_ns=1_796_600_000 * NS, step_ns=step_s * NS,
                                reset=step_s < -3600))
    assert [r.getMessage() for r in caplog.records] == []
