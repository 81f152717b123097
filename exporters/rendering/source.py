"""A window rendered from the store: the outbox's `WindowSource` for one server.

`StoreSource` selects a window's members (records by device and `seq`, journal events by `seq`;
docs/behaviour.md §5.1 step 4), loads the definition and configuration snapshots they name from the
store, and hands them to the views. It reads the store and nothing else, and writes nothing: the
live outbox and the re-exports (`sunpm export`, the offline card re-export) render a window with
the same code, so a re-export gives the bytes of the original upload.

Imports `config`, `store` and `exporters.views` only (docs/architecture.md §2, `sdcard`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from config import Site, load_site_files, parse_definition
from config.errors import SunpmError
from config.model import DefinitionFile, Device, ServerSettings
from exporters.views import ack as ack_view
from exporters.views import alarm as alarm_view
from exporters.views import log as log_view
from exporters.views import mqtt as mqtt_view
from exporters.views import traces as traces_view
from exporters.views.context import Interface, SetAside, ViewConfig
from exporters.views.data import data_text_chunks, param_text_chunks
from exporters.views.gz import gzip_chunks
from exporters.views.names import (
    WindowBounds,
    ack_file_name,
    alarm_file_name,
    data_file_name,
    log_file_name,
    mqtt_export_name,
    select_journal,
    select_records,
    sunspec_log_file_name,
)
from exporters.views.windows import Rendered, bounds_of
from store.delivery import JOURNAL_STREAM_KINDS, Stream, WindowSpec
from store.events import ConfigInForce, JournalItem, Watermark, journal_items
from store.snapshots import config_hash
from store.traces import TRACE_INTERFACES, TraceEntry

NS: Final = 1_000_000_000
INTERFACES: Final = (Interface.MODBUS, Interface.IO, Interface.TIC)


class SourceError(SunpmError):
    """A window cannot be built from the store."""


def gzip_with_text_sha(chunks: Iterable[str]) -> tuple[bytes, str] | None:
    """Deterministic gzip of the text (views.gz) and the SHA-256 of the text; None if empty."""
    digest = hashlib.sha256()
    seen = False

    def encoded() -> Iterator[bytes]:
        nonlocal seen
        for chunk in chunks:
            if chunk:
                seen = True
                data = chunk.encode()
                digest.update(data)
                yield data

    data = b"".join(gzip_chunks(encoded()))
    return (data, digest.hexdigest()) if seen else None


class TraceReader(Protocol):
    """What a window source reads of `store.traces.TraceStore`."""

    def entries(self, interface: str, *, start_ns: int | None = None,
                end_ns: int | None = None) -> list[TraceEntry]: ...

    def oldest_ns(self) -> int | None: ...


def window_trace_texts(reader: TraceReader, after_end_ns: int | None, end_ns: int,
                       config: ViewConfig) -> list[tuple[str, str]]:
    """A LOG window's trace files: the lines timed in `[after_end_ns, end_ns)` (the window built
    before it in the stream ends at `after_end_ns`; the first window takes all before its end)."""
    by_interface = {i: reader.entries(i, start_ns=after_end_ns, end_ns=end_ns)
                    for i in TRACE_INTERFACES}
    return traces_view.trace_texts(by_interface, config, end_ns)


class StoreReader(Protocol):
    """What the source reads of `store.Log`."""

    def devices(self) -> list[str]: ...

    def records(self, device: str, *, start_ns: int | None = None, end_ns: int | None = None,
                seq_from: int | None = None, seq_to: int | None = None,
                columns: Sequence[str] | None = None) -> pa.Table: ...

    def iter_records(self, device: str, *, start_ns: int | None = None,
                     columns: Sequence[str] | None = None) -> Iterator[pa.Table]: ...

    def journal(self, *, start_ns: int | None = None, end_ns: int | None = None,
                kinds: Sequence[str] | None = None, seq_from: int | None = None) -> pa.Table: ...

    def watermark(self) -> Watermark: ...

    def get_definition(self, snapshot_id: str) -> bytes: ...


#: Builds the view configuration of the server in force at a time (from the window's snapshot).
ViewConfigAt = Callable[[str], ViewConfig]
#: Parses a definition snapshot's bytes.
ParseDefinition = Callable[[bytes, str], DefinitionFile]


class _JournalSince:
    """The journal events of `kinds` committed since the last read, in journal order. Each read
    goes to the watermark at least, so the events of other kinds are not decoded again."""

    def __init__(self, kinds: list[str]) -> None:
        self._kinds = kinds
        self._read_to = 0

    def read(self, log: StoreReader) -> pa.Table:
        read_to = log.watermark().journal or 0
        table = log.journal(kinds=self._kinds, seq_from=self._read_to + 1).sort_by("seq")
        if table.num_rows:
            read_to = max(read_to, int(pc.max(table.column("seq")).as_py()))
        self._read_to = max(self._read_to, read_to)
        return table


class SnapshotResolver:
    """Which configuration snapshot is in force when, from `config` journal events.

    A `config` event body holds `snapshot` (the store's configuration hash); with none journaled
    the running configuration's id is used. Each window built and each MQTT alarm asks: the
    events are read once, then only those committed since.
    """

    def __init__(self, *, running: str) -> None:
        self.running = running
        self._log: StoreReader | None = None
        self._changes: list[tuple[int, str]] = []   # (time, snapshot), in journal order
        self._since = _JournalSince(["config"])
        self._lock = threading.Lock()

    def _read(self, log: StoreReader) -> list[tuple[int, str]]:
        with self._lock:
            if log is not self._log:
                self._log, self._changes, self._since = log, [], _JournalSince(["config"])
            table = self._since.read(log)
            for t, body in zip(table.column("ts").cast(pa.int64()).to_pylist(),
                               table.column("body").to_pylist(), strict=True):
                value = ConfigInForce.snapshot_in(body)
                if value is not None:
                    self._changes.append((t, value))
            return list(self._changes)

    def at(self, log: StoreReader, end_ns: int) -> str:
        return self.in_force(log, end_ns)[0]

    def in_force(self, log: StoreReader, end_ns: int) -> list[str]:
        """The snapshot in force at `end_ns`, then those in force before it, newest first,
        each once (the running configuration stands for the time before the first event)."""
        history = [self.running]
        for t, value in self._read(log):
            if t >= end_ns:
                break
            history.append(value)
        return list(dict.fromkeys(reversed(history)))


class StoreSource:
    """WindowSource of one file server (or the DATA documents of an MQTT server)."""

    def __init__(self, *, log: StoreReader, server: ServerSettings, view_config: ViewConfigAt,
                 parse_definition: ParseDefinition, snapshots: SnapshotResolver,
                 traces: TraceReader | None = None) -> None:
        self._log = log
        self._traces = traces
        self._server = server
        self._view_config = view_config
        self._parse_definition = parse_definition
        self._snapshots = snapshots
        self._definitions: dict[str, DefinitionFile] = {}
        self._oldest_events: dict[Stream, tuple[_JournalSince, int | None]] = {}
        self._aside: list[SetAside] = []

    def take_set_aside(self) -> list[SetAside]:
        """The events the renderings since the last call left out of their files."""
        taken, self._aside = self._aside, []
        return taken

    # ----- WindowSource

    def oldest_ns(self, stream: Stream) -> int | None:
        times: list[int] = []
        if stream is Stream.DATA:
            times.extend(t for t in map(self._oldest_record, self._log.devices())
                         if t is not None)
        kinds = JOURNAL_STREAM_KINDS.get(stream)
        if kinds:
            times.extend(t for t in [self._oldest_event(stream, list(kinds))] if t is not None)
        if stream is Stream.LOG and self._traces is not None:
            times.extend(t for t in [self._traces.oldest_ns()] if t is not None)
        return min(times) if times else None

    def first_item_ns(self, stream: Stream, start_ns: int, end_ns: int) -> int | None:
        times: list[int] = []
        if stream is Stream.DATA:
            for dev in self._log.devices():
                table = self._log.records(dev, start_ns=start_ns, end_ns=end_ns, columns=["ts"])
                if table.num_rows:
                    times.append(int(pc.min(table.column("ts").cast(pa.int64())).as_py()))
        kinds = JOURNAL_STREAM_KINDS.get(stream)
        if kinds:
            table = self._log.journal(start_ns=start_ns, end_ns=end_ns, kinds=list(kinds))
            if table.num_rows:
                times.append(int(pc.min(table.column("ts").cast(pa.int64())).as_py()))
        if stream is Stream.LOG and self._traces is not None:
            times.extend(entries[0].ts_ns for entries in (
                self._traces.entries(i, start_ns=start_ns, end_ns=end_ns)
                for i in TRACE_INTERFACES) if entries)
        return min(times) if times else None

    def _oldest_record(self, device: str) -> int | None:
        """The time of a device's oldest record, from its times alone, a segment at a time:
        a session's first question on a month of records held the month, every column (some
        90 MB a device on the 512 MB gateway). Every segment is read, not the first alone: a
        record appended after the clock went back is older than those of the segments before
        it."""
        oldest: int | None = None
        for part in self._log.iter_records(device, columns=["ts"]):
            if part.num_rows:
                first = int(pc.min(part.column("ts").cast(pa.int64())).as_py())
                oldest = first if oldest is None else min(oldest, first)
        return oldest

    def _oldest_event(self, stream: Stream, kinds: list[str]) -> int | None:
        """The time of the oldest event of `kinds`. A stream that has never had one is asked
        every session: the journal is read once, then only the events committed since. (An
        oldest event the quota deleted since still starts the first window: a window may
        begin before its first member.)"""
        since, oldest = self._oldest_events.get(stream) or (_JournalSince(kinds), None)
        table = since.read(self._log)
        if table.num_rows:
            first = int(pc.min(table.column("ts").cast(pa.int64())).as_py())
            oldest = first if oldest is None else min(oldest, first)
        self._oldest_events[stream] = (since, oldest)
        return oldest

    def membership(self) -> Watermark:
        return self._log.watermark()

    def config_snapshot(self, end_ns: int) -> str:
        return self._snapshots.at(self._log, end_ns)

    def window_config(self, snapshot: str, end_ns: int) -> ViewConfig:
        """The view configuration of a window: its snapshot's, and for a device that snapshot
        no longer lists the daq row of the last snapshot before it that did (docs/behaviour.md
        §5.1 step 4): a device removed with records still undelivered keeps its name (MQTT) and
        serial number (TIC) instead of stopping the stream. Earlier snapshots are read only for
        such a device."""
        def former(index: str) -> Device | None:
            for earlier in self._snapshots.in_force(self._log, end_ns):
                if earlier != snapshot:
                    found = self._view_config(earlier).device(index)
                    if found is not None:
                        return found
            return None

        return dataclasses.replace(self._view_config(snapshot), former_device=former)

    def render(self, spec: WindowSpec) -> list[Rendered]:
        config = self.window_config(spec.config, spec.end_ns)
        stamp = spec.end_ns
        if spec.stream is Stream.DATA:
            return self._render_data(spec, config, stamp)
        items = self._events(spec)
        if spec.stream is Stream.PARAM:
            defs = self._definitions_for(i.def_id for i in items)
            out = []
            for interface in INTERFACES:
                built = gzip_with_text_sha(param_text_chunks(interface, items, defs, config,
                                                             self._aside))
                if built is not None:
                    out.append(Rendered(name=data_file_name(config.uid, interface, stamp,
                                                            parameters=True),
                                        directory="/DATA", data=built[0], text_sha256=built[1]))
            return out
        out = _render_journal_stream(spec.stream, items, self._definitions_for(
            i.def_id for i in items), config, stamp, self._aside)
        if spec.stream is Stream.LOG and self._traces is not None:
            # Frame traces go after the gateway and SunSpec logs (docs/behaviour.md §4.2 step 8).
            after = None if spec.after is None else spec.after.end_ns
            for name, text in window_trace_texts(self._traces, after, stamp, config):
                built = gzip_with_text_sha([text])
                if built is not None:
                    out.append(Rendered(name=name, directory="/LOG", data=built[0],
                                        text_sha256=built[1]))
        return out

    # ----- members

    def _render_data(self, spec: WindowSpec, config: ViewConfig, stamp: int) -> list[Rendered]:
        if self._server.type.is_mqtt:
            records: dict[str, pa.Table] = {}
            for dev in self._log.devices():
                table = self._members(dev, spec)
                if table.num_rows:
                    records[dev] = table
            defs = self._definitions_for(
                d for t in records.values() for d in pc.unique(t.column("def")).to_pylist())
            # Each document is one message; `--out` writes them under these names (§5.3).
            return [Rendered(name=mqtt_export_name(config.uid, spec.end_ns, k), directory="/",
                             data=doc, text_sha256=hashlib.sha256(doc).hexdigest())
                    for k, doc in enumerate(mqtt_view.data_documents(records, defs, config),
                                            start=1)]
        # DATA files are written device by device: each device's records are read when its
        # block is due and let go after it, so a window of 254 devices never sits in memory
        # whole (docs/architecture.md §7's memory budget).
        by_device = _DeviceMembers(self, spec)
        definitions = _DefinitionsRead(self)
        out = []
        for interface in INTERFACES:
            built = gzip_with_text_sha(data_text_chunks(interface, by_device, definitions,
                                                        config))
            if built is not None:
                out.append(Rendered(name=data_file_name(config.uid, interface, stamp),
                                    directory="/DATA", data=built[0], text_sha256=built[1]))
        return out

    def _members(self, device: str, spec: WindowSpec) -> pa.Table:
        window, previous = bounds_of(spec)
        return select_records(self._candidates(device, window, previous), device, window,
                              previous)

    def _candidates(self, device: str, window: WindowBounds,
                    previous: list[WindowBounds]) -> pa.Table:
        """A device's records that may belong to `window`, read by the ranges the store can
        skip by (a session reads the minutes since the last window, not the device's history).

        A member is before the window's end, within its watermark, and not a member of the
        window before: either committed after that window's watermark, or stamped at or after
        its end (a record stamped past a cut but committed before that session)."""
        limit = window.watermark.record_limit(device)
        if limit is None or limit < 1:
            return self._log.records(device, end_ns=window.end_ns, seq_to=0)
        before = previous[-1].watermark.record_limit(device) if previous else None
        if before is None or before < 1:
            return self._log.records(device, end_ns=window.end_ns, seq_to=limit)
        stamped_late = self._log.records(device, start_ns=previous[-1].end_ns,
                                         end_ns=window.end_ns, seq_to=min(before, limit))
        committed_late = self._log.records(device, end_ns=window.end_ns, seq_from=before + 1,
                                           seq_to=limit) if limit > before else None
        if committed_late is None or committed_late.num_rows == 0:
            return stamped_late
        if stamped_late.num_rows == 0:
            return committed_late
        return pa.concat_tables([stamped_late, committed_late])   # in seq order

    def _events(self, spec: WindowSpec) -> list[JournalItem]:
        kinds = list(JOURNAL_STREAM_KINDS.get(spec.stream, ()))
        window, previous = bounds_of(spec)
        return journal_items(select_journal(self._event_candidates(kinds, window, previous),
                                            window, previous))

    def _event_candidates(self, kinds: list[str], window: WindowBounds,
                          previous: list[WindowBounds]) -> pa.Table:
        """The journal events of `kinds` that may belong to `window`, read as `_candidates`
        reads records: committed after the window before's watermark, or stamped at or after
        its end; a session reads the journal since the last window, not months of it."""
        before = previous[-1].watermark.journal if previous else None
        if before is None or before < 1:
            return self._log.journal(end_ns=window.end_ns, kinds=kinds)
        stamped_late = self._log.journal(start_ns=previous[-1].end_ns, end_ns=window.end_ns,
                                         kinds=kinds)
        stamped_late = stamped_late.filter(pc.less_equal(stamped_late.column("seq"), before))
        committed_late = self._log.journal(end_ns=window.end_ns, kinds=kinds, seq_from=before + 1)
        return pa.concat_tables([stamped_late, committed_late]).sort_by("seq")

    def alarm_payload(self, item: JournalItem) -> bytes:
        """An alarm's MQTT message, with the configuration in force when it was raised."""
        config = self._view_config(self.config_snapshot(item.ts_ns + 1))
        return mqtt_view.alarm_message(item, self._definitions_for([item.def_id]), config)

    def _definitions_for(self, ids: Iterable[str | None]) -> dict[str, DefinitionFile]:
        out: dict[str, DefinitionFile] = {}
        for def_id in ids:
            if def_id is None or def_id in out:
                continue
            out[def_id] = self.definition(def_id)
        return out

    def definition(self, def_id: str) -> DefinitionFile:
        """A definition snapshot, parsed once."""
        if def_id not in self._definitions:
            name = def_id.partition(":")[2] or def_id
            self._definitions[def_id] = self._parse_definition(
                self._log.get_definition(def_id), name)
        return self._definitions[def_id]


class _DeviceMembers(Mapping[str, pa.Table]):
    """A window's records by device, each read from the store when looked up (not kept)."""

    def __init__(self, source: StoreSource, spec: WindowSpec) -> None:
        self._source = source
        self._spec = spec
        self._devices = source._log.devices()

    def __getitem__(self, device: str) -> pa.Table:
        if device not in self._devices:
            raise KeyError(device)
        return self._source._members(device, self._spec)

    def __iter__(self) -> Iterator[str]:
        return iter(self._devices)

    def __len__(self) -> int:
        return len(self._devices)


class _DefinitionsRead(dict[str, DefinitionFile]):
    """The definition snapshots the records name, read from the store as they are met."""

    def __init__(self, source: StoreSource) -> None:
        super().__init__()
        self._source = source

    def __missing__(self, def_id: str) -> DefinitionFile:
        definition = self._source.definition(def_id)
        self[def_id] = definition
        return definition




def _render_journal_stream(stream: Stream, items: list[JournalItem],
                           defs: Mapping[str, DefinitionFile], config: ViewConfig,
                           end_ns: int, aside: list[SetAside] | None = None
                           ) -> list[Rendered]:
    """ALARM (gzip), ACK (plain JSON) and LOG (gateway and SunSpec logs, gzip) files; the
    ALARM events left out told to `aside`."""
    uid = config.uid
    if stream is Stream.ALARM:
        texts = [(alarm_file_name(uid, end_ns), "/ALARM",
                  alarm_view.alarm_text(items, defs, config, aside))]
    elif stream is Stream.ACK:
        text = ack_view.ack_text(items)
        if not text:
            return []
        data = text.encode()
        return [Rendered(name=ack_file_name(uid, end_ns), directory="/CMD", data=data,
                         text_sha256=hashlib.sha256(data).hexdigest())]
    elif stream is Stream.LOG:
        texts = [(log_file_name(uid, end_ns), "/LOG", log_view.log_text(items, config)),
                 (sunspec_log_file_name(uid, end_ns), "/LOG",
                  log_view.sunspec_log_text(items, config))]
    else:
        return []
    out = []
    for name, directory, text in texts:
        built = gzip_with_text_sha([text])
        if built is not None:
            out.append(Rendered(name=name, directory=directory, data=built[0],
                                text_sha256=built[1]))
    return out


class SiteViews:
    """View configurations of one server slot by configuration snapshot, cached.

    A snapshot stored in the store (`config/<hash>/`) is loaded from there, so a window renders
    with the settings in force when it was built; the running site stands in for a snapshot the
    store does not hold.
    """

    def __init__(self, log: Any, site: Site, slot: int) -> None:
        self._log = log
        self._site = site
        self._slot = slot
        self.running = config_hash(site.files())
        self._cache: dict[str, ViewConfig] = {self.running: self._of(site)}

    def _of(self, site: Site) -> ViewConfig:
        return ViewConfig.for_server(site.settings, site.settings.servers[self._slot - 1],
                                     site.daq)

    def __call__(self, snapshot: str) -> ViewConfig:
        if snapshot not in self._cache:
            try:
                files = self._log.get_config(snapshot)
            except SunpmError:
                return self._cache[self.running]
            self._cache[snapshot] = self._of(load_site_files(files, self._site.uid))
        return self._cache[snapshot]


def _parse_definition(data: bytes, name: str) -> DefinitionFile:
    return parse_definition(data, name).value


def store_source(log: Any, site: Site, slot: int, *,
                 traces: TraceReader | None = None) -> StoreSource:
    """The window source of server `slot` over a store, for sessions and backfills alike;
    `traces` (the store's `TraceStore`) adds the frame trace files to LOG windows."""
    views = SiteViews(log, site, slot)
    return StoreSource(log=log, server=site.settings.servers[slot - 1], view_config=views,
                       parse_definition=_parse_definition,
                       snapshots=SnapshotResolver(running=views.running), traces=traces)
