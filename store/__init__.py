"""sunpm store: the crash-safe append-only event log (docs/architecture.md §3, docs/behaviour.md
§6).

Public API; everything else in the package is private. See store/README.md.
"""

from store.errors import (
    ReportKind,
    SnapshotError,
    StoreClosedError,
    StoreError,
    StoreFullError,
    StoreIOError,
    StoreLockedError,
    StoreReadOnlyError,
    StoreReport,
)
from store.events import Watermark
from store.log import Log
from store.options import (
    DeliveredFn,
    DeviceStats,
    FullPolicy,
    JournalDeliveredFn,
    SeqRange,
    StoreOptions,
)
from store.schema import JOURNAL_SCHEMA, RECORDS_SCHEMA, SCHEMA_VERSION
from store.state import (
    DEFAULT_REDUCERS,
    GatewayState,
    JournalEvent,
    Reducer,
    ReplayState,
    replay,
)
from store.traces import (
    TRACE_INTERFACES,
    TraceDeliveredFn,
    TraceEntry,
    TraceOptions,
    TraceStats,
    TraceStore,
    UnknownTraceInterface,
)

__all__ = [
    "DEFAULT_REDUCERS",
    "JOURNAL_SCHEMA",
    "RECORDS_SCHEMA",
    "SCHEMA_VERSION",
    "TRACE_INTERFACES",
    "DeliveredFn",
    "DeviceStats",
    "FullPolicy",
    "GatewayState",
    "JournalDeliveredFn",
    "JournalEvent",
    "Log",
    "Reducer",
    "ReplayState",
    "ReportKind",
    "SeqRange",
    "SnapshotError",
    "StoreClosedError",
    "StoreError",
    "StoreFullError",
    "StoreIOError",
    "StoreLockedError",
    "StoreOptions",
    "StoreReadOnlyError",
    "StoreReport",
    "TraceDeliveredFn",
    "TraceEntry",
    "TraceOptions",
    "TraceStats",
    "TraceStore",
    "UnknownTraceInterface",
    "Watermark",
    "replay",
]
