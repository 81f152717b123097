"""The outbox: per server and stream, durable cursors, windows and ordered uploads.

docs/behaviour.md §5.1, docs/architecture.md §4. Nothing here holds durable state of its own:
cursors, built windows and deliveries are the store's one delivery state, folded from two
journal kinds by `exporters.ledger.DeliveryLedger`, which both servers' outboxes share.

Journal bodies: `window` and `delivered` (`store.delivery`, whose `DeliveryState.reduce` folds
them). `after` is the previous window built for the same server and stream, so a
`window` event alone fixes its membership (docs/behaviour.md §5.1 step 4).

On disk::

    <store>/outbox/<server>/<file name>    bytes of built, undelivered windows, fsynced
    <store>/outbox/<server>/<name>.part    being written; removed at the next session

Invariants:
- a `window` event is acknowledged (fsynced) before any of its files is uploaded; its files are on
  disk (fsynced, renamed) before the event is written, so a retry sends the same bytes;
- a file server's next upload starts only after the previous file's `delivered` event is
  acknowledged, so at most one file is ever in doubt; while the store's commits fail (a full
  disk) windows already built are still delivered, their `delivered` events queued without
  waiting (`journal_unless_full`), and no window is built (docs/spec-notes.md, "A full disk and the
  sessions");
- a stream's cursor passes a window only once every file of it is delivered; an empty window
  (no file) passes at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol

import pyarrow as pa

from config.errors import SunpmError
from exporters.ledger import DeliveryLedger
from exporters.transports._base import Failure, MessageTooLarge, TransportError
from exporters.views.windows import (
    DAY_NS,
    Rendered,
    WindowSource,
    ns_to_datetime,
    split_range,
)
from fsio import fsync_dir, write_synced
from store.delivery import (
    FILE_SERVER_STREAMS,
    BuiltWindow,
    DeliveryState,
    OutboxFile,
    PreviousWindow,
    Stream,
    StreamDelivery,
    WindowSpec,
    delivered_body,
    set_aside_body,
)
from store.events import JournalItem

log = logging.getLogger("sunpm.session")

MQTT_IN_FLIGHT: Final = 10
#: A range split into more windows than this (days) has its empty days before its first item
#: made one window (`Outbox._new_windows`); a shorter outage keeps one window per day, and costs
#: no extra read of the store.
LONG_RANGE_DAYS: Final = 31
NS_PER_S: Final = 1_000_000_000
#: A cut earlier than the stream's last window end by more than this is a clock reset
#: (docs/behaviour.md §11); by less, the stream waits for the clock (§5.1 step 2).
RESET_NS: Final = 3_600 * NS_PER_S


class OutboxError(SunpmError):
    """The outbox cannot build or find a window's files."""


class WaitingForRoom(OutboxError):
    """The store cannot commit (a full disk): the windows not yet built wait for room."""


def commits_failing(log: object) -> BaseException | None:
    """The store's last commit error while its commits fail (a full disk), else None."""
    err = getattr(log, "last_error", None)
    return err if isinstance(err, BaseException) else None


# Events left queued by `journal_unless_full`, held until the store settles them (committed, or failed at
# its close): a task nobody holds may be collected before it runs.
_LATER: set[asyncio.Task[int]] = set()


#: While waiting for a commit, how often the store is asked whether its commits fail.
_COMMIT_CHECK_S: Final = 1.0


async def journal_unless_full(log: JournalLog, kind: str, body: Mapping[str, object]) -> bool:
    """Append a journal event and wait for its commit (True), unless the store's commits fail
    (a full disk), before or while waiting: then the event stays queued, commits with the rest
    once there is room, and this returns False at once. A session waiting for it would
    deliver nothing meanwhile."""
    task = asyncio.ensure_future(log.append_journal(kind, body, commit_now=True))
    try:
        while commits_failing(log) is None:
            done, _ = await asyncio.wait({task}, timeout=_COMMIT_CHECK_S)
            if done:
                task.result()
                return True
        return False
    finally:
        if not task.done():
            _LATER.add(task)
            task.add_done_callback(_settled)


