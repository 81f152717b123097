"""Shared pieces of the delivery tests: a real FTP peer process and a small window source.

`DemoSource` renders each window's records and alarm events as plain lines, gzip'ed the way the
views do. It exercises the outbox (membership, windows, bytes, names) on the real store without
depending on the definition and configuration snapshots the full views need.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from exporters.views.gz import gzip_bytes
from exporters.views.windows import Rendered
from store.delivery import Stream, WindowSpec
from store.events import Watermark
from store.log import Log

PEER = Path(__file__).with_name("_ftp_peer.py")
TREE = ("CONFIG", "DEF", "SCRIPT", "CERT", "DATA", "CMD", "ALARM", "LOG", "BIN")
NS = 1_000_000_000


def file_timestamp(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns // NS, UTC).strftime("%y%m%d_%H%M%S")


def make_tree(root: Path, *, without: Sequence[str] = ()) -> Path:
    for name in TREE:
        if name not in without:
            (root / name).mkdir(parents=True, exist_ok=True)
    return root


@dataclass(slots=True)
class FtpPeer:
    """A pyftpdlib server process; `stop()`/`start()` give an outage on the same port."""

    root: Path
    events: Path
    extra: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        cmd = [sys.executable, str(PEER), "--root", str(self.root), "--events", str(self.events),
               "--port", str(self.port), *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("PORT "), line
        self.port = int(line.split()[1])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None

    def log(self) -> list[tuple[str, str]]:
        if not self.events.exists():
            return []
        return [tuple(line.split(" ", 1)) for line in self.events.read_text().splitlines()]  # type: ignore[misc]

    def finals(self) -> list[str]:
        """Final names in the order they appeared (renames, and stores of non-`.tmp` names)."""
        out = []
        for op, path in self.log():
            if op == "RNTO" or (op == "STOR" and not path.endswith(".tmp")):
                out.append(path)
        return out


@contextmanager
def ftp_peer(root: Path, events: Path, *extra: str) -> Iterator[FtpPeer]:
    peer = FtpPeer(root=root, events=events, extra=list(extra))
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


class DemoSource:
    """WindowSource over a real store: DATA = records of every device, ALARM = `alarm` events."""

    def __init__(self, log: object, uid: str = "WPMTEST01", pad_bytes: int = 0) -> None:
        self._log = log
        self.uid = uid
        self.pad_bytes = pad_bytes

    def _records(self) -> dict[str, pa.Table]:
        log = self._log
        return {dev: log.records(dev) for dev in log.devices()}  # type: ignore[attr-defined]

    def _alarms(self) -> pa.Table:
        table = self._log.journal(kinds=["alarm"])  # type: ignore[attr-defined]
        return table.sort_by("seq")

    def oldest_ns(self, stream: Stream) -> int | None:
        if stream is Stream.DATA:
            times = [t.column("ts").cast(pa.int64())[0].as_py() for t in self._records().values()
                     if t.num_rows]
        elif stream is Stream.ALARM:
            table = self._alarms()
            times = table.column("ts").cast(pa.int64()).to_pylist()
        else:
            return None
        return min(times) if times else None

    def first_item_ns(self, stream: Stream, start_ns: int, end_ns: int) -> int | None:
        if stream is Stream.DATA:
            times = [t for table in self._records().values()
                     for t in table.column("ts").cast(pa.int64()).to_pylist()]
        elif stream is Stream.ALARM:
            times = self._alarms().column("ts").cast(pa.int64()).to_pylist()
        else:
            return None
        inside = [t for t in times if start_ns <= t < end_ns]
        return min(inside) if inside else None

    def membership(self) -> Watermark:
        return self._log.watermark()  # type: ignore[attr-defined, no-any-return]

    def config_snapshot(self, end_ns: int) -> str:
        return "demo"

    def render(self, spec: WindowSpec) -> list[Rendered]:
        stamp = file_timestamp(spec.end_ns)
        lines: list[str] = []
        if spec.stream is Stream.DATA:
            for dev, table in sorted(self._records().items()):
                ts = table.column("ts").cast(pa.int64()).to_pylist()
                seqs = table.column("seq").to_pylist()
                values = table.column("value").to_pylist()
                for t, s, v in zip(ts, seqs, values, strict=True):
                    if spec.has_record(dev, s, t):
                        lines.append(f"{dev};{s};{t};{v}")
            name, directory = f"{self.uid}_MODBUS_{stamp}.csv.gz", "/DATA"
        elif spec.stream is Stream.ALARM:
            table = self._alarms()
            for t, s, b in zip(table.column("ts").cast(pa.int64()).to_pylist(),
                               table.column("seq").to_pylist(),
                               table.column("body").to_pylist(), strict=True):
                if spec.has_event(s, t):
                    lines.append(f"{s};{t};{b}")
            name, directory = f"{self.uid}_AL_{stamp}.csv.gz", "/ALARM"
        else:
            return []
        if not lines:
            return []
        # Incompressible padding makes uploads long enough to be cut by a kill.
        pad = b""
        if self.pad_bytes:
            seed = hashlib.sha256(name.encode()).digest()
            pad = b"".join(hashlib.sha256(seed + k.to_bytes(4, "big")).digest()
                           for k in range(self.pad_bytes // 32))
        text = ("\n".join(lines) + "\n").encode() + pad.hex().encode()
        return [Rendered(name=name, directory=directory, data=gzip_bytes(text),
                         text_sha256=hashlib.sha256(text).hexdigest())]


def record_lines(data: bytes) -> list[str]:
    import gzip
    text = gzip.decompress(data).decode()
    return [line for line in text.split("\n") if ";" in line]


def dumps(obj: object) -> str:
    return json.dumps(obj, sort_keys=True)


DAY = 86_400
#: 2021-02-01 00:00 UTC.
T0 = 1_612_137_600


def records_batch(times_s: list[int], value0: float = 0.0) -> pa.RecordBatch:
    n = len(times_s)
    return pa.record_batch({
        "ts": pa.array([t * NS for t in times_s], pa.timestamp("ns", tz="UTC")),
        "var": pa.array([1] * n, pa.int32()),
        "value": pa.array([value0 + k for k in range(n)], pa.float64()),
        "vmin": pa.array([None] * n, pa.float64()),
        "vmax": pa.array([None] * n, pa.float64()),
        "text": pa.array([None] * n, pa.string()),
        "quality": pa.array([0] * n, pa.uint8()),
        "def": pa.array(["0" * 64 + ":demo.csv"] * n).dictionary_encode(),
    })


async def fill(log: Log, start_s: int, end_s: int, *, devices: tuple[str, ...] = ("1", "2"),
               period_s: int = 600, alarm_every_s: int = 6 * 3600) -> None:
    """Records every `period_s` in `[start, end)` for each device, and alarm events."""
    times = list(range(start_s + period_s, end_s + 1, period_s))
    # One commit for all: each append completes only at the commit holding it.
    appends = [log.append_records(dev, records_batch(times, value0=1000.0 * k))
               for k, dev in enumerate(devices)]
    await asyncio.gather(*appends, log.commit())
    # One commit per UTC day of alarms, as a live gateway journals them by the wall clock (and
    # the store, at the time of writing, read back repeated rows for a commit spanning days).
    alarms = list(range(start_s + alarm_every_s // 2, end_s, alarm_every_s))
    for day in sorted({t // DAY for t in alarms}):
        await asyncio.gather(*[
            log.append_journal("alarm", {"source": "GATEWAY", "alarm": "Power ON"}, ts_ns=t * NS)
            for t in alarms if t // DAY == day], log.commit())
