"""`sunpm sd inspect`: what a dump holds, as a readable table or JSON.

uid, configuration snapshots, devices (records, time span, gaps, quota use), the journal, the
delivery cursors per server and stream (replayed from the journal), and every finding.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final

from config.errors import SunpmError
from exporters.views.context import ViewError, device_order
from store.delivery import DeliveryState

from .dump import Dump
from .scan import connect, definitions_table, journal_dataset, records_dataset

NS: Final = 1_000_000_000
#: A step between two records longer than this many times the device's usual step is a gap.
GAP_FACTOR: Final = 2
MAX_GAPS: Final = 20


def iso(ts_ns: int | None) -> str | None:
    if ts_ns is None:
        return None
    # Integer arithmetic: a float of nanoseconds since 1970 rounds 23:59:59.999999 up.
    moment = datetime.fromtimestamp(ts_ns // NS, UTC).replace(microsecond=ts_ns % NS // 1000)
    return moment.isoformat().replace("+00:00", "Z")


def progress_steps(dump: Dump) -> int:
    """How many times `inspect` calls `progress(1)`: each stream checked, each device scanned."""
    return 2 * len(dump.devices()) + 1


def inspect(dump: Dump, *, progress: Any = None) -> dict[str, Any]:
    # Every batch's CRC, so the damage a read-only open does not look for is listed too.
    dump.extra.extend(dump.check(progress))
    con = connect()
    con.register("r", records_dataset(dump, progress=progress))
    con.register("j", journal_dataset(dump))
    devices = _devices(dump, con)
    def_ids = [r[0] for r in con.execute("SELECT DISTINCT def FROM rec").fetchall()]
    missing = definitions_table(dump, [d for d in def_ids if d is not None]).missing
    journal = _journal(con)
    quota_mb = 50
    snapshot = dump.config_in_force()
    dump.check_snapshots()
    try:
        with dump.site() as site:
            quota_mb = site.settings.store_device_quota_mb
            names = {str(d.index): d.name for d in site.daq.devices}
    except SunpmError:
        names = {}
    for dev in devices:
        dev["name"] = names.get(dev["device"])
        dev["quota_bytes"] = quota_mb * 2**20
    return {
        "path": str(dump.path),
        "uid": dump.uid(),
        "config_in_force": snapshot,
        "config_snapshots": dump.log.config_snapshots(),
        "devices": devices,
        "journal": journal,
        "definitions": sorted(d for d in def_ids if d is not None),
        "definitions_missing": missing,
        "cursors": _cursors(dump),
        "findings": [f.to_json() for f in dump.findings],
    }


def _device_order(device: str) -> tuple[int, int, str]:
    """As the DATA files list devices (2 before 10, then IO, then TIC1); a name that is no
    daq.csv index after them."""
    try:
        return (*device_order(device), "")
    except ViewError:
        return (3, 0, device)


def _devices(dump: Dump, con: Any) -> list[dict[str, Any]]:
    """Each device's records, time span and gaps, from one scan of the records: the rows are
    grouped by record first (a few per record: one per definition), and everything is asked of
    that."""
    con.execute("""
        CREATE TEMP TABLE rec AS
        SELECT device, seq, def::VARCHAR AS def, epoch_ns(min(ts)) AS t, count(*) AS rows
        FROM r GROUP BY ALL""")
    rows = con.execute("""
        SELECT device, sum(rows)::BIGINT, count(DISTINCT seq), min(seq), max(seq), min(t), max(t)
        FROM rec GROUP BY device""").fetchall()
    gaps: dict[str, list[tuple[int, int]]] = {}
    for device, start, end in con.execute(f"""
        WITH t AS (SELECT DISTINCT device, t FROM rec),
        s AS (SELECT device, t, t - lag(t) OVER (PARTITION BY device ORDER BY t) AS step FROM t),
        m AS (SELECT device, median(step) AS usual FROM s GROUP BY device)
        SELECT s.device, s.t - s.step, s.t FROM s JOIN m USING (device)
        WHERE s.step > {GAP_FACTOR} * m.usual ORDER BY s.device, s.t""").fetchall():
        gaps.setdefault(device, []).append((start, end))
    found_rows = {row[0]: row for row in rows}
    out = []
    for device in sorted({*found_rows, *dump.devices()}, key=_device_order):
        entry: dict[str, Any] = {"device": device, "records": 0, "rows": 0, "seq_first": None,
                                 "seq_last": None, "first": None, "last": None, "gaps": [],
                                 "gap_count": 0, "deleted_before": 0}
        if device in found_rows:
            _, nrows, records, seq_min, seq_max, ts_min, ts_max = found_rows[device]
            found = gaps.get(device, [])
            entry.update({
                "records": records, "rows": nrows, "seq_first": seq_min, "seq_last": seq_max,
                "first": iso(ts_min), "last": iso(ts_max),
                "gaps": [{"from": iso(a), "to": iso(b)} for a, b in found[:MAX_GAPS]],
                "gap_count": len(found),
                "deleted_before": seq_min - 1 if seq_min and seq_min > 1 else 0,
            })
        entry["usage_bytes"] = dump.log.usage(device)
        entry["segments"] = len(dump.segments(device))
        out.append(entry)
    return out


def _journal(con: Any) -> dict[str, Any]:
    count, first, last, seq_min, seq_max = con.execute(
        "SELECT count(*), epoch_ns(min(ts)), epoch_ns(max(ts)), min(seq), max(seq) FROM j"
    ).fetchone()
    kinds = dict(con.execute(
        "SELECT kind::VARCHAR, count(*) FROM j GROUP BY 1 ORDER BY 1").fetchall())
    return {"events": count, "first": iso(first), "last": iso(last), "seq_first": seq_min,
            "seq_last": seq_max, "kinds": kinds}


def _cursors(dump: Dump) -> list[dict[str, Any]]:
    state = DeliveryState.from_table(dump.log.journal(kinds=["state", "window", "delivered"]))
    out = []
    for (server, stream), sd in sorted(state.streams.items(), key=lambda kv: (kv[0][0],
                                                                              kv[0][1].rank)):
        last = sd.last_built
        out.append({"server": server, "stream": stream.value,
                    "cursor": iso(sd.cursor_ns),
                    "windows": len(sd.windows),
                    "last_built": None if last is None else iso(last.spec.end_ns),
                    "undelivered": len(sd.pending())})
    for (server, stream), seq in sorted(state.events.items(), key=lambda kv: (kv[0][0],
                                                                              kv[0][1].rank)):
        out.append({"server": server, "stream": stream.value, "event_seq": seq})
    return out


def render_table(report: dict[str, Any]) -> str:
    count = len(report["config_snapshots"])
    lines = [f"dump      {report['path']}",
             f"uid       {report['uid'] or '(unknown: no configuration snapshot)'}",
             (f"config    {report['config_in_force'] or '-'} "
              f"({count} snapshot{'' if count == 1 else 's'})")]
    lines.append("")
    lines.append(_table(
        ["device", "name", "records", "first", "last", "gaps", "deleted", "usage", "segments"],
        [[d["device"], d.get("name") or "", d["records"], d["first"] or "-", d["last"] or "-",
          d["gap_count"], d["deleted_before"],
          f"{d['usage_bytes'] / 2**20:.1f}/{d['quota_bytes'] / 2**20:.0f} MiB",
          d["segments"]] for d in report["devices"]]))
    for d in report["devices"]:
        for gap in d["gaps"]:
            lines.append(f"  gap  device {d['device']}: {gap['from']} .. {gap['to']}")
    j = report["journal"]
    lines.append("")
    lines.append(f"journal   {j['events']} events" if not j["events"] else
                 f"journal   {j['events']} events, {j['first']} .. {j['last']}; "
                 + ", ".join(f"{k} {v}" for k, v in j["kinds"].items()))
    if report["cursors"]:
        lines.append("")
        lines.append(_table(
            ["server", "stream", "cursor", "windows", "last built", "undelivered"],
            [[c["server"], c["stream"], c.get("cursor") or "-", c.get("windows", ""),
              c.get("last_built") or "-", c.get("undelivered", "")]
             for c in report["cursors"] if "event_seq" not in c]))
    lines.append("")
    if report["findings"]:
        lines.append(f"findings  {len(report['findings'])}")
        lines.extend(f"  {f['level']}: {f['message']}" for f in report["findings"])
    else:
        lines.append("findings  none")
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False)
