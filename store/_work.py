"""What passes between the event loop and the writer: pending appends (`PendingBatch`,
`PendingEvent`), a commit's input (`Work`) and result (`Outcome`, `DeviceCommit`), a device's
quota counters, and the small encoders every room uses."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from store._stream import Segment, Stream
from store.errors import StoreReport
from store.options import SeqRange

#: A framed batch's bytes as written (store/_ipc.py `frame_batch`).
Frame = bytes | bytearray


@dataclass(slots=True)
class PendingBatch:
    batch: pa.RecordBatch
    future: asyncio.Future[SeqRange] | None
    nbytes: int
    order: int  # arrival number: the oldest goes first when memory must be freed


@dataclass(slots=True)
class PendingEvent:
    ts_ns: int
    kind: str
    device: str | None
    def_: str | None
    body: str
    future: asyncio.Future[int] | None


@dataclass(slots=True)
class Counters:
    """A device's quota counters. Owner: the writer (its commit job for the device, one at a
    time); other threads only read them (`stats`). Drops decided on the loop (the memory
    bound while the disk fails) are counted in `Log._memory_dropped` and handed over in `Work`."""

    dropped: int = 0
    evicted: int = 0
    full: bool = False
    episode_dropped: int = 0
    episode_evicted: int = 0


@dataclass(slots=True)
class Work:
    records: dict[str, list[PendingBatch]]
    journal: list[PendingEvent]
    memory_drops: dict[str, int]  # records dropped on the loop since the last commit, per device


@dataclass(slots=True)
class Outcome:
    records: dict[str, int] = field(default_factory=dict)  # per device: its last seq stored
    failed_records: dict[str, list[PendingBatch]] = field(default_factory=dict)
    journal: list[int] = field(default_factory=list)
    failed_journal: list[PendingEvent] = field(default_factory=list)
    error: OSError | None = None
    compact: list[tuple[str, Segment]] = field(default_factory=list)
    carry: list[PendingEvent] = field(default_factory=list)  # for the next commit
    # Acknowledgements, given on the loop after the watermark moved (never before).
    # Per device its committed items and their results, in order (no pair built per item).
    acks: list[tuple[list[PendingBatch], list[SeqRange]]] = field(default_factory=list)
    journal_acks: list[tuple[asyncio.Future[int], int]] = field(default_factory=list)


def now_ns() -> int:
    return time.time_ns()



@dataclass(slots=True)
class DeviceCommit:
    """What one device's commit job returns to the writer thread."""

    results: list[SeqRange] = field(default_factory=list)
    last_seq: int = 0  # the device's last seq once written (its watermark after the fsync)
    failure: OSError | None = None
    events: list[PendingEvent] = field(default_factory=list)
    compact: list[tuple[str, Segment]] = field(default_factory=list)
    saved_seq: int = 0  # the stream's next seq before this commit (its rollback)
    logged: list[tuple[Path, int, Frame]] = field(default_factory=list)  # for the commit log
    touched: list[tuple[Stream, Segment]] = field(default_factory=list)


@dataclass(slots=True)
class JournalCommit:
    """The journal's part of a commit, written and waiting for the commit log's fsync."""

    events: list[PendingEvent]
    saved_seq: int
    seqs: list[int] = field(default_factory=list)
    logged: list[tuple[Path, int, Frame]] = field(default_factory=list)
    touched: list[tuple[Stream, Segment]] = field(default_factory=list)



def json_text(body: Mapping[str, object]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def report_body(report: StoreReport) -> dict[str, object]:
    return {"event": report.kind.value, "path": str(report.path), "offset": report.offset,
            "length": report.length, "kept_batches": report.kept_batches, "message": str(report)}


def iso_utc(ts_ns: int | None) -> str:
    if ts_ns is None:
        return "?"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts_ns // 1_000_000_000))
