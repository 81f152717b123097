"""Journal GC (writer side): the journal's quota. Its oldest sealed segment goes once the two
latest `state` events are both after it and what servers get of it is delivered; when only a
later `state` event would let it go, one is asked of the state provider.

Two, not one: a `state` event is one batch on flash, and when it rots the replay falls back to
the one before it and the events after that (`Log.journal_since_latest` skips the damaged
batch), which must still be there; with only the newest one's history kept, the delivery
cursors went with it."""

from __future__ import annotations

import logging

from store._core import JOURNAL
from store._quota import quota_usage
from store._readers import Readers
from store._stream import Segment, Stream
from store._work import PendingEvent, json_text, now_ns
from store.errors import StoreError

log = logging.getLogger("sunpm.store")



class JournalGC(Readers):
    def _journal_quota(self, stream: Stream, carry: list[PendingEvent],
                       compact: list[tuple[str, Segment]]) -> None:
        quota = self.options.journal_quota
        usage = quota_usage(self.options, stream, compact)
        if usage <= quota:
            # Near its quota the journal's bytes on flash go up and down by a seal's savings
            # (the live segment counts as written): below it by less than a segment is the
            # same episode, else `Storage full` and `available` would be raised at each seal.
            if self._journal_full and usage + self.options.segment_limit_bytes <= quota:
                self._end_journal_episode(usage, carry)
            return
        if self._state_seqs is None:
            self._state_seqs = self._find_state_seqs()
        # Every event up to this one is summarised by both of the two latest `state` events.
        summarised = self._state_seqs[0] if len(self._state_seqs) == 2 else 0
        while quota_usage(self.options, stream, compact) > quota:
            victim = next((s for s in stream.segments if s.sealed), None)
            if victim is not None and (victim.seq_last is None or victim.ts_max is None):
                stream.walk(victim)
            ok = (
                victim is not None and victim.seq_last is not None
                and summarised > victim.seq_last
                and (self._journal_delivered is None
                     or self._journal_delivered(victim.seq_last, victim.ts_max or 0))
            )
            if (not ok and victim is not None and victim.seq_last is not None
                    and summarised <= victim.seq_last and self._state_provider is not None
                    and self._state_asked_at < stream.next_seq - 1):
                # Only a later `state` event lets the oldest segment go: ask for one (it joins
                # the next commit); the segment goes at a later commit (after a second one when
                # the latest is not after it either).
                self._state_asked_at = stream.next_seq - 1
                try:
                    body = json_text(self._state_provider())
                except (StoreError, OSError, TypeError, ValueError) as err:
                    log.error("State snapshot for the journal quota failed. error=%s", err)
                else:
                    carry.append(PendingEvent(now_ns(), "state", None, None, body, None))
                    return
            if not ok:
                if not self._journal_full:
                    self._journal_full = True
                    log.error("Storage full. device=journal usage=%d quota=%d", stream.usage,
                              quota)
                    carry.append(PendingEvent(now_ns(), "storage", None, None,
                        json_text({"event": "full", "device": JOURNAL, "reason": "quota"}), None))
                return
            assert victim is not None
            with self._lock:
                stream.delete(victim)
        if self._journal_full:
            # Segments go again: the journal is no longer stuck past its quota.
            self._end_journal_episode(quota_usage(self.options, stream, compact), carry)

    def _end_journal_episode(self, usage: int, carry: list[PendingEvent]) -> None:
        """Its `Storage full` is an alarm raised to the operator: it is cleared too."""
        self._journal_full = False
        log.info("Storage available. device=journal usage=%d quota=%d", usage,
                 self.options.journal_quota)
        carry.append(PendingEvent(now_ns(), "storage", None, None,
                                  json_text({"event": "available", "device": JOURNAL}), None))

    def _find_state_seqs(self) -> list[int]:
        """The seqs of the two latest `state` events whose batches verify, oldest first."""
        found: list[int] = []
        for table in self.journal_newest_first(["state"]):
            found = [*table.column("seq").to_pylist(), *found][-2:]
            if len(found) == 2:
                break
        return [int(seq) for seq in found]

