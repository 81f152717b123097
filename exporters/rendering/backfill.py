"""Backfill: rebuild any past range of one server's windows without moving a cursor.

docs/behaviour.md §5.3. Windows the outbox built (journaled `window` events) that overlap the range
are rendered again whole from their own membership and snapshots, so their bytes equal the files
delivered; the rest of the range is cut at UTC midnights and at `to` and rendered with the store
as it is now. Shared by `sunpm export` and the offline re-export: imports `config`, `store` and
`exporters.views` only (docs/architecture.md §2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from config.errors import SunpmError
from exporters.views.windows import Rendered, WindowSource, ns_to_datetime, split_backfill
from store.delivery import BuiltWindow, DeliveryState, PreviousWindow, Stream, WindowSpec
from store.events import Watermark


class BackfillError(SunpmError):
    """A range cannot be rebuilt as asked."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BackfillWindow:
    spec: WindowSpec
    built: BuiltWindow | None       # the journaled window it rebuilds, None for a new range
    delivered: bool                 # every file of it confirmed by the server


#: What the export commands say of a file rebuilt with `allow_partial` from fewer records than
#: were delivered (its text differs: never "same text, other compressed bytes").
PARTIAL: Final = "records no longer all stored; rebuilt from what is left, not the text delivered"


@dataclass(frozen=True, slots=True, kw_only=True)
class BackfillFile:
    rendered: Rendered
    window: BackfillWindow
    #: None: no journaled file to compare with; True: same bytes as journaled; False: they
    #: differ (another zlib, or with `allow_partial` records no longer stored).
    same_bytes: bool | None
    #: Likewise of the text before compression: False only with `allow_partial`, the file
    #: rebuilt from what is left of its records.
    same_text: bool | None = None


class RecordReader(Protocol):
    def devices(self) -> list[str]: ...

    def records(self, device: str) -> pa.Table: ...


def missing_records(log: RecordReader, start_ns: int, end_ns: int) -> list[str]:
    """Devices whose records of `[start, end)` the quota deleted (docs/behaviour.md §5.3 step 4).

    Record numbers start at 1 and have no gap, so a device whose oldest stored record has a
    higher number lost the ones before it, all timed at or before that record.
    """
    problems = []
    for device in log.devices():
        table = log.records(device)
        if table.num_rows == 0:
            continue
        seqs = table.column("seq")
        first = int(pc.min(seqs).as_py())
        if first <= 1:
            continue
        oldest_ns = int(pc.min(table.column("ts").cast(pa.int64())).as_py())
        if start_ns < oldest_ns and end_ns > start_ns:
            problems.append(f"device {device}: records 1..{first - 1} were deleted by the quota; "
                            f"the range is missing records before "
                            f"{ns_to_datetime(oldest_ns).isoformat()}")
    return problems


def plan_backfill(state: DeliveryState, source: WindowSource, *, server: int,
                  streams: Sequence[Stream], start_ns: int, end_ns: int) -> list[BackfillWindow]:
    """Windows covering `[start, end)`, oldest first (equal ends in stream order)."""
    now: Watermark | None = None
    plan: list[BackfillWindow] = []
    for stream in streams:
        sd = state.stream(server, stream)
        built = sd.windows
        overlapping = [w for w in built if w.spec.end_ns > start_ns and w.spec.start_ns < end_ns]
        for w in overlapping:
            plan.append(BackfillWindow(spec=w.spec, built=w, delivered=sd.is_delivered(w)))
        # Journaled windows cover [first start, last end); the rest of the range is new.
        covered_from = built[0].spec.start_ns if built else end_ns
        covered_to = built[-1].spec.end_ns if built else end_ns
        if now is None:
            now = source.membership()
        gaps: list[tuple[int, int, BuiltWindow | None]] = []
        if start_ns < min(covered_from, end_ns):
            gaps.append((start_ns, min(covered_from, end_ns), None))
        if built and covered_to < end_ns:
            gaps.append((max(covered_to, start_ns), end_ns, built[-1]))
        for gap_start, gap_end, last in gaps:
            for a, b in split_backfill(gap_start, gap_end):
                if last is not None and a == last.spec.end_ns:
                    after = PreviousWindow(end_ns=a, membership=last.spec.membership)
                else:
                    after = PreviousWindow(end_ns=a, membership=now)
                spec = WindowSpec(server=server, stream=stream, start_ns=a, end_ns=b,
                                  membership=now, after=after,
                                  config=source.config_snapshot(b))
                plan.append(BackfillWindow(spec=spec, built=None, delivered=False))
    plan.sort(key=lambda w: (w.spec.end_ns, w.spec.stream.rank))
    return plan


def render_backfill(source: WindowSource, plan: Sequence[BackfillWindow], *,
                    allow_partial: bool = False) -> Iterator[list[BackfillFile]]:
    """Render each planned window (blocking); one list per window, checked against the journal."""
    for window in plan:
        rendered = source.render(window.spec)
        files = []
        journaled = {} if window.built is None else {f.name: f for f in window.built.files}
        for r in rendered:
            same: bool | None = None
            text: bool | None = None
            if r.name in journaled:
                expected = journaled[r.name]
                text = r.text_sha256 == expected.text_sha256
                if not text and not allow_partial:
                    raise BackfillError(
                        f"{r.name}: rebuilt text differs from the file delivered; its records "
                        f"are no longer all stored (use --allow-partial to export anyway)")
                same = hashlib.sha256(r.data).hexdigest() == expected.sha256
            files.append(BackfillFile(rendered=r, window=window, same_bytes=same, same_text=text))
        yield files
