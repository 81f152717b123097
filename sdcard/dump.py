"""A store or card dump opened read-only: the store's own reader plus what lies around it.

`open_dump(path)` opens the directory with `store.Log.open_read_only` (which never writes a
byte, skips torn tails and reports damage) and adds what only an offline reader cares about:
files that are not the store's (listed, skipped), sealed segment files written with a schema
version this reader does not know (skipped), and the configuration in force (the snapshot the
latest `window` or `config` event names) with the uid it gives.

Segment files are told apart by name only (`<seq0>.arrows` stream, `<seq0>.arrow` sealed IPC
file, the `.arrow` winning when both exist); every byte of them is read through the store or
through Arrow's own IPC reader, never parsed here.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

import pyarrow as pa

from config import Site, load_site, load_site_files
from config.errors import SunpmError
from store import SCHEMA_VERSION, Log, ReportKind, StoreReport
from store.delivery import BuiltWindow
from store.errors import SnapshotError
from store.events import ConfigInForce


class DefinitionReader:
    """The store seen by the views, its definition snapshots read through `Dump.get_definition`
    (so a re-export renders with a definition recovered from a configuration snapshot)."""

    def __init__(self, dump: Dump) -> None:
        self._dump = dump

    def get_definition(self, snapshot_id: str) -> bytes:
        return self._dump.get_definition(snapshot_id)

    def __getattr__(self, name: str) -> object:
        return getattr(self._dump.log, name)


#: What a store directory may hold at its top (docs/architecture.md §3).
STORE_ENTRIES: Final = frozenset(
    {"lock", "wal", "seqs", "devices", "journal", "defs", "config", "state", "outbox", "traces"})
_SEGMENT: Final = re.compile(r"^(\d{1,20})\.(arrows|arrow)$")
_DEF_FILE: Final = re.compile(r"^[0-9a-f]{64}\.csv$")
_VERSION_KEY: Final = b"sunpm.schema_version"


class DumpError(SunpmError):
    """The path cannot be read as a store at all."""


class Level(StrEnum):
    ERROR = "error"      # data lost or unreadable
    WARNING = "warning"  # skipped, nothing of ours lost (a torn tail, a foreign file)


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    kind: str            # torn_tail, empty, damage, foreign, unreadable, schema, snapshot
    path: Path
    message: str

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, str]:
        return {"level": self.level.value, "kind": self.kind, "path": str(self.path),
                "message": self.message}


def finding_of(report: StoreReport) -> Finding:
    if report.kind is ReportKind.SCHEMA:
        return _version_finding(report.path, report.detail)
    if report.kind is ReportKind.FOREIGN and _is_segment_file(report.path):
        # The store calls a segment foreign when no batch of it verifies after a schema message
        # not ours (docs/spec-notes.md, header damage); for a reader its batches are lost,
        # which is damage, not a stranger's file beside the store's.
        return Finding(Level.ERROR, ReportKind.UNREADABLE.value, report.path,
                       f"{report.path}: segment unreadable ({report.detail}); skipped")
    level = Level.WARNING if report.kind in (ReportKind.TORN_TAIL, ReportKind.FOREIGN) \
        else Level.ERROR
    return Finding(level, report.kind.value, report.path, str(report))


def _is_segment_file(path: Path) -> bool:
    """A file named as a segment, in the journal's or a device's folder."""
    return (_SEGMENT.match(path.name) is not None and path.is_file()
            and (path.parent.name == "journal" or path.parent.parent.name == "devices"))


def merge_findings(*groups: list[Finding]) -> list[Finding]:
    """The findings of several readings of the dump, each once: the open's report of a torn
    tail and a later check's describe the same bytes (only the open knows how many batches it
    kept), so a torn tail is told apart by its path."""
    seen: set[tuple[str, str]] = set()
    out = []
    for group in groups:
        for f in group:
            key = (str(f.path), f.kind) if f.kind == "torn_tail" else (f.message, f.kind)
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


@dataclass(frozen=True, slots=True)
class SegmentFile:
    seq0: int
    path: Path
    ipc_file: bool   # a sealed `.arrow` (scanned lazily); else a stream read through the store


@dataclass(slots=True)
class Dump:
    path: Path
    log: Log
    #: Findings of this reader's own (the store's reports are added by `findings`).
    extra: list[Finding] = field(default_factory=list)
    #: Sealed IPC files whose footer and schema version were checked, per stream name.
    _segments: dict[str, list[SegmentFile]] = field(default_factory=dict)
    #: Scans report from their threads.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def findings(self) -> list[Finding]:
        """What the store reported (on open and on every read since) and what this reader met."""
        return merge_findings([finding_of(r) for r in self.log.reports], self.extra)

    # -- segments -------------------------------------------------------------------------

    def devices(self) -> list[str]:
        return self.log.devices()

    def segments(self, stream: str) -> list[SegmentFile]:
        """A device's (or `journal`'s) segment files the reader may use, oldest first."""
        if stream not in self._segments:
            self._segments[stream] = self._list_stream(stream)
        return self._segments[stream]

    def prepare(self, streams: list[str]) -> None:
        """List the segments of many streams at once: the footer checks of their sealed files
        run on a few threads (each is a small read; pyarrow releases the GIL while it reads)."""
        todo = [s for s in streams if s not in self._segments]
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="sd-list") as pool:
            for stream, found in zip(todo, pool.map(self._list_stream, todo), strict=True):
                self._segments[stream] = found

    def _list_stream(self, stream: str) -> list[SegmentFile]:
        directory = self.path / "journal" if stream == "journal" \
            else self.path / "devices" / stream
        return self._list_segments(directory)

    def _list_segments(self, directory: Path) -> list[SegmentFile]:
        skipped = {f.path for f in self.findings if f.kind in ("foreign", "unreadable", "schema")}
        found: dict[int, SegmentFile] = {}
        if not directory.is_dir():
            return []
        for entry in sorted(directory.iterdir()):
            m = _SEGMENT.match(entry.name)
            if m is None or not entry.is_file() or entry in skipped:
                continue
            seq0, ipc_file = int(m.group(1)), m.group(2) == "arrow"
            if ipc_file:
                problem = _ipc_file_problem(entry)
                if problem is not None:
                    self.extra.append(problem)
                    continue
            elif seq0 in found:
                continue  # the compacted `.arrow` of the same segment wins
            found[seq0] = SegmentFile(seq0, entry, ipc_file)
        return [found[k] for k in sorted(found)]

    def check(self, progress: Callable[[int], None] | None = None) -> list[Finding]:
        """Every batch's CRC-32C (`Log.check`, `progress(1)` a stream), and every stream's
        segments listed. The check of a sealed file of an unknown schema version is left out: the
        store reads it in its own schema, and called an intact file damaged at its schema
        message; it is named once, as set aside."""
        reports = self.log.check(progress=progress)
        self.prepare([*self.devices(), "journal"])
        aside = {f.path for f in self.extra if f.kind == "schema"}
        return [finding_of(r) for r in reports if r.path not in aside]

    def unknown_version(self, path: Path, version: str) -> None:
        """A scan met a sealed file written with a schema version this reader does not know
        (and skipped it)."""
        finding = _version_finding(path, version)
        with self._lock:
            if finding not in self.extra:
                self.extra.append(finding)

    # -- snapshots --------------------------------------------------------------------------

    def get_definition(self, snapshot_id: str) -> bytes:
        """A definition snapshot's bytes; one missing or damaged in `defs/` is taken from a
        configuration snapshot holding the same bytes (its `DEF/` files), and said so."""
        try:
            return self.log.get_definition(snapshot_id)
        except SnapshotError as err:
            sha, _, name = snapshot_id.partition(":")
            for snapshot in self.log.config_snapshots():
                try:
                    files = self.log.get_config(snapshot)
                except SnapshotError:
                    continue
                for rel, data in files.items():
                    if rel.startswith("DEF/") and hashlib.sha256(data).hexdigest() == sha:
                        self.extra.append(Finding(
                            Level.WARNING, "snapshot", self.path / "defs",
                            f"{err}; {name} taken from configuration snapshot {snapshot}"))
                        return data
            raise

    # -- configuration ----------------------------------------------------------------------

    def config_in_force(self) -> str | None:
        """The configuration snapshot of the latest `window` or `config` event the dump holds
        (else its only snapshot)."""
        stored = set(self.log.config_snapshots())
        table = self.log.journal(kinds=["window", "config"])
        for kind, body in zip(reversed(table.column("kind").to_pylist()),
                              reversed(table.column("body").to_pylist()), strict=True):
            snap = ConfigInForce.snapshot_in(body) if kind == "config" else _window_config(body)
            if snap is not None and snap in stored:
                return snap
        return next(iter(stored)) if len(stored) == 1 else None

    def check_snapshots(self) -> None:
        """A finding for each configuration snapshot the journal names that the dump lacks:
        the windows rendered with it re-export only with `--config`."""
        stored = set(self.log.config_snapshots())
        table = self.log.journal(kinds=["window", "config"])
        named: dict[str, None] = {}
        for kind, body in zip(table.column("kind").to_pylist(),
                              table.column("body").to_pylist(), strict=True):
            snap = ConfigInForce.snapshot_in(body) if kind == "config" else _window_config(body)
            if snap is not None and snap not in stored:
                named[snap] = None
        for snap in named:
            finding = Finding(Level.ERROR, "snapshot", self.path / "config" / snap,
                              f"{self.path / 'config' / snap}: configuration snapshot named by "
                              "the journal is missing; its windows re-export only with --config")
            if finding not in self.extra:
                self.extra.append(finding)

    def config_files(self, snapshot: str) -> dict[str, bytes] | None:
        try:
            return self.log.get_config(snapshot)
        except SnapshotError as err:
            self.extra.append(Finding(Level.ERROR, "snapshot", self.path / "config" / snapshot,
                                         str(err)))
            return None

    def uid(self) -> str | None:
        """The uid of the configuration in force; with none readable, the one named by the
        configuration snapshots' file names (a damaged snapshot still names its files)."""
        snapshot = self.config_in_force()
        names = list(self.config_files(snapshot) or {}) if snapshot is not None else []
        if not names:
            names = sorted(p.relative_to(p.parents[1]).as_posix()
                           for p in (self.path / "config").glob("*/CONFIG/*_config.ini"))
        for name in names:
            if name.startswith("CONFIG/") and name.endswith("_config.ini"):
                return name[len("CONFIG/"):-len("_config.ini")]
        return None

    @contextmanager
    def site(self, config_dir: Path | None = None) -> Iterator[Site]:
        """The site of `config_dir`, else the configuration in force in the dump, read from its
        snapshot's bytes (nothing written)."""
        if config_dir is not None:
            yield load_site(config_dir)
            return
        snapshot = self.config_in_force()
        files = None if snapshot is None else self.config_files(snapshot)
        if not files:
            raise DumpError(f"{self.path}: no configuration snapshot in the dump; give --config "
                            "DIR (the configuration the unit ran)")
        yield load_site_files(files)


