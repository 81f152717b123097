"""`/api/export` (docs/behaviour.md §5.3, §10.2) against a running gateway: a month of files
is spooled to disk and streamed, never held in memory (a 512 MB box)."""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import tempfile
import time
import zipfile
from pathlib import Path

from web_support import RunningGateway

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


def test_a_months_export_is_streamed_not_held_in_memory(
        fresh_gateway: RunningGateway) -> None:
    """The zip was built in memory and answered as one body: a 37 MiB export held 37 MiB three
    times over (its files, the zip, the answer) and left the gateway 177 MB larger. Now the
    zip is spooled to the data folder and streamed: while its first chunk is read, the gateway
    holds no more than a fraction of it."""
    now = time.time_ns()
    start = now - DAYS * 86_400 * NS
    _fill_a_month_of_log(fresh_gateway, start)
    received = 0
    with fresh_gateway.client() as client, tempfile.TemporaryFile() as out:
        gc.collect()
        before = _rss_mib()
        with client.stream("GET", "/api/export", timeout=300, params={
                "server": 1, "from": _iso(start - 60 * NS), "to": _iso(now)}) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"] == "application/zip"
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
        out.seek(0)
        with zipfile.ZipFile(out) as archive:
            assert archive.testzip() is None
            logs = [i for i in archive.infolist() if i.filename.startswith("LOG/")]
    assert received == size
    assert size > 30 * 2**20, size
    assert len(logs) >= DAYS
    print(f"export {size / 2**20:.1f} MiB: RSS {before:.0f} MiB before, {during:.0f} MiB "
          f"while sending, {after:.0f} MiB after")
    # The answer alone held `size`; what a window of it and the store's reads leave is less.
    assert during - before < 0.75 * size / 2**20, (before, during, size)
    assert not any(p.name.startswith("export-") for p in fresh_gateway.data_dir.iterdir())
