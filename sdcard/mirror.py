"""The card mirror (docs/behaviour.md §12, `SD_MirrorPath`): a copy of the store that is a valid
dump whenever the card is pulled.

`CardMirror(store, card).run()` (the service starts it in its TaskGroup) copies, off the event
loop:
- sealed segments (every `.arrow`, and a `.arrows` with a later segment after it), the
  definition and configuration snapshots, within `sealed_every_s` (10 s) of their appearance;
- the open segment of each stream (its bytes so far) every `open_every_s` (10 min), so a pulled
  card misses at most that much; a write cut by the copy is a torn tail there, which readers
  skip;
- every file under a temporary name, fsynced, renamed, its folder fsynced: a file on the card is
  whole, or the previous copy, never half of one.

Retention: segments the store's quota deleted stay on the card; when the card has less than
`min_free` (10 %) free, the oldest segments the store no longer holds go first. A missing, full or
failing card is a WARNING at most hourly and `state` says which; acquisition and delivery never
wait for the card, and the mirror catches up when it is back.

Reads the live store's files by name only (the store's writer may compact or delete a segment
while it is copied: the copy is then retried at the next pass).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

from fsio import fsync_dir, write_file_durably

log = logging.getLogger("sunpm.sdcard")

_SEGMENT: Final = re.compile(r"^(\d{1,20})\.(arrows|arrow)$")
WARNING_INTERVAL_S: Final = 3600.0


class MirrorState(StrEnum):
    OK = "ok"
    MISSING = "missing"
    FULL = "full"
    FAILING = "failing"


@dataclass(slots=True)
class MirrorPass:
    copied: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)


class CardMirror:
    def __init__(self, store: Path, card: Path, *, sealed_every_s: float = 10.0,
                 open_every_s: float = 600.0, min_free: float = 0.10) -> None:
        self.store = Path(store)
        self.card = Path(card)
        self.sealed_every_s = sealed_every_s
        self.open_every_s = open_every_s
        self.min_free = min_free
        self.state = MirrorState.OK
        self.last_error: str | None = None
        self._last_warning = -WARNING_INTERVAL_S
        self._open_done_at = -float("inf")

    # -- the service's task -------------------------------------------------------------------

    async def run(self) -> None:
        """Mirror until cancelled; a failing card never ends the task."""
        while True:
            with_open = time.monotonic() - self._open_done_at >= self.open_every_s
            await asyncio.to_thread(self.sync_once, with_open=with_open)
            await asyncio.sleep(self.sealed_every_s)

    # -- one pass (blocking) ------------------------------------------------------------------

    def sync_once(self, *, with_open: bool = True) -> MirrorPass:
        done = MirrorPass()
        if not self.card.is_dir():
            self._trouble(MirrorState.MISSING, f"{self.card}: card mirror path missing")
            return done
        try:
            # First the stream folders, both made before either is synced: a card pulled at any
            # moment after is a dump (empty). Synced one by one, a pull during the first sync
            # (milliseconds on a busy card) left `devices/` alone: a dump whose journal is lost.
            made = [*self._make_parents(self.card / "devices"),
                    *self._make_parents(self.card / "journal")]
            for folder in made:
                fsync_dir(folder.parent)
            for rel in self._snapshot_files():
                self._copy_if_absent(rel, done)
            for folder in self._stream_folders():
                self._mirror_stream(folder, with_open, done)
            self._retain(done)
        except OSError as err:
            full = err.errno in (errno.ENOSPC, errno.EDQUOT)
            self._trouble(MirrorState.FULL if full else MirrorState.FAILING,
                          f"{self.card}: card mirror {'full' if full else 'failing'} ({err})")
            return done
        if with_open:
            self._open_done_at = time.monotonic()
        if self.state is not MirrorState.OK:
            log.warning("%s: card mirror caught up", self.card)
        self.state = MirrorState.OK
        self.last_error = None
        return done

    def _trouble(self, state: MirrorState, message: str) -> None:
        self.state = state
        self.last_error = message
        now = time.monotonic()
        if now - self._last_warning >= WARNING_INTERVAL_S:
            self._last_warning = now
            log.warning("%s; acquisition and delivery go on, the mirror catches up later",
                        message)

    def _snapshot_files(self) -> list[Path]:
        out: list[Path] = []
        for sub in ("defs", "config"):
            base = self.store / sub
            if base.is_dir():
                out.extend(p.relative_to(self.store) for p in sorted(base.rglob("*"))
                           if p.is_file() and not p.name.startswith("."))
        return out

    def _stream_folders(self) -> list[Path]:
        folders = [Path("journal")] if (self.store / "journal").is_dir() else []
        devices = self.store / "devices"
        if devices.is_dir():
            folders.extend(Path("devices") / p.name for p in sorted(devices.iterdir())
                           if p.is_dir())
        return folders

    def _mirror_stream(self, folder: Path, with_open: bool, done: MirrorPass) -> None:
        segments: dict[int, dict[str, Path]] = {}
        for entry in sorted((self.store / folder).iterdir()):
            m = _SEGMENT.match(entry.name)
            if m is not None:
                segments.setdefault(int(m.group(1)), {})[m.group(2)] = entry
        order = sorted(segments)
        for k, seq0 in enumerate(order):
            kinds = segments[seq0]
            last = k == len(order) - 1
            if "arrow" in kinds:
                self._copy_if_absent(folder / kinds["arrow"].name, done)
                stale = self.card / folder / f"{seq0}.arrows"
                if stale.exists():
                    # The compacted file is on the card: its stream form is not needed.
                    stale.unlink()
                    fsync_dir(stale.parent)
                    done.removed.append(stale)
            elif not last or with_open:
                # A sealed stream segment at every pass; the open one at its interval only.
                self._copy_if_changed(folder / kinds["arrows"].name, done)

    def _copy_if_absent(self, rel: Path, done: MirrorPass) -> None:
        target = self.card / rel
        if target.exists():
            return
        self._copy(rel, done)

    def _copy_if_changed(self, rel: Path, done: MirrorPass) -> None:
        target = self.card / rel
        try:
            size = (self.store / rel).stat().st_size
        except FileNotFoundError:
            return
        if target.exists() and target.stat().st_size == size:
            return
        self._copy(rel, done)

    def _copy(self, rel: Path, done: MirrorPass) -> None:
        try:
            data = (self.store / rel).read_bytes()
        except FileNotFoundError:
            return  # compacted or deleted by the store meanwhile: the next pass sees the result
        if not data:
            # A segment created a moment ago, its header not yet written: nothing to keep, and
            # on the card an empty segment reads as a power cut's.
            return
        target = self.card / rel
        created = self._make_parents(target.parent)
        write_file_durably(target, data, tmp=target.with_name(f".{target.name}.tmp"))
        for folder in created:
            fsync_dir(folder.parent)
        done.copied.append(target)

    def _make_parents(self, folder: Path) -> list[Path]:
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for path in reversed(missing):
            path.mkdir()
        return list(reversed(missing))

    # -- retention ----------------------------------------------------------------------------

    def _free_fraction(self) -> float:
        usage = shutil.disk_usage(self.card)
        return usage.free / usage.total if usage.total else 1.0

    def _retain(self, done: MirrorPass) -> None:
        if self._free_fraction() >= self.min_free:
            return
        # Oldest first: segments the store no longer holds, by their newest write.
        gone = []
        for folder in self._card_stream_folders():
            for path in folder.iterdir():
                if _SEGMENT.match(path.name) and not (self.store / path.relative_to(
                        self.card)).exists():
                    gone.append((path.stat().st_mtime_ns, path))
        for _, path in sorted(gone):
            if self._free_fraction() >= self.min_free:
                break
            path.unlink()
            fsync_dir(path.parent)
            done.removed.append(path)
            log.warning("%s: removed from the card mirror (card under %d %% free)", path,
                        round(self.min_free * 100))

    def _card_stream_folders(self) -> list[Path]:
        out = [self.card / "journal"] if (self.card / "journal").is_dir() else []
        devices = self.card / "devices"
        if devices.is_dir():
            out.extend(p for p in sorted(devices.iterdir()) if p.is_dir())
        return out


def mirror_state_body(mirror: CardMirror) -> dict[str, str | None]:
    """The `sd` entry of the status (docs/behaviour.md §12)."""
    return {"state": mirror.state.value, "path": str(mirror.card), "error": mirror.last_error}

