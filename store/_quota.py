"""Device quotas and storage-full episodes (writer side): room for a frame by deleting delivered
sealed segments, or evicting undelivered ones (`evict-oldest`), or dropping the records
(`stop`); the `full` / `evicted` / `available` journal events of an episode."""

from __future__ import annotations

import logging

from store._core import LogCore
from store._ipc import schema_message
from store._stream import Segment, Stream
from store._work import Counters, PendingEvent, iso_utc, json_text, now_ns
from store.options import FullPolicy, StoreOptions

log = logging.getLogger("sunpm.store")


def quota_usage(options: StoreOptions, stream: Stream, compact: list[tuple[str, Segment]]) -> int:
    """Bytes on flash (whole blocks of the file system), a segment sealed in this commit counted
    as its rewrite will take.

    It is rewritten (compressed) right after the commit; counted as written, it would drop the
    records of each commit that seals one near the quota, and room would come back a commit
    later (the journal: its `Storage full` raised again at each seal). Its rewrite is foreseen
    at the stream's last measured ratio.
    """
    if not (options.compact_sealed and options.compress_sealed):
        return stream.usage
    rewriting = {id(s) for name, s in compact if name == stream.name}
    on_flash = stream.on_flash
    return sum(on_flash(round(s.size * stream.flash_ratio) if id(s) in rewriting else s.size)
               for s in stream.segments)


class Quota(LogCore):
    def _make_quota_room(self, device: str, stream: Stream, seg: Segment | None, frame_len: int,
                         counters: Counters, events: list[PendingEvent],
                         compact: list[tuple[str, Segment]]) -> bool:
        # What the frame adds on flash: the blocks it takes beyond those its segment has.
        if seg is not None:
            need = stream.on_flash(seg.size + frame_len) - stream.on_flash(seg.size)
        else:
            need = stream.on_flash(frame_len + len(schema_message(stream.schema)))
        quota = self.options.device_quota_bytes
        while self._quota_usage(stream, compact) + need > quota:
            sealed = [s for s in stream.segments if s.sealed]
            victim = next((s for s in sealed if self._is_delivered(device, stream, s)), None)
            if victim is not None:
                self._delete_segment(stream, victim)
                continue
            if self.options.full_policy is FullPolicy.STOP or not sealed:
                return False
            victim = sealed[0]
            if victim.seq_last is None:
                stream.walk(victim)
            count = (victim.seq_last - victim.seq0 + 1) if victim.seq_last is not None else 0
            self._delete_segment(stream, victim)
            counters.evicted += count
            counters.episode_evicted += count
            log.error("Storage full: undelivered records evicted. device=%s records=%d "
                      "from=%s to=%s", device, count, iso_utc(victim.ts_min), iso_utc(victim.ts_max))
            events.append(PendingEvent(now_ns(), "storage", device, None, json_text({
                "event": "evicted", "device": device, "records": count,
                "seq_first": victim.seq0, "seq_last": victim.seq_last,
                "ts_min": victim.ts_min, "ts_max": victim.ts_max}), None))
            self._start_episode(device, counters, events, "quota")
        return True

    def _quota_usage(self, stream: Stream, compact: list[tuple[str, Segment]]) -> int:
        return quota_usage(self.options, stream, compact)

    def _pressure_over(self, device: str, stream: Stream) -> bool:
        """Whether the next segment's worth of records can be stored without an eviction.

        With `evict-oldest` under steady pressure every eviction frees one segment, so records
        are stored in between; ending the episode there would raise `Storage full` again at the
        next eviction. It ends once room or a delivered oldest segment is there instead.
        """
        if self.options.full_policy is FullPolicy.STOP:
            return True
        if stream.usage + 2 * self.options.segment_limit_bytes <= self.options.device_quota_bytes:
            return True
        oldest = next((s for s in stream.segments if s.sealed), None)
        return oldest is not None and self._is_delivered(device, stream, oldest)

    def _is_delivered(self, device: str, stream: Stream, seg: Segment) -> bool:
        if self._delivered is None:
            return True
        if seg.seq_last is None or seg.ts_max is None:
            stream.walk(seg)
        if seg.seq_last is None or seg.ts_max is None:
            return True  # holds no record
        return self._delivered(device, seg.seq_last, seg.ts_max)

    def _delete_segment(self, stream: Stream, seg: Segment) -> None:
        with self._lock:
            stream.delete(seg)

    def _start_episode(self, device: str, counters: Counters, events: list[PendingEvent],
                       reason: str) -> None:
        if counters.full:
            return
        counters.full = True
        log.error("Storage full. device=%s reason=%s policy=%s", device, reason,
                  self.options.full_policy.value)
        events.append(PendingEvent(now_ns(), "storage", device, None, json_text({
            "event": "full", "device": device, "reason": reason,
            "policy": self.options.full_policy.value}), None))

    def _end_episode(self, device: str, counters: Counters, events: list[PendingEvent]) -> None:
        counters.full = False
        log.info("Storage available. device=%s dropped=%d evicted=%d", device,
                 counters.episode_dropped, counters.episode_evicted)
        events.append(PendingEvent(now_ns(), "storage", device, None, json_text({
            "event": "available", "device": device, "dropped": counters.episode_dropped,
            "evicted": counters.episode_evicted}), None))
        counters.episode_dropped = counters.episode_evicted = 0

