"""`sunpm sd fsck`: a read-only check of every segment, the journal and the snapshots.

Exit codes (docs/behaviour.md §12): 0 clean, 1 damaged but readable (what is readable is said),
2 unreadable (not a store, or no segment of it can be read). Foreign files are listed without
changing the code: they are not the store's, so nothing of the store is lost through them.

The batches are verified by the store (`Log.check`: CRC-32C of every batch of every stream
segment, every sealed file read whole); this module adds the snapshots and sums up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from store import ReportKind

from .dump import Dump, Finding, Level, merge_findings
from .scan import connect, definitions_table, journal_dataset, records_dataset

CLEAN: Final = 0
DAMAGED: Final = 1
UNREADABLE: Final = 2


@dataclass(slots=True)
class FsckResult:
    code: int
    findings: list[Finding]
    segments: int
    readable_rows: dict[str, int] = field(default_factory=dict)   # per device, and `journal`

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "segments": self.segments,
                "readable_rows": self.readable_rows,
                "findings": [f.to_json() for f in self.findings]}

    def lines(self) -> list[str]:
        out = [f"{f.level}: {f.message}" for f in self.findings]
        rows = sum(v for k, v in self.readable_rows.items() if k != "journal")
        out.append(f"{self.segments} segments checked; readable: {rows} record rows in "
                   f"{len(self.readable_rows) - 1} devices, "
                   f"{self.readable_rows.get('journal', 0)} journal events")
        out.append({CLEAN: "clean", DAMAGED: "damaged, readable part listed above",
                    UNREADABLE: "unreadable"}[self.code])
        return out


def progress_steps(dump: Dump) -> int:
    """How many times `fsck` calls `progress(1)`: each stream checked, each device scanned."""
    return 2 * len(dump.devices()) + 1


def fsck(dump: Dump, *, progress: Any = None) -> FsckResult:
    checked = dump.check(progress)
    streams = [*dump.devices(), "journal"]
    segments = sum(len(dump.segments(stream)) for stream in streams)
    con = connect()
    con.register("r", records_dataset(dump, progress=progress))
    con.register("j", journal_dataset(dump))
    # One scan: the rows per device and definition give both the counts and the snapshots.
    readable = dict.fromkeys(dump.devices(), 0)
    def_ids = set()
    for device, def_id, rows in con.execute(
            "SELECT device, def::VARCHAR, count(*) FROM r GROUP BY ALL").fetchall():
        readable[device] = readable.get(device, 0) + rows
        if def_id is not None:
            def_ids.add(def_id)
    readable["journal"] = con.execute("SELECT count(*) FROM j").fetchone()[0]  # type: ignore[index]
    definitions_table(dump, sorted(def_ids))
    for snapshot in dump.log.config_snapshots():
        dump.config_files(snapshot)
    dump.check_snapshots()
    findings = sorted(merge_findings(dump.findings, checked),
                      key=lambda f: (f.level != Level.ERROR, str(f.path)))
    data = [f for f in findings if f.kind != ReportKind.FOREIGN.value]
    # Unreadable: nothing of the store could be read, and not because it holds nothing.
    if not any(readable.values()) and any(f.kind in ("unreadable", "schema") for f in data):
        code = UNREADABLE
    elif data:
        code = DAMAGED
    else:
        code = CLEAN
    return FsckResult(code, findings, segments, dict(sorted(readable.items())))

