"""`PollerHost.last_good`: each variable's last good polled value, whatever the polls between
(all good, partly failed, failed), as the host samples them or is asked between samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from config.model import Quality
from pipeline.clock import SystemClock
from pipeline.drivers._base import GoodReadings, Reading, Readings
from pipeline.scripts import PollerHost
from store import Log, StoreOptions

POSITIONS = {10: 0, 11: 1, 12: 2}


class LatestPolls:
    """What the host reads of the poll loop: each device's last poll, set by the test."""

    def __init__(self) -> None:
        self.polls: dict[str, Readings] = {}

    def latest(self, index: str) -> Readings | None:
        return self.polls.get(index)


def good(ts: int, *values: int) -> Readings:
    return Readings(device="1", ts_ns=ts, values=GoodReadings(POSITIONS, list(values)))


def partial(ts: int, **values: int | None) -> Readings:
    return Readings(device="1", ts_ns=ts, values={
        int(k[1:]): Reading(v, Quality.GOOD) if v is not None else Reading(None, Quality.TIMEOUT)
        for k, v in values.items()})


@pytest.mark.parametrize("sampled", [True, False], ids=["each poll sampled", "asked only"])
async def test_last_good_value_survives_failed_and_partial_polls(tmp_path: Path,
                                                                 sampled: bool) -> None:
    store = await Log.open(tmp_path / "store", StoreOptions(flush_s=0.05))
    polls = LatestPolls()
    device: Any = type("D", (), {"index": "1", "def_file": "d.csv"})()
    host = PollerHost(devices=[device], definitions={"d.csv": object()},  # type: ignore[dict-item]
                      poller=polls, store=store, alarm=None,  # type: ignore[arg-type]
                      clock=SystemClock())
    try:
        sequence: list[tuple[Readings, dict[int, tuple[int, int] | None]]] = [
            (good(1, 100, 110, 120), {10: (100, 1), 11: (110, 1), 12: (120, 1)}),
            (good(2, 101, 111, 121), {10: (101, 2), 11: (111, 2), 12: (121, 2)}),
            (partial(3, v10=102, v11=None, v12=None), {10: (102, 3), 11: (111, 2),
                                                       12: (121, 2)}),
            (partial(4, v10=None, v11=None, v12=None), {10: (102, 3), 11: (111, 2),
                                                        12: (121, 2)}),
            (good(5, 104, 114, 124), {10: (104, 5), 11: (114, 5), 12: (124, 5)}),
            (partial(6, v10=None, v11=115), {10: (104, 5), 11: (115, 6), 12: (124, 5)}),
            (good(7, 106, 116, 126), {10: (106, 7), 11: (116, 7), 12: (126, 7)}),
            (good(8, 107, 117, 127), {10: (107, 8), 11: (117, 8), 12: (127, 8)}),
        ]
        for poll, expected in sequence:
            polls.polls["1"] = poll
            if sampled or poll.ts_ns in (2, 5):
                # The sampler sees each poll; otherwise a poll is seen only when asked about.
                host._latest("1")
            if not sampled and poll.ts_ns not in (2, 5, 8):
                continue
            for var, want in expected.items():
                got = host.last_good("1", var)
                assert (None if got is None else (got.raw, got.ts_ns)) == want, (poll.ts_ns, var)
        assert host.last_good("1", 99) is None
        assert host.last_good("2", 10) is None
    finally:
        await store.close()
