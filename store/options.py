"""The store's public value types: options, sequence ranges, the watermark, device stats and the
delivery predicates the outbox hands to the quota."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from config.model import FullPolicy as _ConfigFullPolicy

# STORE_FullPolicy is config's enum: one type, so `StoreOptions(full_policy=settings.
# store_full_policy)` is obeyed (the checks below compare by identity).
FullPolicy = _ConfigFullPolicy


# (device, segment's last seq, segment's last record time in ns) -> True when every record of the
# device up to there is delivered to every data-receiving server (docs/behaviour.md §6).
DeliveredFn = Callable[[str, int, int], bool]
# (segment's last journal seq, its last event time in ns) -> True when every event in it that some
# server gets is delivered (ALARM, PARAM, ACK, LOG, MQTT alarms and results).
JournalDeliveredFn = Callable[[int, int], bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreOptions:
    flush_s: float = 1.0  # STORE_FlushSeconds
    device_quota_bytes: int = 50 * 2**20  # STORE_DeviceQuotaMB
    full_policy: FullPolicy = FullPolicy.STOP  # STORE_FullPolicy
    # The rewrite of sealed segments (compact_sealed) uses zstd: the quota counts bytes on flash
    # (docs/behaviour.md §6)
    compress_sealed: bool = True
    # Rewrite each sealed segment once as an IPC file of large batches: a live segment holds one
    # small batch per commit, and scans over months of them would pay per batch (store_query).
    compact_sealed: bool = True
    seal_bytes: int = 4 * 2**20  # an eighth of the quota when that is smaller
    journal_quota_bytes: int | None = None  # None: the device quota
    max_pending_bytes: int = 64 * 2**20  # in-memory limit while commits fail
    # The commit log (store/_wal.py) is emptied past this size, once the segments it covers are
    # fsynced: its bound on disk, and on what an open after a power cut replays.
    wal_checkpoint_bytes: int = 64 * 2**20
    # A commit's frame at least this large goes to its segment with an fsync of its own instead
    # of through the commit log (bulk appends; 0: every frame through the log).
    wal_direct_frame_bytes: int = 256 * 2**10
    disk_error_log_interval_s: float = 60.0

    @property
    def segment_limit_bytes(self) -> int:
        return min(self.seal_bytes, max(self.device_quota_bytes // 8, 1))

    @property
    def journal_quota(self) -> int:
        return self.journal_quota_bytes or self.device_quota_bytes


@dataclass(frozen=True, slots=True)
class SeqRange:
    """Sequence numbers given to one append: `first..last` inclusive; empty when dropped."""

    first: int
    last: int
    dropped: bool = False

    def __len__(self) -> int:
        return max(0, self.last - self.first + 1)


@dataclass(frozen=True, slots=True)
class DeviceStats:
    usage_bytes: int
    quota_bytes: int
    segments: int
    last_seq: int
    dropped: int  # records dropped by the quota (stop) or the memory limit while the disk failed
    evicted: int  # records deleted undelivered (evict-oldest)
    full: bool  # inside a storage-full episode
