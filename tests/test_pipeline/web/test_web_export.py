"""`/api/export` and `/api/logs` (docs/behaviour.md §5.3, §10.2) against a running gateway: a
month of files or of log is spooled to disk and streamed, never held in memory (a 512 MB box)."""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from web_support import RunningGateway, running_gateway

from store.events import LogLevel, LogLine

NS = 1_000_000_000
DAYS = 30
LINES = 800
LINE_BYTES = 64 * 1024


def _rss_mib(field: str = "VmRSS:") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def _iso(ts_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts_ns // NS))


def _fill_a_month_of_log(gateway: RunningGateway, start_ns: int) -> None:
    """50 MiB of log lines that do not compress (random base64), spread over `DAYS` days: the
    LOG files of a month, each day's window small (the export renders one window at a time)."""
    assert gateway.gateway is not None and gateway.gateway.store is not None
    store = gateway.gateway.store
    step = DAYS * 86_400 * NS // LINES

    async def fill() -> None:
        for first in range(0, LINES, 64):
            await asyncio.gather(*(store.append_journal(
                "log", LogLine(level=LogLevel.INFO, category="test", message=base64.b64encode(
                    os.urandom(LINE_BYTES * 3 // 4)).decode()).to_fields(),
                ts_ns=start_ns + k * step) for k in range(first, min(first + 64, LINES))))

    gateway.call(fill())


@dataclass
class Month:
    gateway: RunningGateway
    start_ns: int
    end_ns: int


@pytest.fixture(scope="module")
def a_month_of_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Month]:
    with running_gateway(tmp_path_factory.mktemp("month"), inverters=1) as gateway:
        end = time.time_ns()
        start = end - DAYS * 86_400 * NS
        _fill_a_month_of_log(gateway, start)
        yield Month(gateway, start - 60 * NS, end)


def _download(month: Month, path: str, params: dict[str, str | int], out: IO[bytes]
              ) -> tuple[int, float, float, float]:
    """Size, and the RSS (MiB) before, while the first chunk is read, after."""
    received = 0
    with month.gateway.client() as client:
        gc.collect()
        before = _rss_mib()
        with client.stream("GET", path, timeout=300, params={
                **params, "from": _iso(month.start_ns), "to": _iso(month.end_ns)}) as answer:
            assert answer.status_code == 200
            size = int(answer.headers["content-length"])
            chunks = answer.iter_raw(64 * 1024)
            first = next(chunks)
            during = _rss_mib()
            out.write(first)
            received += len(first)
            for chunk in chunks:
                out.write(chunk)
                received += len(chunk)
        after = _rss_mib()
    assert received == size
    out.seek(0)
    print(f"{path} {size / 2**20:.1f} MiB: RSS {before:.0f} MiB before, {during:.0f} MiB "
          f"while sending, {after:.0f} MiB after")
    assert not any(p.name.startswith("download-") for p in month.gateway.data_dir.iterdir())
    return size, before, during, after


def test_a_months_export_is_streamed_not_held_in_memory(a_month_of_log: Month) -> None:
    """The zip was built in memory and answered as one body: a 38 MiB export held the gateway
    257 MB above its size while it was sent (its files, the zip, the answer). Now the zip is
    spooled to the data folder and streamed: while its first chunk is read, the gateway holds
    no more than a fraction of it."""
    with tempfile.TemporaryFile() as out:
        size, before, during, _ = _download(a_month_of_log, "/api/export", {"server": 1}, out)
        with zipfile.ZipFile(out) as archive:
            assert archive.testzip() is None
            logs = [i for i in archive.infolist() if i.filename.startswith("LOG/")]
    assert size > 30 * 2**20, size
    assert len(logs) >= DAYS
    # The answer alone held `size`; what a window of it and the store's reads leave is less.
    assert during - before < 0.75 * size / 2**20, (before, during, size)


def test_a_months_log_is_streamed_not_held_in_memory(a_month_of_log: Month) -> None:
    """A month of log was read whole, rendered whole and answered as one body: 50 MiB of it
    held the gateway 220 MB larger after it was sent (a month is up to the journal's quota,
    hundreds of MB once uncompressed). Now it is read an hour at a time into a spool."""
    with tempfile.TemporaryFile() as out:
        size, before, during, _ = _download(a_month_of_log, "/api/logs", {}, out)
        lines = out.read().splitlines()
    assert size > 45 * 2**20, size
    assert sum(b" INFO test: " in line for line in lines) == LINES
    assert during - before < 0.75 * size / 2**20, (before, during, size)
