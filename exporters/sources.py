"""The views over the store, as the outbox's `WindowSource` for one server.

`StoreSource` selects a window's members (records by device and `seq`, journal events by `seq`;
behaviour.md §5.1 step 4), loads the definition and configuration snapshots they name from the
store, and hands them to `exporters.views`. It adapts two neighbours whose shapes it does not own:
the store's watermark (`membership_of`) and its snapshot getters.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from config.errors import SunpmError
from config.model import DefinitionFile, GatewaySettings, ServerSettings
from exporters.outbox import Membership, Rendered, Stream, WindowSpec
from exporters.views.context import Interface, ViewConfig
from exporters.views.events import JournalItem, journal_items
from exporters.views.gz import gzip_chunks
from exporters.views.names import Watermark as ViewWatermark
from exporters.views.names import (
    WindowBounds,
    ack_file_name,
    alarm_file_name,
    data_file_name,
    log_file_name,
    select_journal,
    select_records,
)

NS: Final = 1_000_000_000
INTERFACES: Final = (Interface.MODBUS, Interface.IO, Interface.TIC)


class SourceError(SunpmError):
    """A window cannot be built from the store."""


def membership_of(watermark: object) -> Membership:
    """Our `Membership` from the store's watermark (attributes or a mapping)."""
    if isinstance(watermark, Membership):
        return watermark
    if isinstance(watermark, Mapping):
        devices = watermark.get("devices", {})
        journal = watermark.get("journal", -1)
    else:
        devices = getattr(watermark, "devices", None)
        if devices is None:
            devices = getattr(watermark, "records", {})
        journal = getattr(watermark, "journal", -1)
    return Membership(devices={str(k): int(v) for k, v in dict(devices).items()},
                      journal=-1 if journal is None else int(journal))


def bounds_of(spec: WindowSpec) -> tuple[WindowBounds, list[WindowBounds]]:
    """The views' membership arguments for a window spec."""
    def wm(m: Membership) -> ViewWatermark:
        return ViewWatermark(devices=dict(m.devices), journal=m.journal)

    window = WindowBounds(end_ns=spec.end_ns, watermark=wm(spec.membership))
    previous = [] if spec.after is None else [
        WindowBounds(end_ns=spec.after.end_ns, watermark=wm(spec.after.membership))]
    return window, previous


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


class StoreReader(Protocol):
    """What the source reads of `store.Log`."""

    def devices(self) -> list[str]: ...

    def records(self, device: str) -> pa.Table: ...

    def journal(self, *, kinds: Sequence[str] | None = None) -> pa.Table: ...

    def watermark(self) -> object: ...

    def get_definition(self, snapshot_id: str) -> bytes: ...


#: Builds the view configuration of the server in force at a time (from the window's snapshot).
ViewConfigAt = Callable[[str], ViewConfig]
#: Parses a definition snapshot's bytes.
ParseDefinition = Callable[[bytes, str], DefinitionFile]


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotResolver:
    """Which configuration snapshot is in force when, from `config` journal events.

    A `config` event body holds `snapshot` (the store's configuration hash); with none journaled
    the running configuration's id is used.
    """

    running: str

    def at(self, log: StoreReader, end_ns: int) -> str:
        table = log.journal(kinds=["config"])
        snapshot = self.running
        ts = table.column("ts").cast(pa.int64()).to_pylist()
        for t, body in zip(ts, table.column("body").to_pylist(), strict=True):
            if t >= end_ns:
                break
            value = json.loads(body).get("snapshot")
            if isinstance(value, str):
                snapshot = value
        return snapshot