def _window_config(body: str) -> str | None:
    """The configuration snapshot a `window` body rendered with; None for a body that holds no
    window."""
    try:
        return BuiltWindow.from_body(json.loads(body)).spec.config
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _version_finding(path: Path, version: str) -> Finding:
    return Finding(Level.ERROR, "schema", path,
                   f"{path}: unknown schema version {version or '(none)'!r} (this reader "
                   f"knows {SCHEMA_VERSION!r}); skipped")


def _ipc_file_problem(path: Path) -> Finding | None:
    try:
        with pa.memory_map(str(path)) as source:
            schema = pa.ipc.open_file(source).schema
    except (OSError, pa.ArrowInvalid) as err:
        return Finding(Level.ERROR, "unreadable", path,
                       f"{path}: unreadable ({str(err).splitlines()[0]}); skipped")
    version = (schema.metadata or {}).get(_VERSION_KEY, b"").decode(errors="replace")
    return _version_finding(path, version) if version != SCHEMA_VERSION else None


def _empty_segments(path: Path) -> list[Finding]:
    """Zero-byte stream segments, which the store's reader passes over without a word. The last
    of its folder was created just before a power cut, before its first batch was written:
    nothing acknowledged is lost (a warning, as a torn tail). One with segments after it had
    been sealed (the store starts a segment only after sealing the one before), so its batches
    are lost."""
    found = []
    folders = [path / "journal"]
    if (path / "devices").is_dir():
        folders += sorted(p for p in (path / "devices").iterdir() if p.is_dir())
    for folder in folders:
        if not folder.is_dir():
            continue
        segments = sorted((int(m.group(1)), entry) for entry in folder.iterdir()
                          if (m := _SEGMENT.match(entry.name)) is not None and entry.is_file())
        for i, (_, entry) in enumerate(segments):
            if entry.suffix != ".arrows" or entry.stat().st_size != 0:
                continue
            if i == len(segments) - 1:
                found.append(Finding(Level.WARNING, "empty", entry,
                                     f"{entry}: empty segment (0 bytes: created just before a "
                                     "power cut or a copy, before its first batch; nothing "
                                     "acknowledged lost); skipped"))
            else:
                found.append(Finding(Level.ERROR, "empty", entry,
                                     f"{entry}: empty segment with segments after it (sealed: "
                                     "its batches are lost); skipped"))
    return found


