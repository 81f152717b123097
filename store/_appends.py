"""Appends and back-pressure (loop side): pending record batches and journal events, the memory
bound that makes appenders wait while the writer is behind, and the oldest-first drops while
commits fail. Everything here runs on the event loop, which owns the pending state."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pyarrow as pa

from store._core import LogCore
from store._planning import conform, count_records
from store._work import PendingBatch, PendingEvent, json_text, now_ns
from store.errors import StoreClosedError, StoreError, StoreReadOnlyError
from store.options import SeqRange


class Appends(LogCore):
    async def append_records(self, device: str, batch: pa.RecordBatch, *,
                             commit_now: bool = False) -> SeqRange:
        """Append one or more records of `device`; completes once fsynced (acknowledged).

        `batch` has the columns of RECORDS_SCHEMA; `seq` may be absent and is ignored if present.
        Consecutive rows with the same `ts` form one record; each append starts a new record.
        Returns the records' sequence numbers, or an empty range with `dropped=True` when the
        quota (policy `stop`) or the memory limit during a disk failure dropped them. Waits for
        room first when the writer is behind (bounded memory).
        """
        self._check_writable()
        await self._make_room(batch.get_total_buffer_size())
        return await self.submit_records(device, batch, commit_now=commit_now)

    def submit_records(self, device: str, batch: pa.RecordBatch, *,
                       commit_now: bool = False) -> asyncio.Future[SeqRange]:
        """As `append_records` without waiting: returns the acknowledgement to await later.

        Does not wait for room: a producer that submits in bulk awaits `wait_for_room()`
        between submissions.
        """
        self._check_writable()
        if not device or "/" in device or device.startswith("."):
            raise StoreError(f"device {device!r}: not a valid device index")
        batch = conform(batch)
        future: asyncio.Future[SeqRange] = asyncio.get_running_loop().create_future()
        if batch.num_rows == 0:
            seq = self._committed.get(device, 0) + 1
            future.set_result(SeqRange(seq, seq - 1))
            return future
        # Not `nbytes`: it de-duplicates buffers and costs 50x more per call on the hot path.
        nbytes = batch.get_total_buffer_size()
        self._arrivals += 1
        items = self._pending.get(device)
        if items is None:
            items = self._pending[device] = []
        items.append(PendingBatch(batch, future, nbytes, self._arrivals))
        self._pending_bytes += nbytes
        if commit_now:
            assert self._wake is not None
            self._wake.set()
        return future

    async def wait_for_room(self) -> None:
        """Wait until pending appends are within the memory bound."""
        self._check_writable()
        await self._make_room(0)

    async def append_journal(self, kind: str, body: Mapping[str, object], *,
                             device: str | None = None, def_: str | None = None,
                             ts_ns: int | None = None, commit_now: bool = False) -> int:
        """Append one journal event; completes with its `seq` once fsynced."""
        self._check_writable()
        try:
            text = json_text(body)
            # A lone surrogate passes json.dumps but no UTF-8 column takes it: found at the
            # commit, it failed every record and event of that group commit with it.
            text.encode("utf-8")
        except (TypeError, ValueError) as err:
            raise StoreError(f"journal event {kind!r}: body is not JSON: {err}") from err
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        # Journal events are never dropped and never wait for room (docs/behaviour.md §6).
        self._pending_journal.append(PendingEvent(
            now_ns() if ts_ns is None else ts_ns, kind, device, def_, text, future))
        if commit_now:
            assert self._wake is not None
            self._wake.set()
        return await future

    async def commit(self) -> None:
        """Commit now and wait until a commit that started after this call has finished.

        Everything appended before the call is then acknowledged (or still pending if the disk
        fails), store events included.
        """
        self._check_writable()
        assert self._wake is not None and self._room is not None
        wake, room = self._wake, self._room
        target = self._cycles + (2 if self._in_commit else 1)
        while self._cycles < target and not self._closed:
            wake.set()
            async with room:
                await room.wait_for(lambda: self._cycles >= target or self._closed
                                    or not wake.is_set())

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreReadOnlyError(f"{self.path}: store is open read-only")
        if self._closing or self._closed:
            raise StoreClosedError(f"{self.path}: store is closed")

    async def _make_room(self, nbytes: int) -> None:
        assert self._space is not None
        if self._pending_bytes + nbytes <= self.options.max_pending_bytes:
            return
        if self.last_error is not None:
            self._drop_oldest_pending(nbytes)
            return
        # Bounded: when the writer falls behind, appenders wait here, so polling slows down
        # instead of memory growing. Waiting appenders also start the next commit at once
        # rather than at the next flush tick: under overload commits come closer together.
        assert self._wake is not None
        self._wake.set()
        async with self._space:
            await self._space.wait_for(
                lambda: self._pending_bytes + nbytes <= self.options.max_pending_bytes
                or self.last_error is not None or self._closing)
        if self.last_error is not None:
            self._drop_oldest_pending(nbytes)

    def _drop_oldest_pending(self, nbytes: int) -> None:
        """While commits fail: drop the oldest record batches (journal events always wait)."""
        while self._pending_bytes + nbytes > self.options.max_pending_bytes:
            oldest: tuple[str, PendingBatch] | None = None
            for device, items in self._pending.items():
                if items and (oldest is None or items[0].order < oldest[1].order):
                    oldest = (device, items[0])
            if oldest is None:
                return
            device, item = oldest
            self._pending[device].pop(0)
            self._pending_bytes -= item.nbytes
            records = count_records(item.batch)
            self._memory_dropped[device] = self._memory_dropped.get(device, 0) + records
            self._drops_to_hand[device] = self._drops_to_hand.get(device, 0) + records
            if item.future is not None and not item.future.done():
                seq = self._committed.get(device, 0) + 1
                item.future.set_result(SeqRange(seq, seq - 1, dropped=True))

