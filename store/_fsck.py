"""fsck: `Log.check()` walks every batch of every segment again, all bytes on disk."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pyarrow as pa

from store._core import LogCore
from store._segment import footer_matches, map_file, scan_ipc_file
from store._stream import Segment
from store.errors import ReportKind, StoreReport


class Fsck(LogCore):
    def check(self, progress: Callable[[int], None] | None = None) -> list[StoreReport]:
        """Verify every batch of every segment (CRC-32C), as fsck does; blocking, reads all.
        `progress(1)` as each stream (a device's, the journal) is done."""
        found: list[StoreReport] = []
        for stream in self._all_streams():
            with self._lock:
                segs = [copy.copy(s) for s in stream.segments]
            for seg in segs:
                seg.frames = None  # everything walked again, damage between frames included
                if not seg.ipc_file and (self.read_only or seg.sealed):
                    # Every byte on disk; a writer's open segment only up to what is committed
                    # (a write may be in flight after it).
                    seg.committed = stream.file_size(seg.path)
                try:
                    _, findings = stream.read(seg)
                    if seg.ipc_file and not findings:
                        findings = _footer_findings(seg, stream.schema)
                except (OSError, pa.ArrowInvalid) as err:
                    findings = [StoreReport(kind=ReportKind.UNREADABLE, path=seg.path,
                                            detail=str(err).splitlines()[0])]
                if not seg.ipc_file and self.read_only and not seg.sealed:
                    # A read-only open's last segment: failing bytes at its end are a torn tail
                    # it ignores, not damage.
                    findings = [_as_torn(f, seg) if f.offset is not None
                                and f.offset + (f.length or 0) == seg.committed
                                and f.kind is ReportKind.DAMAGE else f for f in findings]
                found.extend(findings)
            if progress is not None:
                progress(1)
        return found



def _footer_findings(seg: Segment, schema: pa.Schema) -> list[StoreReport]:
    """A sealed file's footer, which no read uses (they walk the file) and no CRC covers, is
    damaged when it does not list exactly the verified messages under the file's schema: a
    reader that follows it (any Arrow reader, `Log.verified_file`) would not read them."""
    data = map_file(seg.path)
    scan, meta = scan_ipc_file(data, schema)
    if not scan.header_ok or footer_matches(data, scan, schema.with_metadata(meta)):
        return []
    return [StoreReport(kind=ReportKind.DAMAGE, path=seg.path, offset=scan.good_end,
                        length=len(data) - scan.good_end, detail="footer")]


def _as_torn(report: StoreReport, seg: Segment) -> StoreReport:
    return StoreReport(kind=ReportKind.TORN_TAIL, path=seg.path, offset=report.offset,
                       length=report.length, cut=False)


