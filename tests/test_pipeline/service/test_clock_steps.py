"""The gateway's log and the clock (docs/behaviour.md §11): a wall clock step is said once (the poll
loop logs it; the gateway's event sink, which receives the same step, adds no second line: a reset
read `wall clock reset by -10800 s` then `wall clock stepped by -10800 s`), and stderr lines carry
their time in NTP_TimeZone, following a reload."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from _service_plant import reconfigure, running_gateway

from pipeline.poller import ClockStepped
from pipeline.service.gateway import Gateway
from pipeline.service.logs import setup_stderr

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


def _stderr_time(created_s: float) -> str:
    handler = next(h for h in logging.getLogger("sunpm").handlers
                   if type(h).__name__ == "_StderrHandler")
    record = logging.LogRecord("sunpm.system", logging.INFO, __file__, 1, "x", None, None)
    record.created = created_s
    return handler.format(record).split(" INFO ")[0]


async def test_stderr_log_times_are_in_the_configured_time_zone_and_follow_a_reload(
        tmp_path: Path) -> None:
    # docs/behaviour.md §11: log times are in NTP_TimeZone. `sunpm run` set its stderr handler
    # up before reading any configuration, and its lines stayed in UTC for good.
    setup_stderr()
    at = 1_612_516_500.25        # 2021-02-05 09:15:00.250 UTC
    try:
        async with running_gateway(tmp_path, inverters=0) as plant:
            assert _stderr_time(at) == "2021-02-05 09:15:00.250"
            await reconfigure(plant, {"NTP_TimeZone": "Asia/Kolkata"})
            assert _stderr_time(at) == "2021-02-05 14:45:00.250"
            await reconfigure(plant, {"NTP_TimeZone": "Europe/Paris"})
            assert _stderr_time(at) == "2021-02-05 10:15:00.250"
    finally:
        for handler in list(logging.getLogger("sunpm").handlers):
            if type(handler).__name__ == "_StderrHandler":
                logging.getLogger("sunpm").removeHandler(handler)
