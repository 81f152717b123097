"""The store's exceptions and findings; every `str()` is one line a user can act on."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from config.errors import SunpmError
from store.schema import SCHEMA_VERSION


class StoreError(SunpmError):
    """Root of the store's errors."""


class StoreLockedError(StoreError):
    """A second writer tried to open a store that is already open for writing."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path = path
        self.holder = holder
        super().__init__(
            f"{path}: store is already open for writing ({holder}); stop the other sunpm "
            "process or open it read-only"
        )


class StoreFullError(StoreError):
    """A quota or the disk left no room; raised only where a caller asked to be told."""


class StoreIOError(StoreError):
    """A commit failed (disk full, I/O error); pending appends wait and are retried."""


class StoreReadOnlyError(StoreError):
    """A write was attempted on a store opened read-only."""


class StoreClosedError(StoreError):
    """An append was attempted on a closed log."""


class SnapshotError(StoreError):
    """A definition or configuration snapshot is missing or does not match its hash."""


class ReportKind(StrEnum):
    TORN_TAIL = "torn_tail"
    DAMAGE = "damage"
    FOREIGN = "foreign"
    UNREADABLE = "unreadable"
    #: A sealed file written with a schema version this reader does not know: not decoded
    #: (`detail` is that version).
    SCHEMA = "schema"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreReport:
    """A finding about one file of the store, met while opening or reading it."""

    kind: ReportKind
    path: Path
    offset: int | None = None
    length: int | None = None
    kept_batches: int | None = None
    detail: str = ""
    cut: bool = True  # False when read-only: the bytes were left in place and ignored

    def __str__(self) -> str:
        # Messages of docs/behaviour.md §6, written exactly as given there.
        if self.kind is ReportKind.TORN_TAIL:
            done = "truncated" if self.cut else "ignored (read-only)"
            return (
                f"{self.path}: torn tail of {self.length} bytes {done}; "
                f"{self.kept_batches} complete batches kept"
            )
        if self.kind is ReportKind.DAMAGE:
            return f"{self.path}: damaged batch at byte {self.offset} ({self.length} bytes) skipped"
        if self.kind is ReportKind.FOREIGN:
            return f"{self.path}: not a sunpm store file ({self.detail}); skipped"
        if self.kind is ReportKind.SCHEMA:
            return (f"{self.path}: unknown schema version {self.detail or '(none)'!r} (this "
                    f"reader knows {SCHEMA_VERSION!r}); skipped")
        return f"{self.path}: unreadable ({self.detail}); skipped"
