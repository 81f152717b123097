"""The status object of docs/formats.md §12.4 (the parts the service knows today) and each server's
backlog: files (MQTT: data windows) waiting to go.

The backlog counts the undelivered files of windows already built, plus the files the next session
would build: the range `[last built end, now)` of each stream, split as docs/behaviour.md §5.1
splits it, gives one file per window and DATA/PARAM interface that has records or parameter reads
there, and one ALARM, ACK or LOG file per window holding such events. ACK counts every result and
LOG every log line (sessions send file-channel results and lines at `LOG_Level` only), so a file
that turns out empty may be counted.
"""

from __future__ import annotations

import socket
import time
from datetime import datetime
from importlib import metadata
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc

from config import Site
from config.model import DeviceKind, ServerSettings
from exporters.outbox import Outbox
from exporters.views.windows import DAY_NS
from pipeline.clock import NS_PER_S
from store.delivery import JOURNAL_STREAM_KINDS, Stream
from store.log import Log

_INTERFACES = {DeviceKind.IO: "IO", DeviceKind.TIC: "TIC"}


def _interfaces(site: Site) -> dict[str, str]:
    """The DATA file interface of each daq device (MODBUS when not IO or TIC)."""
    return {d.index: _INTERFACES.get(d.kind, "MODBUS") for d in site.daq.devices}


def _oldest(times: pa.Array) -> int:
    return int(pc.min(times).as_py())


def _windows_holding(start_ns: int, now_ns: int, first_ns: int | None,
                     times: pa.Array) -> set[int]:
    """The windows of `[start, now)`, split as a session would (`split_range`), that hold one of
    `times`, each named by its UTC day (or 0 when the range is one window). Counted from the
    items, not by going through the windows: a range from 1970 (a box that started with its
    clock there) is some 20,000 days, and the status is asked every minute."""
    # A slot that never built a window starts at its oldest item (docs/behaviour.md §5.1).
    start_ns = start_ns or (first_ns if first_ns is not None else now_ns)
    if start_ns >= now_ns or not len(times):
        return set()
    inside = pc.filter(times, pc.and_(pc.greater_equal(times, start_ns), pc.less(times, now_ns)))
    if not len(inside):
        return set()
    if now_ns - start_ns <= DAY_NS:
        return {0}
    return set(pc.unique(pc.divide(inside, DAY_NS)).to_pylist())


def _record_times(store: Log, start_ns: int) -> dict[str, pa.Array]:
    """Each device's records from `start_ns` on, as the time of the first record of each UTC
    day of each segment they are read from: what `_windows_holding` counts by (a day holds a
    record before `now` when its first does; the oldest is among them). The devices are read
    one at a time, a segment at a time and only their times, so the status never holds a
    device's records (it runs beside the sessions, every minute, and every few seconds while
    the dashboard is open): a month's backlog read whole, and each of its times kept, were some
    100 MB a device."""
    times: dict[str, pa.Array] = {}
    for dev in store.devices():
        firsts: list[int] = []
        for part in store.iter_records(dev, start_ns=start_ns or None, columns=["ts"]):
            if not part.num_rows:
                continue
            ts = part.column("ts").cast(pa.int64())
            low, high = (int(v.as_py()) for v in pc.min_max(ts).values())
            if low // DAY_NS == high // DAY_NS:
                firsts.append(low)      # a segment is most often a day's
                continue
            by_day = pa.table({"day": pc.divide(ts, DAY_NS), "ts": ts}).group_by(
                "day").aggregate([("ts", "min")])
            firsts.extend(by_day.column("ts_min").to_pylist())
        if firsts:
            times[dev] = pa.array(firsts, pa.int64())
    return times