class StoreSource:
    """WindowSource of one file server (or the DATA documents of an MQTT server)."""

    def __init__(self, *, log: StoreReader, server: ServerSettings, view_config: ViewConfigAt,
                 parse_definition: ParseDefinition, snapshots: SnapshotResolver) -> None:
        self._log = log
        self._server = server
        self._view_config = view_config
        self._parse_definition = parse_definition
        self._snapshots = snapshots
        self._definitions: dict[str, DefinitionFile] = {}

    # ----- WindowSource

    def oldest_ns(self, stream: Stream) -> int | None:
        times: list[int] = []
        if stream in (Stream.DATA,):
            for dev in self._log.devices():
                table = self._log.records(dev)
                if table.num_rows:
                    times.append(int(pc.min(table.column("ts").cast(pa.int64())).as_py()))
        kinds = _JOURNAL_KINDS.get(stream)
        if kinds:
            table = self._log.journal(kinds=list(kinds))
            if table.num_rows:
                times.append(int(pc.min(table.column("ts").cast(pa.int64())).as_py()))
        return min(times) if times else None

    def membership(self) -> Membership:
        return membership_of(self._log.watermark())

    def config_snapshot(self, end_ns: int) -> str:
        return self._snapshots.at(self._log, end_ns)

    def render(self, spec: WindowSpec) -> list[Rendered]:
        config = self._view_config(spec.config)
        stamp = spec.end_ns
        if spec.stream is Stream.DATA:
            return self._render_data(spec, config, stamp)
        items = self._events(spec)
        if spec.stream is Stream.PARAM:
            from exporters.views.data import param_text_chunks
            defs = self._definitions_for(i.def_id for i in items)
            out = []
            for interface in INTERFACES:
                built = gzip_with_text_sha(param_text_chunks(interface, items, defs, config))
                if built is not None:
                    out.append(Rendered(name=data_file_name(config.uid, interface, stamp,
                                                            parameters=True),
                                        directory="/DATA", data=built[0], text_sha256=built[1]))
            return out
        return _render_journal_stream(spec.stream, items, self._definitions_for(
            i.def_id for i in items), config, stamp)

    # ----- members

    def _render_data(self, spec: WindowSpec, config: ViewConfig, stamp: int) -> list[Rendered]:
        from exporters.views.data import data_text_chunks
        records: dict[str, pa.Table] = {}
        for dev in self._log.devices():
            table = self._members(dev, self._log.records(dev), spec)
            if table.num_rows:
                records[dev] = table
        defs = self._definitions_for(
            d for t in records.values() for d in pc.unique(t.column("def")).to_pylist())
        out = []
        for interface in INTERFACES:
            built = gzip_with_text_sha(data_text_chunks(interface, records, defs, config))
            if built is not None:
                out.append(Rendered(name=data_file_name(config.uid, interface, stamp),
                                    directory="/DATA", data=built[0], text_sha256=built[1]))
        return out

    @staticmethod
    def _members(device: str, table: pa.Table, spec: WindowSpec) -> pa.Table:
        window, previous = bounds_of(spec)
        return select_records(table, device, window, previous)

    def _events(self, spec: WindowSpec) -> list[JournalItem]:
        kinds = _JOURNAL_KINDS.get(spec.stream, ())
        window, previous = bounds_of(spec)
        return journal_items(select_journal(self._log.journal(kinds=list(kinds)), window,
                                            previous))

    def _definitions_for(self, ids: Iterable[str | None]) -> dict[str, DefinitionFile]:
        out: dict[str, DefinitionFile] = {}
        for def_id in ids:
            if def_id is None or def_id in out:
                continue
            if def_id not in self._definitions:
                name = def_id.partition(":")[2] or def_id
                self._definitions[def_id] = self._parse_definition(
                    self._log.get_definition(def_id), name)
            out[def_id] = self._definitions[def_id]
        return out


_JOURNAL_KINDS: Final[Mapping[Stream, tuple[str, ...]]] = {
    Stream.ALARM: ("alarm",),
    Stream.PARAM: ("param",),
    Stream.ACK: ("result",),
    Stream.LOG: ("log",),
}


def _render_journal_stream(stream: Stream, items: list[JournalItem],
                           defs: Mapping[str, DefinitionFile], config: ViewConfig,
                           stamp: int) -> list[Rendered]:
    """ALARM, ACK and LOG files through their views, when those views are present."""
    try:
        if stream is Stream.ALARM:
            from exporters.views import alarm as alarm_view  # type: ignore[attr-defined]
            text = alarm_view.alarm_text(items, defs, config)
            name, directory = alarm_file_name(config.uid, stamp), "/ALARM"
        elif stream is Stream.ACK:
            from exporters.views import ack as ack_view  # type: ignore[attr-defined]
            text = ack_view.ack_text(items)
            name, directory = ack_file_name(config.uid, stamp), "/CMD"
            if not text:
                return []
            data = text.encode()
            return [Rendered(name=name, directory=directory, data=data,
                             text_sha256=hashlib.sha256(data).hexdigest())]
        else:
            from exporters.views import log as log_view  # type: ignore[attr-defined]
            text = log_view.log_text(items, config)
            name, directory = log_file_name(config.uid, stamp), "/LOG"
    except ImportError as err:
        raise SourceError(f"the {stream} view is not available: {err}") from err
    built = gzip_with_text_sha([text])
    if built is None:
        return []
    return [Rendered(name=name, directory=directory, data=built[0], text_sha256=built[1])]


def view_config_from(gateway: GatewaySettings, server: ServerSettings,
                     daq: Any) -> ViewConfig:
    return ViewConfig.for_server(gateway, server, daq)


@dataclass(slots=True)
class ExportJob:
    """What `sunpm export` works with: the store, the source and, for `--upload`, a transport."""

    log: Any
    source: StoreSource
    file_server: bool
    transport: Any = None
    two_step: bool = True

    async def upload(self, path: str, data: bytes) -> None:
        if self.transport is None:
            raise SourceError("no transport for this server")
        await self.transport.upload(path, data, two_step=self.two_step)


@asynccontextmanager
async def open_export(*, config_dir: Path, store_dir: Path | None,
                      server: int) -> AsyncIterator[ExportJob]:
    """Open the store read-only and the running configuration for a backfill of `server`."""
    raise SourceError("sunpm export needs the store and configuration loaders")
    yield  # pragma: no cover
