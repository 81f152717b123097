"""`Log`: the crash-safe append-only event log (docs/architecture.md §3, docs/behaviour.md §6).

On disk, under the store path:

    lock                          flock'ed by the one writer; holds its pid
    devices/<index>/<seq0>.arrows records of one device: Arrow IPC stream segments (store/_segment.py)
    devices/<index>/<seq0>.arrow  a sealed segment rewritten once as an IPC file: large batches,
                                  zstd when `compress_sealed`
    journal/<seq0>.arrows         the gateway journal, same framing
    defs/<sha256>.csv             definition snapshots (store/snapshots.py)
    config/<sha256>/<file>        configuration snapshots
    state/                        caches only (rebuildable from the journal)

Its rooms, each a mixin over the shared state of `store/_core.py`: appends and back-pressure
(`_appends.py`), the writer and commit (`_writer.py`), commit planning (`_planning.py`), device
quotas and storage-full episodes (`_quota.py`), journal GC (`_journal_gc.py`), readers
(`_readers.py`), fsck (`_fsck.py`); the lock file (`lockfile.py`); the value types
(`options.py`). Here: opening (recovery), closing, the delivery hooks and snapshots.

Invariants:
- One writer task; each commit appends at most one framed batch per touched segment, then one
  record of them to the commit log (store/_wal.py) and fsyncs it once; an append's awaitable
  completes only after that fsync.
- Sequence numbers (records: per device; journal: one series) start at 1, are assigned at commit
  and are gap-free: a dropped record gets none.
- A failed write is cut back to the segment's last committed length; its items stay pending and
  are retried at the next commit.
- Only whole sealed segments are ever deleted (quota), never an open one's bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

import fsio
from store import _wal as wal
from store import snapshots
from store._appends import Appends
from store._core import JOURNAL
from store._fsck import Fsck
from store._stream import Stream
from store._work import Counters, PendingEvent, json_text, now_ns, report_body
from store._writer import Writer
from store.errors import ReportKind, StoreError, StoreReport
from store.lockfile import take_lock
from store.options import DeliveredFn, JournalDeliveredFn, StoreOptions
from store.schema import JOURNAL_SCHEMA, RECORDS_SCHEMA

log = logging.getLogger("sunpm.store")


class Log(Appends, Writer, Fsck):
    """The store: records per device and the gateway journal. Open with `await Log.open(...)`."""

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: Path, options: StoreOptions | None = None, *,
                   read_only: bool = False) -> Log:
        """Open a store (creating it unless read-only); recovery runs before this returns.

        A writer takes the lock file and starts the writer task; read-only never writes a byte.
        """
        self = cls(Path(path), options or StoreOptions(), read_only)
        await asyncio.to_thread(self._open_sync)
        if not read_only:
            self._wake = asyncio.Event()
            self._room = asyncio.Condition()
            self._space = asyncio.Condition()
            self._io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="store-io")
            self._task = asyncio.create_task(self._writer(), name="store-writer")
            for report in self.reports:
                if report.kind in (ReportKind.TORN_TAIL, ReportKind.DAMAGE):
                    self._carry_events.append(PendingEvent(
                        now_ns(), "storage", None, None, json_text(report_body(report)), None))
        return self

    @classmethod
    def open_read_only(cls, path: Path, options: StoreOptions | None = None) -> Log:
        """Blocking read-only open (card dumps, offline tools): never writes a byte."""
        self = cls(Path(path), options or StoreOptions(), True)
        self._open_sync()
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Final commit of everything pending, then release the writer's lock."""
        if self._closed:
            return
        self._closing = True
        if self._task is not None:
            assert self._wake is not None
            self._wake.set()
            try:
                await self._task
            finally:
                self._task = None
        self._closed = True
        if not self.read_only:
            # A clean stop leaves an empty commit log: every segment fsynced.
            await asyncio.to_thread(self._checkpoint_sync)
            self._wal.close()
        for stream in self._all_streams():
            stream.close_fd()
        if self._io is not None:
            self._io.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _open_sync(self) -> None:
        if not self.read_only:
            created = False
            for sub in ("devices", JOURNAL, "defs", "config", "state"):
                if not (self.path / sub).is_dir():
                    fsio.mkdir(self.path / sub, parents=True)
                    created = True
            self._lock_fd = take_lock(self.path / "lock", self.path)
            created = self._wal.create() or created
            if created:
                # The directories' and the commit log's entries survive a power cut too.
                fsio.fsync_dir(self.path)
            # Before any segment is checked: what the last commits logged is put back first.
            wal.recover(self.path, self.reports)
            self._wal.open()
            overlay: dict[Path, bytes] = {}
            saved = wal.read_high_water(self.path, self.reports)
        elif not self.path.is_dir():
            raise StoreError(f"{self.path}: no store here (not a directory)")
        else:
            overlay = {path: image for path, (image, _)
                       in wal.replayed_images(self.path, self.reports).items()}
            saved = wal.read_high_water(self.path, self.reports)
        high_water = dict(saved)
        for stream_dir, mark in wal.logged_high_water(self.path).items():
            high_water[stream_dir] = max(high_water.get(stream_dir, 0), mark)
        devices = self.path / "devices"
        if devices.is_dir():
            for entry in sorted(os.scandir(devices), key=lambda e: e.name):
                if not entry.is_dir():
                    self.reports.append(StoreReport(kind=ReportKind.FOREIGN, path=Path(entry.path),
                                                    detail="not a device directory"))
                    continue
                stream = Stream(entry.name, Path(entry.path), RECORDS_SCHEMA, overlay)
                try:
                    stream.load(read_only=self.read_only,
                                high_water=high_water.get(f"devices/{entry.name}", 0))
                except OSError as err:
                    self.reports.append(StoreReport(kind=ReportKind.UNREADABLE,
                                                    path=Path(entry.path), detail=str(err)))
                    continue
                self._adopt(stream)
                self._committed[stream.name] = stream.next_seq - 1
        if (self.path / JOURNAL).is_dir():
            journal = Stream(JOURNAL, self.path / JOURNAL, JOURNAL_SCHEMA, overlay)
            journal.load(read_only=self.read_only, high_water=high_water.get(JOURNAL, 0))
            self.reports.extend(journal.reports)
            self._noted.update(journal.reports)
            self._journal = journal
            self._journal_committed = journal.next_seq - 1
        for report in self.reports:
            if report.kind is ReportKind.TORN_TAIL:
                log.warning("%s", report)
            else:
                log.error("%s", report)
        if not self.read_only:
            # What the commit log held is in the segments now, and its numbers in `seqs`.
            # Compared with what the file holds, not with what the commit log added to it.
            self._high_water = saved
            try:
                self._save_high_water()
                self._wal.reset()
            except OSError as err:
                # A full disk must not stop the start (docs/behaviour.md §6): the commit log keeps
                # covering its frames, and the next checkpoint tries again.
                log.error("Commit log checkpoint failed. error=%s", err)
            self._restore_episodes()

    def _restore_episodes(self) -> None:
        """Storage-full episodes open at the last stop go on (docs/behaviour.md §6: `Storage
        full` once per episode, `Storage available` when recording resumes): a restart in the
        middle of one neither raises `Storage full` again nor ends it without `available`.

        The episode's evictions are counted again from its `evicted` events; its drops before
        the restart are not journaled one by one, so its `available` event counts those since.
        The latest `state` event keeps the episodes (`store.state.StorageEpisodes`): only the
        `storage` events after what it folded are read, newest segments first. A store whose
        `state` events predate that section has every `storage` event read.
        """
        from store.state import StorageEpisodes

        table = self.journal_since_latest("state", ["storage"])
        episodes = None
        if table.num_rows and table.column("kind")[0].as_py() == "state":
            try:
                body = json.loads(table.column("body")[0].as_py())
            except ValueError:
                body = None
            if isinstance(body, dict):
                episodes = StorageEpisodes.from_section(body.get("storage"))
            folded = body.get("seq") if isinstance(body, dict) else None
            folded = max(folded if isinstance(folded, int) else 0,
                         episodes.seq if episodes is not None else 0)
            if episodes is None:
                table = self.journal(kinds=["storage"])
            elif folded < table.column("seq")[0].as_py() - 1:
                # Its body is taken a commit before the `state` event is journaled: the events
                # in between are read too (`fold` skips any it holds).
                table = self.journal(kinds=["storage"], seq_from=folded + 1)
        episodes = episodes or StorageEpisodes()
        table = table.sort_by("seq")
        for kind, seq, text in zip(table.column("kind").to_pylist(),
                                   table.column("seq").to_pylist(),
                                   table.column("body").to_pylist(), strict=True):
            try:
                event = json.loads(text)
            except ValueError:
                continue
            if kind == "storage" and isinstance(event, dict):
                episodes.fold(int(seq), event)
        for device in episodes.open:
            if device == JOURNAL:
                self._journal_full = True
                continue
            counters = self._counters.setdefault(device, Counters())
            counters.full = True
            counters.episode_evicted = episodes.evicted.get(device, 0)

    # -- delivery hooks (set by the outbox) -----------------------------------------------

    def set_state_provider(self, provider: Callable[[], Mapping[str, object]] | None) -> None:
        """Who writes `state` events when the journal's quota needs one (blocking, called on
        the writer thread): typically `lambda: replay(log).to_body()`, whose delivery state
        the `state` event keeps. None: nobody; the journal then grows past its quota."""
        self._state_provider = provider

    def set_delivery_predicates(self, records: DeliveredFn | None,
                                journal: JournalDeliveredFn | None = None) -> None:
        """What counts as delivered for quota deletion; None: no server configured, any.

        Called on the store's writer threads, several devices at once: read-only and quick.
        """
        self._delivered = records
        self._journal_delivered = journal

    # -- state snapshots -------------------------------------------------------------------

    async def write_state_snapshot(self, body: Mapping[str, object] | None = None) -> int:
        """Journal a `state` event holding the replayed state, so older segments can go.

        With no `body`, the state is replayed here with the default reducers (store/state.py).
        """
        if body is None:
            from store.state import replay

            state = await asyncio.to_thread(replay, self)
            body = state.to_body()
        return await self.append_journal("state", body, commit_now=True)

    # -- content-addressed snapshots -------------------------------------------------------

    def put_definition(self, name: str, data: bytes) -> str:
        """Store a definition file's bytes; returns its snapshot id `<sha256>:<name>`."""
        self._check_writable()
        return snapshots.put_definition(self.path, name, data)

    def get_definition(self, snapshot_id: str) -> bytes:
        return snapshots.get_definition(self.path, snapshot_id)

    def put_config(self, files: Mapping[str, bytes]) -> str:
        """Store a configuration (file name -> bytes); returns its snapshot hash."""
        self._check_writable()
        return snapshots.put_config(self.path, files)

    def get_config(self, snapshot: str) -> dict[str, bytes]:
        return snapshots.get_config(self.path, snapshot)

    def config_snapshots(self) -> list[str]:
        return snapshots.list_configs(self.path)