def backlog(outbox: Outbox, store: Log, site: Site, now_ns: int) -> int:
    """Files waiting for server `outbox.server` (blocking: reads the journal and records)."""
    state = outbox.state()
    interface_of = _interfaces(site)
    waiting = 0
    for stream in outbox.streams:
        sd = state.stream(outbox.server, stream)
        for window in sd.pending():
            waiting += sum((window.spec.end_ns, f.name) not in sd.delivered
                           for f in window.files)
        last = sd.last_built
        start = last.spec.end_ns if last is not None else 0
        if stream is Stream.DATA:
            times = _record_times(store, start)
            first = min((_oldest(t) for t in times.values()), default=None)
            waiting += len({(window, interface_of.get(dev, "MODBUS"))
                            for dev, t in times.items()
                            for window in _windows_holding(start, now_ns, first, t)})
            continue
        journal = store.journal(start_ns=start or None,
                                kinds=list(JOURNAL_STREAM_KINDS[stream]))
        if not journal.num_rows:
            continue
        ts = journal.column("ts").cast(pa.int64())
        first = _oldest(ts)
        if stream is Stream.PARAM:
            waiting += len({(window, interface_of.get(str(d), "MODBUS"))
                            for d in set(journal.column("device").to_pylist()) if d
                            for window in _windows_holding(
                                start, now_ns, first,
                                pc.filter(ts, pc.equal(journal.column("device"), d)))})
        else:
            waiting += len(_windows_holding(start, now_ns, first, ts))
    return waiting


def server_mode(settings: ServerSettings) -> str:
    """A server's `mode` (docs/formats.md §13.3)."""
    if settings.type.is_mqtt:
        return "strategy_mqtt"
    if settings.type.is_file_server:
        return "strategy_wsun1_compliant" if settings.slot == 1 else \
            "strategy_wsun1_compliant_backup"
    return "none"


def default_ip() -> str:
    """The address of the default route (no packet is sent; empty without one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
            return str(sock.getsockname()[0])
        except OSError:
            return ""


def alarms_since(store: Log, start_ns: int) -> int:
    """How many alarms the journal holds from `start_ns` on (blocking)."""
    return int(store.journal(start_ns=start_ns, kinds=["alarm"]).num_rows)


def status_object(*, site: Site, store: Log, started_s: float,
                  servers: list[dict[str, Any]], dropped: dict[str, int],
                  last_records: dict[str, tuple[int, bool]]) -> dict[str, Any]:
    """The parts of docs/formats.md §12.4's object this module knows (the gateway adds clock,
    modem, ip, scripts and the alarms of the last 24 h); `last_records`: per device its last
    record's time and whether it held a good value."""
    now = time.time()
    zone = ZoneInfo(site.settings.time_zone)
    try:
        version = metadata.version("sunpm")
    except metadata.PackageNotFoundError:
        version = "0"
    stored = set(store.devices())
    polled = {d.index for d in site.polled_devices}
    quota = site.settings.store_device_quota_mb * 2**20
    devices = []
    for d in site.daq.devices:
        used = store.usage(d.index) if d.index in stored else 0
        end, good = last_records.get(d.index, (None, False))
        state = "absent" if d.index not in polled else "full" if used >= quota else \
            "ok" if good else "fail"
        devices.append({"index": d.index, "name": d.name, "state": state,
                        "lastRecord": "" if end is None else
                        datetime.fromtimestamp(end / NS_PER_S, zone).strftime("%y/%m/%d-%H:%M:%S"),
                        "storeBytes": used, "quotaBytes": quota,
                        "dropped": dropped.get(d.index, 0)})
    return {"uid": site.uid, "version": version,
            "date": datetime.fromtimestamp(now, zone).strftime("%y/%m/%d-%H:%M:%S"),
            "timestamp": int(now * 1000), "timeZone": site.settings.time_zone,
            "uptimeS": int(now - started_s), "servers": servers, "devices": devices}


def last_text(end_ns: int | None, ok: bool | None, reason: str, time_zone: str) -> str:
    """A server's `last`: `DD/MM hh:mm OK` or `DD/MM hh:mm <reason>` (docs/formats.md §13.3)."""
    if end_ns is None or ok is None:
        return ""
    when = datetime.fromtimestamp(end_ns / NS_PER_S, ZoneInfo(time_zone))
    return f"{when:%d/%m %H:%M} " + ("OK" if ok else reason)