def _settled(task: asyncio.Task[int]) -> None:
    _LATER.discard(task)
    if not task.cancelled():
        # Failed only by the store closing while its commits fail: the store said so then.
        task.exception()


# --------------------------------------------------------------------------- what we sit on


class JournalLog(Protocol):
    """What the outbox needs of `store.Log`."""

    async def append_journal(self, kind: str, body: Mapping[str, object], *,
                             device: str | None = None, def_: str | None = None,
                             ts_ns: int | None = None, commit_now: bool = False) -> int: ...

    def journal(self, *, kinds: Sequence[str] | None = None,
                seq_from: int | None = None) -> pa.Table: ...


class MessageTarget(Protocol):
    """What the outbox needs of a message transport: publish returns once acknowledged."""

    async def publish(self, topic: str, payload: bytes) -> None: ...


_SERVER_GONE: Final = frozenset({Failure.TIMEOUT, Failure.CONNECTION_LOST, Failure.UNREACHABLE})


class FileTarget(Protocol):
    """What the outbox needs of a file transport (exporters.transports)."""

    async def size(self, path: str) -> int | None: ...

    async def upload(self, path: str, data: bytes, *, two_step: bool,
                     after_cut: bool = False) -> None: ...


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True, slots=True, kw_only=True)
class Planned:
    """A window to send this session: built already (`built`) or still to build (`start`, `end`)."""

    stream: Stream
    start_ns: int
    end_ns: int
    built: BuiltWindow | None = None

    @property
    def order(self) -> tuple[int, int]:
        return (self.end_ns, self.stream.rank)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryReport:
    files: int              # final names the server confirmed this session
    windows: int            # windows passed by the cursors


class StreamRefused(SunpmError):
    """A stream's directory was refused; the rest of the session went on."""

    def __init__(self, failures: Sequence[tuple[Stream, str]]) -> None:
        self.failures = tuple(failures)
        super().__init__("; ".join(reason for _, reason in self.failures))


#: Called after each confirmed file: (remote path, bytes, uploaded now or found already there).
Confirmed = Callable[[str, int, bool], Awaitable[None] | None]


# --------------------------------------------------------------------------- the outbox