def open_dump(path: Path) -> Dump:
    """Open a store or card dump read-only; raises `DumpError` for a path that is no store."""
    path = Path(path)
    if not path.exists():
        raise DumpError(f"{path}: no such directory")
    if not path.is_dir():
        raise DumpError(f"{path}: not a directory (a store or card dump is a directory)")
    if not (path / "devices").is_dir() and not (path / "journal").is_dir():
        raise DumpError(f"{path}: not a sunpm store (no devices/ or journal/ folder)")
    try:
        log = Log.open_read_only(path)
    except (OSError, SunpmError) as err:
        raise DumpError(f"{path}: cannot be opened as a store ({err})") from err
    dump = Dump(path, log)
    for folder, lost in (("devices", "every device's records"),
                         ("journal", "alarms, logs, delivery cursors and configuration history")):
        if not (path / folder).is_dir():
            dump.extra.append(Finding(Level.ERROR, "missing", path / folder,
                                      f"{path / folder}: missing ({lost} lost)"))
    for entry in sorted(path.iterdir()):
        if entry.name not in STORE_ENTRIES:
            dump.extra.append(Finding(Level.WARNING, "foreign", entry,
                                         f"{entry}: not a sunpm store file; skipped"))
    dump.extra.extend(_empty_segments(path))
    defs = path / "defs"
    if defs.is_dir():
        for entry in sorted(defs.iterdir()):
            if not _DEF_FILE.match(entry.name) and not entry.name.startswith("."):
                dump.extra.append(Finding(Level.WARNING, "foreign", entry,
                                             f"{entry}: not a definition snapshot; skipped"))
    return dump
