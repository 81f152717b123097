"""The store's one delivery-state model (docs/architecture.md §4.1): what was built for and
delivered to every server, folded once from the journal and shared.

One `DeliveryLedger` per store (`exporters.retention.install_retention` makes it, the service
keeps it across configuration reloads). It folds the journal's `window` and `delivered` events
through `DeliveryState.reduce`, the only reducer of those kinds:

- at its first `refresh`, from the latest `state` snapshot on (`store.Log.journal_since_latest`
  reads only the segments since the snapshot, newest first);
- at every later `refresh`, only the events committed since the last one;
- in `observe`, an event as the outbox or an MQTT session journals it (no I/O), so the quota
  sees a delivery as soon as it is acknowledged.

Every server's outbox plans from it (`state()`, a copy of its own), the quota's marks are
computed from it (`apply`: `exporters.retention.DeliveryTracker`), and the delivery section of
`state` snapshots is written from it (`DeliveryTracker.state_body`). Each stream's windows behind its cursor's
are forgotten after every fold (`StreamDelivery.prune`): neither the memory nor a fold grows with
the journal's age.

Threads: `refresh` reads the journal outside the lock the fold takes, so `observe` (called on the
event loop) never waits on a read; folds, copies and `apply` hold that lock briefly. What the
store's writer threads read (the quota's marks) is an immutable value the tracker computes under
`apply` and replaces whole, which they read without a lock.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import pyarrow as pa

from store.delivery import DELIVERY_KINDS, DeliveryState, Stream
from store.events import Watermark
from store.state import since_latest_state

_T = TypeVar("_T")
_Event = tuple[str, Mapping[str, Any], int]


class LedgerLog(Protocol):
    """What the ledger reads of `store.Log` (blocking)."""

    def journal(self, *, kinds: Sequence[str] | None = None,
                seq_from: int | None = None) -> pa.Table: ...


@runtime_checkable
class _Watermarked(Protocol):
    """A log that says how far its journal is committed (`store.Log`): a read then counts as
    reaching there, and the next one starts after it rather than after the last delivery
    event, so a journal of heartbeats is not decoded again at every refresh."""

    def watermark(self) -> Watermark: ...


class DeliveryLedger:
    """Cursors, built windows and deliveries of every server of one store, kept current."""

    @classmethod
    def of(cls, log: LedgerLog) -> DeliveryLedger:
        """The store's ledger, made at the first call: one per store, whoever asks."""
        with _LEDGERS_LOCK:
            ledger = _LEDGERS.get(log)
            if ledger is None:
                # Through a weak proxy: the entry, which holds the ledger, goes with the store.
                ledger = _LEDGERS[log] = cls(weakref.proxy(log))
            return ledger

    def __init__(self, log: LedgerLog) -> None:
        self._log = log
        self._reading = threading.Lock()    # one journal read at a time
        self._updating = threading.Lock()   # the fold: short, never held across I/O
        self._state = DeliveryState()
        self._loaded = False
        self._early: list[_Event] = []      # observed before the first read
        self._read_to = 0                   # every delivery event up to this seq is folded

    # ----- reading

    def refresh(self) -> None:
        """Fold in what the journal holds since the last read (blocking): at the first call,
        the latest `state` snapshot and the delivery events after it."""
        with self._reading:
            with self._updating:
                loaded, read_to = self._loaded, self._read_to
            reached = self._log.watermark().journal if isinstance(self._log, _Watermarked) \
                else 0
            if loaded:
                table = self._log.journal(kinds=list(DELIVERY_KINDS), seq_from=read_to + 1)
                snapshot, since = None, _events(table)
            else:
                snapshot, since, at = self._load()
                reached = max(reached, at)
            with self._updating:
                if snapshot is not None:
                    self._state = snapshot
                for event in [*since, *self._early]:
                    self._fold(*event)
                self._early.clear()
                self._loaded = True
                self._read_to = max(self._read_to, reached, since[-1][2] if since else 0)
                self._state.prune()

    def _load(self) -> tuple[DeliveryState, list[_Event], int]:
        """The latest snapshot's delivery state, the delivery events after it, and the
        snapshot's seq (0: none)."""
        table = since_latest_state(self._log, DELIVERY_KINDS)
        rows = _rows(table)
        if not rows or rows[0][0] != "state":
            return DeliveryState(), _events(table), 0
        _, body_text, at = rows[0]
        body = json.loads(body_text)
        state = DeliveryState.from_state_body(body)
        since = _events(table.slice(1))
        folded_to = body.get("seq") if isinstance(body, dict) else None
        if isinstance(folded_to, int) and folded_to < at - 1:
            # Events committed after the snapshot's state was taken and before the snapshot
            # itself: the snapshot does not hold them. Folding one twice is harmless.
            gap = self._log.journal(kinds=list(DELIVERY_KINDS), seq_from=folded_to + 1)
            since = sorted([e for e in _events(gap) if e[2] < at] + since, key=lambda e: e[2])
        return state, since, at

    def state(self) -> DeliveryState:
        """Every server's delivery state as the journal says now (blocking); a copy of the
        caller's own."""
        self.refresh()
        with self._updating:
            return self._state.copy()

    # ----- keeping current without I/O

    def observe(self, kind: str, body: Mapping[str, Any], seq: int) -> None:
        """Fold in one acknowledged `window` or `delivered` event (no I/O; other kinds are
        ignored)."""
        if kind not in DELIVERY_KINDS:
            return
        with self._updating:
            if not self._loaded:
                # The first read may have started before it was committed: kept for then.
                self._early.append((kind, body, seq))
                return
            self._fold(kind, body, seq)
            self._state.prune()

    def apply(self, reader: Callable[[DeliveryState], _T]) -> _T:
        """`reader(state)` on the state as folded now, under the fold's lock (no I/O): it must
        be quick and must neither keep the state nor change it."""
        with self._updating:
            return reader(self._state)

    # ----- internals (under `_updating`)

    def _fold(self, kind: str, body: Mapping[str, Any], seq: int) -> None:
        self._state.reduce(kind, body, seq)
        if kind == "window":
            # A read meets again the events `observe` folded (and pruned) already, after newer
            # ones: each window keeps its place, and its deliveries, read again too, have it
            # pruned again.
            self._state.stream(int(body["server"]), Stream(body["stream"])).windows.sort(
                key=lambda w: w.spec.end_ns)


_LEDGERS: weakref.WeakKeyDictionary[LedgerLog, DeliveryLedger] = weakref.WeakKeyDictionary()
_LEDGERS_LOCK = threading.Lock()


def _rows(table: pa.Table) -> list[tuple[str, str, int]]:
    return [(str(k), str(b), int(s)) for k, b, s in zip(
        table.column("kind").to_pylist(), table.column("body").to_pylist(),
        table.column("seq").to_pylist(), strict=True)]


def _events(table: pa.Table) -> list[_Event]:
    """The delivery events of journal rows, in commit order."""
    return [(kind, json.loads(body), seq) for kind, body, seq in _rows(table.sort_by("seq"))
            if kind in DELIVERY_KINDS]