class Outbox:
    """One server's outbox. One session at a time uses it (docs/behaviour.md §4.1)."""

    def __init__(self, *, server: int, log: JournalLog, source: WindowSource, directory: Path,
                 streams: Sequence[Stream] = FILE_SERVER_STREAMS,
                 ledger: DeliveryLedger | None = None) -> None:
        """`ledger`: the store's delivery state, shared with the other server's outbox and the
        quota's marks (`exporters.retention.DeliveryTracker.ledger`); by default one of this
        outbox's own, read from `log`."""
        self.server = server
        self._log = log
        self._source = source
        self.directory = directory
        self.streams = tuple(streams)
        self.ledger = ledger if ledger is not None else DeliveryLedger(log)

    # ----- state

    def state(self) -> DeliveryState:
        """Every server's delivery state, as the journal says now (blocking): the ledger's,
        which reads only what was journaled since its last read; a copy of the caller's own."""
        return self.ledger.state()

    def cursors(self) -> dict[Stream, int | None]:
        state = self.state()
        return {s: state.stream(self.server, s).cursor_ns for s in self.streams}

    def plan(self, cut_ns: int, state: DeliveryState | None = None) -> list[Planned]:
        """Windows this session sends, in upload order (docs/behaviour.md §5.1 step 2, §4.2 step
        8)."""
        state = state or self.state()
        plan: list[Planned] = []
        for stream in self.streams:
            sd = state.stream(self.server, stream)
            plan.extend(Planned(stream=stream, start_ns=w.spec.start_ns, end_ns=w.spec.end_ns,
                                built=w) for w in sd.pending())
            last = sd.last_built
            start = last.spec.end_ns if last is not None else self._source.oldest_ns(stream)
            if start is None:
                continue
            if cut_ns < start - RESET_NS:
                # The clock was reset (docs/behaviour.md §11): what was committed since the last
                # window goes now, in a window ending a second after it, so names only grow and
                # no delivered file is replaced; the clock's own cuts resume once it passes.
                plan.append(Planned(stream=stream, start_ns=start, end_ns=start + NS_PER_S))
                continue
            plan.extend(Planned(stream=stream, start_ns=a, end_ns=b)
                        for a, b in self._new_windows(stream, start, cut_ns))
        plan.sort(key=lambda p: p.order)
        return plan

    def _new_windows(self, stream: Stream, start_ns: int, cut_ns: int) -> list[tuple[int, int]]:
        """`[start, cut)` split at UTC midnights; in a range of more than `LONG_RANGE_DAYS`, the
        days before the first item after its first day are one empty window (no file), not one
        window each (docs/behaviour.md §5.1 step 2).

        A box that started with its clock in 1970 and ran a session before NTP set the date would
        otherwise build some 20,000 windows per stream at its next session, each journaled and
        fsynced. An item committed later with a time in the empty days joins the next window
        built, as any late item does."""
        windows = split_range(start_ns, cut_ns)
        if len(windows) <= LONG_RANGE_DAYS:
            return windows
        second_day = windows[1][0]
        first = self._source.first_item_ns(stream, second_day, cut_ns)
        midnight = windows[-1][0] if first is None else first // DAY_NS * DAY_NS
        if midnight <= second_day:
            return windows
        return [windows[0], (second_day, midnight),
                *[(a, b) for a, b in windows if a >= midnight]]

    # ----- building

    async def build(self, stream: Stream, start_ns: int, end_ns: int,
                    after: BuiltWindow | None) -> BuiltWindow:
        """Render, materialise (fsynced) and journal one window; acknowledged on return."""
        prev = None if after is None else PreviousWindow(end_ns=after.spec.end_ns,
                                                         membership=after.spec.membership)

        def make() -> tuple[WindowSpec, list[Rendered]]:
            spec = WindowSpec(server=self.server, stream=stream, start_ns=start_ns,
                              end_ns=end_ns, membership=self._source.membership(), after=prev,
                              config=self._source.config_snapshot(end_ns))
            return spec, self._source.render(spec)

        self._take_set_aside()
        spec, rendered = await asyncio.to_thread(make)
        aside = self._take_set_aside()
        try:
            await asyncio.to_thread(self._materialise, rendered)
        except OSError as err:
            # A full disk (one the store has not met yet) or an outbox folder it may not write:
            # the session fails in words and is retried, the window built at a later one.
            raise OutboxError(f"server {self.server}: {stream} window not built: "
                              f"{err.filename or self.directory}: {err.strerror or err}") from err
        built = BuiltWindow(spec=spec, files=tuple(OutboxFile.of(r) for r in rendered))
        seq = await self._log.append_journal("window", built.to_body(), commit_now=True)
        for item, why in aside:
            # docs/spec-notes.md, "Event set aside from a file": said once, at the window's
            # build, and marked, as an MQTT server's event that cannot be sent is.
            reason = re.sub(r"^server \d+: ", "", str(why))
            log.error("server %d: %s event %d (%s) cannot be sent: %s; set aside, the later "
                      "ones go on", self.server, item.kind, item.seq,
                      datetime.fromtimestamp(item.ts_ns / 1e9, UTC).strftime(
                          "%Y-%m-%dT%H:%M:%SZ"), reason)
            await self._log.append_journal(
                "delivered", set_aside_body(self.server, stream, end_ns, item.seq, reason),
                commit_now=True)
        log.debug("Window built. server=%d stream=%s end=%s files=%d", self.server, stream,
                  ns_to_datetime(end_ns).isoformat(), len(built.files))
        return BuiltWindow(spec=spec, files=built.files, seq=seq)

    def _materialise(self, rendered: Sequence[Rendered]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Each file under a temporary name then renamed, and one folder fsync for the window's
        # files together: a retry after a crash never finds half a file under its outbox name.
        for r in rendered:
            path = self.directory / r.name
            part = path.with_name(path.name + ".part")
            write_synced(part, r.data)
            os.replace(part, path)
        fsync_dir(self.directory)

    async def file_bytes(self, window: BuiltWindow, file: OutboxFile) -> bytes:
        """The outbox copy, re-rendered from the window's membership when it is gone."""
        path = self.directory / file.name
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            data = b""
        if hashlib.sha256(data).hexdigest() == file.sha256:
            return data
        rendered = await asyncio.to_thread(self._source.render, window.spec)
        self._take_set_aside()      # said and marked at the window's build
        for r in rendered:
            if r.name == file.name:
                if hashlib.sha256(r.data).hexdigest() != file.sha256:
                    log.warning("Outbox file rebuilt with other bytes. server=%d file=%s",
                                self.server, file.name)
                try:
                    await asyncio.to_thread(self._materialise, [r])
                except OSError as err:
                    # A full disk: the bytes are in hand, the copy is made at a later try.
                    log.warning("Outbox copy not written (%s); uploaded from memory. "
                                "server=%d file=%s", err.strerror or err, self.server, r.name)
                return r.data
        raise OutboxError(f"server {self.server}: {file.name}: window no longer renders this file")

    def clean(self, state: DeliveryState) -> None:
        """Remove outbox files that no undelivered window needs (delivered, or half written)."""
        if not self.directory.is_dir():
            return
        keep = {f.name for s in self.streams for w in state.stream(self.server, s).pending()
                for f in w.files}
        for path in self.directory.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    # ----- delivering

    async def deliver(self, target: FileTarget, cut_ns: int, *, two_step: bool,
                      confirmed: Confirmed | None = None) -> DeliveryReport:
        """Send every window up to the cut, oldest first; raises on the first retriable failure.

        A non-retriable refusal (a directory missing or not writable) stops only its stream; the
        others go on and `StreamRefused` is raised at the end.
        """
        # Journal reads and the source's queries block: off the loop.
        state = await asyncio.to_thread(self.state)
        await asyncio.to_thread(self.clean, state)
        plan = await asyncio.to_thread(self.plan, cut_ns, state)
        files = windows = 0
        refused: dict[Stream, str] = {}
        waiting: list[Stream] = []
        for planned in plan:
            if planned.stream in refused or planned.stream in waiting:
                continue
            sd = state.stream(self.server, planned.stream)
            window = planned.built
            # A window still undelivered from an earlier delivery may have had an upload cut;
            # one built now has never been sent (docs/spec-notes.md, "Stale `.tmp`").
            after_cut = window is not None
            if window is None:
                if commits_failing(self._log) is not None:
                    # A window is acknowledged before its first upload: none is built until
                    # the store can commit again; what was built before goes on.
                    waiting.append(planned.stream)
                    continue
                window = await self.build(planned.stream, planned.start_ns, planned.end_ns,
                                          sd.last_built)
                state.reduce("window", window.to_body(), window.seq)
            try:
                sent, acknowledged = await self._send_window(target, window, sd, two_step,
                                                             after_cut, confirmed)
            except _Refused as err:
                refused[planned.stream] = err.reason
                continue
            files += sent
            windows += 1
            if acknowledged:
                # Kept otherwise: after a crash its deliveries are not in the journal, and a
                # copy re-rendered later might differ. `clean` removes it once they are.
                await asyncio.to_thread(self._remove, window)
        if refused:
            raise StreamRefused(tuple(refused.items()))
        if waiting:
            failing = commits_failing(self._log)
            raise WaitingForRoom(
                f"server {self.server}: the store cannot write ({failing}); "
                f"{', '.join(waiting)} not sent past what was built before")
        return DeliveryReport(files=files, windows=windows)

    async def _send_window(self, target: FileTarget, window: BuiltWindow, sd: StreamDelivery,
                           two_step: bool, after_cut: bool,
                           confirmed: Confirmed | None) -> tuple[int, bool]:
        """The files sent, and whether every `delivered` event was acknowledged."""
        sent = 0
        acknowledged = True
        end = window.spec.end_ns
        for file in window.files:
            if (end, file.name) in sd.delivered:
                continue
            uploaded = await self._send_file(target, window, file, two_step, after_cut)
            body = delivered_body(self.server, window.spec.stream, end, file.name)
            if not await journal_unless_full(self._log, "delivered", body):
                acknowledged = False
            sd.delivered.add((end, file.name))
            sent += 1
            if confirmed is not None:
                result = confirmed(file.remote_path, file.size, uploaded)
                if result is not None:
                    await result
        return sent, acknowledged

    async def _send_file(self, target: FileTarget, window: BuiltWindow, file: OutboxFile,
                         two_step: bool, after_cut: bool) -> bool:
        """Upload unless the final name already holds the journaled size; True if uploaded."""
        path = file.remote_path
        try:
            present = await target.size(path)
        except TransportError as err:
            # A lookup refused, or answered with what no size is made of, counts as absent
            # (docs/behaviour.md §5.2); a stalled or lost server is not, and the session ends
            # on what happened to it rather than on an upload tried over a closed connection.
            if err.failure in _SERVER_GONE:
                raise
            present = None
        except SunpmError:
            present = None
        if present == file.size:
            return False
        data = await self.file_bytes(window, file)
        try:
            await target.upload(path, data, two_step=two_step, after_cut=after_cut)
        except SunpmError as err:
            if getattr(err, "retriable", True):
                raise
            raise _Refused(str(err)) from err
        return True

    async def deliver_messages(self, target: MessageTarget, topic: str, cut_ns: int, *,
                               in_flight: int = MQTT_IN_FLIGHT) -> DeliveryReport:
        """Publish every window's documents up to the cut, oldest first, with at most
        `in_flight` unacknowledged (docs/behaviour.md §4.4 step 2); each `Rendered` is one message.

        A message's `delivered` event is not committed at once: after a crash at most the last
        `STORE_FlushSeconds` of acknowledgements are sent again (docs/behaviour.md §5.2).
        """
        state = await asyncio.to_thread(self.state)
        await asyncio.to_thread(self.clean, state)
        plan = await asyncio.to_thread(self.plan, cut_ns, state)
        # Bounded: a slow broker holds the loop here, never more than `in_flight` messages.
        slots = asyncio.Semaphore(in_flight)
        sent = windows = 0

        async def publish(window: BuiltWindow, file: OutboxFile, sd: StreamDelivery) -> None:
            nonlocal sent
            try:
                data = await self.file_bytes(window, file)
                aside: dict[str, object] = {}
                try:
                    await target.publish(topic, data)
                except MessageTooLarge as err:
                    # Sent, a broker with a packet limit drops the connection at each try and
                    # no later window goes (docs/spec-notes.md, *MQTT message over 16 MiB*).
                    log.error("server %d: MQTT message %s cannot be sent: %s; set aside, the "
                              "later ones go on", self.server, file.name, err.reason)
                    aside = {"setAside": err.reason}
                await self._log.append_journal("delivered", {**delivered_body(
                    self.server, window.spec.stream, window.spec.end_ns, file.name), **aside},
                    commit_now=bool(aside))
                sd.delivered.add((window.spec.end_ns, file.name))
                sent += not aside
            finally:
                slots.release()

        built: list[tuple[BuiltWindow, StreamDelivery]] = []
        try:
            async with asyncio.TaskGroup() as tg:
                for planned in plan:
                    sd = state.stream(self.server, planned.stream)
                    window = planned.built
                    if window is None:
                        window = await self.build(planned.stream, planned.start_ns,
                                                  planned.end_ns, sd.last_built)
                        state.reduce("window", window.to_body(), window.seq)
                    built.append((window, sd))
                    for file in window.files:
                        if (window.spec.end_ns, file.name) in sd.delivered:
                            continue
                        await slots.acquire()
                        tg.create_task(publish(window, file, sd),
                                       name=f"mqtt-publish:{self.server}:{file.name}")
                    windows += 1
        except* SunpmError as group:
            raise _first_leaf(group) from None
        for window, sd in built:
            if sd.is_delivered(window):
                await asyncio.to_thread(self._remove, window)
        return DeliveryReport(files=sent, windows=windows)

    def _take_set_aside(self) -> list[tuple[JournalItem, SunpmError]]:
        take = getattr(self._source, "take_set_aside", None)
        return [] if take is None else list(take())

    def _remove(self, window: BuiltWindow) -> None:
        for file in window.files:
            (self.directory / file.name).unlink(missing_ok=True)


def _first_leaf(group: BaseExceptionGroup[SunpmError]) -> SunpmError:
    first = group.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
