"""Power-loss states of a store, built from its recorded file operations (ALICE / CrashMonkey).

A SIGKILL keeps the page cache, so it cannot tell whether fsync is called at all. Here the store
runs on a real directory with `fsio` routed through `Recorder`, which logs every file
operation (create, write, truncate, rename, unlink, mkdir, fsync of a file, fsync of a directory)
and the workload's acknowledgements in one ordered trace. A crash state is the trace cut at some
point and replayed onto an empty directory the way a disk may have kept it:

- an operation on a file before that file's last fsync (before the cut) is kept;
- a later write may be lost, kept whole, torn at 512-byte or 4 KiB granularity (any subset of its
  sectors, the others left as they were or as zeros past the old end), or leave only zeros (the
  size reached the disk, the data did not); a later truncate may or may not have happened;
- an entry operation (create, rename, unlink, mkdir) after its directory's last fsync may or may
  not have happened, independently of the others (a rename of a file whose creation was lost
  does not happen).

The harness knows files and directories only, not the store's layout: it stays valid when the
commit path changes (other file names, a shared write-ahead file, compressed segments). Removing an
fsync from the store is simulated exactly by deleting that call site's fsyncs from the trace (an
fsync has no other visible effect on a running system): `Trace.without_site`.

Run more states than the test suite does (nightly):

    python tests/test_store/powerloss.py --states 50000 [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyarrow as pa
from records_util import T0, record

import fsio
from fsio import FileOps
from store import Log, StoreOptions

SECTORS = (512, 4096)
#: Frames that are no fsync site of their own: the durable-write helpers and this recorder.
_NOT_SITES = (os.path.join("fsio", "__init__.py"), "powerloss.py")


@dataclass(frozen=True, slots=True)
class Op:
    """One recorded operation. `kind`: create, write, truncate, fsync, rename, unlink, mkdir,
    fsync_dir, or mark (a workload event: acknowledgement, delivery)."""

    kind: str
    ino: int = 0
    dir: str = ""  # entry operations: the directory (relative to the store root, "" = root)
    name: str = ""
    dst_dir: str = ""  # rename
    dst_name: str = ""
    offset: int = 0
    data: bytes = b""
    length: int = 0  # truncate
    site: str = ""  # fsync and fsync_dir: the store's calling function and line
    mark: tuple[object, ...] = ()


_DIR = -1  # a directory entry's "inode" in the model


class Recorder(FileOps):
    """Performs the store's file operations for real and records them (thread-safe)."""

    def __init__(self, root: Path, *, existing: bool = False) -> None:
        """`existing`: what `root` already holds is recorded first, as durable (to record a
        run that starts from a crash state, such as a recovery)."""
        self.root = root.resolve()
        self.ops: list[Op] = []
        self._lock = threading.Lock()
        self._fds: dict[int, int] = {}
        # File ids, not inode numbers: a deleted file's inode number is reused by a later file,
        # and the model must not confuse the two (a lost unlink would show the new content).
        self._ids: dict[int, int] = {}
        self._next_id = 0

        if existing:
            self._record_existing()
        self.start = len(self.ops)  # where the run proper begins (a crash can come after)

    def _id(self, ino: int, *, new: bool = False) -> int:
        with self._lock:
            if new or ino not in self._ids:
                self._next_id += 1
                self._ids[ino] = self._next_id
            return self._ids[ino]

    def _record_existing(self) -> None:
        dirs: list[str] = []
        for path in sorted(self.root.rglob("*"), key=lambda p: (len(p.parts), p.name)):
            d, n = self._rel(path)
            if path.is_dir():
                self._add(Op("mkdir", dir=d, name=n))
                dirs.append(path.relative_to(self.root).as_posix())
            elif path.is_file():
                ino = self._id(path.stat().st_ino, new=True)
                self._add(Op("create", ino=ino, dir=d, name=n))
                self._add(Op("write", ino=ino, offset=0, data=path.read_bytes()))
                self._add(Op("fsync", ino=ino))  # no site: not the store's
        for d in ["", *dirs]:
            self._add(Op("fsync_dir", dir=d))

    def _rel(self, path: Path) -> tuple[str, str]:
        full = Path(os.path.abspath(path))
        parent = full.parent.relative_to(self.root).as_posix()
        return ("" if parent == "." else parent), full.name

    def _add(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)

    def mark(self, *event: object) -> None:
        self._add(Op("mark", mark=event))

    @staticmethod
    def _site() -> str:
        frame = sys._getframe(2)
        while frame.f_code.co_filename.endswith(_NOT_SITES):
            assert frame.f_back is not None
            frame = frame.f_back
        return f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}:{frame.f_lineno}"

    def open_new(self, path: Path, *, exclusive: bool) -> int:
        existed = os.path.exists(path)
        fd = super().open_new(path, exclusive=exclusive)
        ino = self._id(os.fstat(fd).st_ino, new=not existed)
        self._fds[fd] = ino
        if existed:
            self._add(Op("truncate", ino=ino, length=0))
        else:
            d, n = self._rel(path)
            self._add(Op("create", ino=ino, dir=d, name=n))
        return fd

    def open_append(self, path: Path) -> int:
        fd = super().open_append(path)
        self._fds[fd] = self._id(os.fstat(fd).st_ino)
        return fd

    def pwrite(self, fd: int, data: memoryview, offset: int) -> int:
        n = super().pwrite(fd, data, offset)
        self._add(Op("write", ino=self._fds[fd], offset=offset, data=bytes(data[:n])))
        return n

    def ftruncate(self, fd: int, length: int) -> None:
        super().ftruncate(fd, length)
        self._add(Op("truncate", ino=self._fds[fd], length=length))

    def truncate(self, path: Path, length: int) -> None:
        ino = self._id(os.stat(path).st_ino)
        super().truncate(path, length)
        self._add(Op("truncate", ino=ino, length=length))

    def fsync(self, fd: int) -> None:
        super().fsync(fd)
        self._add(Op("fsync", ino=self._fds[fd], site=self._site()))

    def close(self, fd: int) -> None:
        self._fds.pop(fd, None)
        super().close(fd)

    def rename(self, src: Path, dst: Path) -> None:
        if os.path.isdir(src):
            raise NotImplementedError("the power-loss model does not rename directories")
        ino = self._id(os.stat(src).st_ino)
        super().rename(src, dst)
        d, n = self._rel(src)
        dd, dn = self._rel(dst)
        self._add(Op("rename", ino=ino, dir=d, name=n, dst_dir=dd, dst_name=dn))

    def unlink(self, path: Path) -> None:
        super().unlink(path)
        d, n = self._rel(path)
        self._add(Op("unlink", dir=d, name=n))

    def mkdir(self, path: Path) -> None:
        super().mkdir(path)
        d, n = self._rel(path)
        self._add(Op("mkdir", dir=d, name=n))

    def fsync_dir(self, path: Path) -> None:
        super().fsync_dir(path)
        rel = Path(os.path.abspath(path)).relative_to(self.root).as_posix()
        self._add(Op("fsync_dir", dir="" if rel == "." else rel, site=self._site()))


@dataclass(slots=True)
class Trace:
    ops: list[Op]

    def sites(self) -> dict[str, str]:
        """Each fsync call site of the store, named `<file>:<function>#<n>` (n: its rank by line
        within that function, so names survive edits elsewhere) -> "file" or "directory"."""
        labels = self._labels()
        return {labels[op.site]: ("file" if op.kind == "fsync" else "directory")
                for op in self.ops if op.kind in ("fsync", "fsync_dir") and op.site}

    def _labels(self) -> dict[str, str]:
        lines: dict[str, set[int]] = {}
        for op in self.ops:
            if op.site:
                where, line = op.site.rsplit(":", 1)
                lines.setdefault(where, set()).add(int(line))
        return {f"{where}:{line}": f"{where}#{rank}" for where, found in lines.items()
                for rank, line in enumerate(sorted(found))}

    def without_site(self, label: str) -> Trace:
        """The trace of the same run had the store not called fsync at the site `label`."""
        sites = {site for site, name in self._labels().items() if name == label}
        if not sites:
            raise KeyError(f"no fsync at {label} in this trace")
        return Trace([op for op in self.ops
                      if not (op.kind in ("fsync", "fsync_dir") and op.site in sites)])

    def marks(self, upto: int) -> Iterator[tuple[object, ...]]:
        for op in self.ops[:upto]:
            if op.kind == "mark":
                yield op.mark


@dataclass(slots=True)
class Image:
    """What a crash left: directories (relative paths) and files (relative path -> bytes)."""

    dirs: set[str] = field(default_factory=set)
    files: dict[str, bytes] = field(default_factory=dict)

    def materialise(self, root: Path) -> None:
        root.mkdir(parents=True)
        for d in sorted(self.dirs, key=lambda p: p.count("/")):
            if d:
                (root / d).mkdir()
        for rel, data in self.files.items():
            (root / rel).write_bytes(data)


def crash_image(trace: Trace, cut: int, rng: random.Random | None) -> Image:
    """The disk after a power cut once `trace.ops[:cut]` were issued.

    `rng` None: every operation not made durable is lost (the smallest state); otherwise each
    one's fate is drawn (see the module's docstring).
    """
    ops = trace.ops[:cut]
    last_file_sync: dict[int, int] = {}
    last_dir_sync: dict[str, int] = {}
    for i, op in enumerate(ops):
        if op.kind == "fsync":
            last_file_sync[op.ino] = i
        elif op.kind == "fsync_dir":
            last_dir_sync[op.dir] = i
    content: dict[int, bytearray] = {}
    entries: dict[str, dict[str, int]] = {"": {}}

    def durable_entry(i: int, directory: str) -> bool:
        return i < last_dir_sync.get(directory, -1)

    def keep(i: int, durable: bool) -> bool:
        return durable or (rng is not None and rng.random() < 0.5)

    for i, op in enumerate(ops):
        if op.kind == "create":
            content[op.ino] = bytearray()
            if op.dir in entries and keep(i, durable_entry(i, op.dir)):
                entries[op.dir][op.name] = op.ino
        elif op.kind == "mkdir":
            if op.dir in entries and keep(i, durable_entry(i, op.dir)):
                entries[op.dir][op.name] = _DIR
                entries.setdefault(f"{op.dir}/{op.name}" if op.dir else op.name, {})
        elif op.kind == "rename":
            durable = durable_entry(i, op.dir) and durable_entry(i, op.dst_dir)
            src = entries.get(op.dir, {})
            if src.get(op.name) == op.ino and op.dst_dir in entries and keep(i, durable):
                del src[op.name]
                entries[op.dst_dir][op.dst_name] = op.ino
        elif op.kind == "unlink":
            if op.dir in entries and op.name in entries[op.dir] and keep(
                    i, durable_entry(i, op.dir)):
                del entries[op.dir][op.name]
        elif op.kind == "write":
            data = content.setdefault(op.ino, bytearray())
            if i < last_file_sync.get(op.ino, -1):
                _put(data, op.offset, op.data)
            elif rng is not None:
                _volatile_write(rng, data, op)
        elif op.kind == "truncate":
            data = content.setdefault(op.ino, bytearray())
            if keep(i, i < last_file_sync.get(op.ino, -1)):
                if op.length < len(data):
                    del data[op.length:]
                else:
                    data.extend(bytes(op.length - len(data)))
    image = Image()

    def walk(directory: str) -> None:
        image.dirs.add(directory)
        for name, ino in entries.get(directory, {}).items():
            rel = f"{directory}/{name}" if directory else name
            if ino == _DIR:
                walk(rel)
            else:
                image.files[rel] = bytes(content.get(ino, b""))

    walk("")
    return image


def _put(data: bytearray, offset: int, chunk: bytes) -> None:
    if offset > len(data):
        data.extend(bytes(offset - len(data)))
    data[offset : offset + len(chunk)] = chunk


def _volatile_write(rng: random.Random, data: bytearray, op: Op) -> None:
    fate = rng.choice(("lost", "whole", "torn", "torn", "zeros"))
    end = op.offset + len(op.data)
    if fate == "lost":
        return
    if fate == "whole":
        _put(data, op.offset, op.data)
        return
    if fate == "zeros":
        if end > len(data):
            data.extend(bytes(end - len(data)))
        return
    sector = rng.choice(SECTORS)
    first = op.offset // sector
    last = (end - 1) // sector
    pieces = list(range(first, last + 1))
    if rng.random() < 0.5:
        kept = pieces[: rng.randrange(len(pieces) + 1)]  # a prefix (in-order writeback)
    else:
        kept = [p for p in pieces if rng.random() < 0.5]  # any subset
    for p in kept:
        lo = max(op.offset, p * sector)
        hi = min(end, (p + 1) * sector)
        _put(data, lo, op.data[lo - op.offset : hi - op.offset])


# -- the workload and its checks ----------------------------------------------------------------

VARS = 3
DEVICES = ("1", "2", "3")


def _value(ident: int, var: int) -> float:
    return float(ident * 1000 + var - 1)


def workload_options() -> StoreOptions:
    # Small segments and quota: seals, compactions and quota deletions within a few hundred
    # commits; journal quota high (its deletion needs state events, not exercised here). A
    # small commit log, checkpointed every few dozen commits; frames of one record (~1.1 kB)
    # go through it, frames of several records straight to their segment with an fsync.
    return StoreOptions(flush_s=0.001, seal_bytes=5000, device_quota_bytes=24_000,
                        journal_quota_bytes=1 << 30, compact_sealed=True,
                        wal_checkpoint_bytes=30_000, wal_direct_frame_bytes=1400)


def record_workload(root: Path, seed: int, appends: int = 150) -> Trace:
    """Run appends (records of three devices, journal events), seals, compactions and quota
    deletions of delivered segments on `root`, recorded; returns the trace."""
    root.mkdir()  # STORE_Path exists (made durable by whoever created it)
    recorder = Recorder(root)
    rng = random.Random(seed)
    delivered: dict[str, int] = {}

    async def run() -> None:
        log = await Log.open(root, workload_options())
        log.set_delivery_predicates(lambda dev, seq_last, _ts: seq_last <= delivered.get(dev, 0))
        pending: list[asyncio.Future[object]] = []

        async def one(ident: int) -> None:
            if rng.random() < 0.15:
                seq = await log.append_journal("log", {"i": ident}, commit_now=True)
                recorder.mark("journal", seq, ident)
                return
            device = rng.choice(DEVICES)
            ts = T0 + ident * 10**9
            got = await log.append_records(device, record(ts, VARS, _value(ident, 1)),
                                           commit_now=rng.random() < 0.3)
            if not got.dropped:
                recorder.mark("ack", device, got.first, ident)

        for ident in range(1, appends + 1):
            pending.append(asyncio.ensure_future(one(ident)))
            if rng.random() < 0.4:
                await asyncio.gather(*pending)
                pending.clear()
            if rng.random() < 0.05:
                device = rng.choice(DEVICES)
                upto = log.watermark().devices.get(device, 0) - rng.randint(0, 10)
                if upto > delivered.get(device, 0):
                    # Marked before the store may act on it: records up to `upto` may go.
                    recorder.mark("delivered", device, upto)
                    delivered[device] = upto
        await asyncio.gather(*pending)
        await log.close()

    with fsio.install(recorder):
        asyncio.run(run())
    return Trace(recorder.ops)


@dataclass(slots=True)
class Expect:
    acked: dict[tuple[str, int], int]  # (device, seq) -> ident
    journal: dict[int, int]  # seq -> ident
    delivered: dict[str, int]


def expectations(trace: Trace, cut: int) -> Expect:
    want = Expect({}, {}, {})
    for mark in trace.marks(cut):
        if mark[0] == "ack":
            _, device, seq, ident = mark
            want.acked[(str(device), int(seq))] = int(ident)  # type: ignore[call-overload]
        elif mark[0] == "journal":
            want.journal[int(mark[1])] = int(mark[2])  # type: ignore[call-overload]
        else:
            want.delivered[str(mark[1])] = int(mark[2])  # type: ignore[call-overload]
    return want


class CrashCheckError(AssertionError):
    pass


def check_log(log: Log, want: Expect, where: str) -> None:
    """Every acknowledged record present once with its content (unless delivered, and so
    allowed to be deleted by the quota); every row read is one that was written."""
    for device in DEVICES:
        table = log.records(device)
        got: dict[int, dict[int, float]] = {}
        for seq, var, value in zip(table.column("seq").to_pylist(),
                                   table.column("var").to_pylist(),
                                   table.column("value").to_pylist(), strict=True):
            ident = int(value) // 1000
            if value != _value(ident, var):
                raise CrashCheckError(f"{where}: device {device} seq {seq}: value {value} "
                                      f"was never written for var {var}")
            rows = got.setdefault(seq, {})
            if var in rows:
                raise CrashCheckError(f"{where}: device {device} seq {seq} var {var} twice")
            rows[var] = value
            acked = want.acked.get((device, seq))
            if acked is not None and acked != ident:
                raise CrashCheckError(f"{where}: device {device} seq {seq} holds append "
                                      f"{ident}, acknowledged as {acked}")
        for seq, rows in got.items():
            if len(rows) != VARS:
                raise CrashCheckError(f"{where}: device {device} seq {seq} partly read")
        idents = [int(next(iter(rows.values()))) // 1000 for rows in got.values()]
        if len(set(idents)) != len(idents):
            raise CrashCheckError(f"{where}: device {device}: an append read twice")
        gone = want.delivered.get(device, 0)
        for (dev, seq), ident in want.acked.items():
            if dev == device and seq > gone and seq not in got:
                raise CrashCheckError(f"{where}: device {device}: acknowledged seq {seq} "
                                      f"(append {ident}) lost")
    journal = log.journal(kinds=["log"])
    seen: dict[int, int] = {}
    for seq, body in zip(journal.column("seq").to_pylist(), journal.column("body").to_pylist(),
                         strict=True):
        import json

        ident = int(json.loads(body)["i"])
        if seq in seen or ident in seen.values():
            raise CrashCheckError(f"{where}: journal seq {seq} or event {ident} twice")
        seen[seq] = ident
        if seq in want.journal and want.journal[seq] != ident:
            raise CrashCheckError(f"{where}: journal seq {seq} holds {ident}, acknowledged "
                                  f"as {want.journal[seq]}")
    for seq, ident in want.journal.items():
        if seen.get(seq) != ident:
            raise CrashCheckError(f"{where}: acknowledged journal event {ident} (seq {seq}) lost")


def check_image(image: Image, want: Expect, scratch: Path, *, writer: bool,
                loop: asyncio.AbstractEventLoop, nested: random.Random | None = None,
                nested_states: int = 0) -> None:
    """Open the crash state read-only (and, with `writer`, read-write, append, reopen) and
    check it each time. With `nested_states`, the writer's open (its recovery: cut torn tails,
    journaled reports) and append are recorded too, and that many crash states of it checked:
    a power cut during recovery must not lose what the first one kept."""
    shutil.rmtree(scratch, ignore_errors=True)
    image.materialise(scratch)
    store = scratch
    check_log(Log.open_read_only(store), want, "read-only open")
    if not writer:
        return
    recorder = Recorder(store, existing=True) if nested_states else None
    before = Expect(dict(want.acked), dict(want.journal), dict(want.delivered))

    async def reopen() -> None:
        async with await Log.open(store, workload_options()) as log:
            log.set_delivery_predicates(
                lambda dev, seq_last, _ts: seq_last <= want.delivered.get(dev, 0))
            await asyncio.to_thread(check_log, log, want, "read-write open")
            got = await log.append_records("1", record(T0 + 10**15, VARS, _value(999_999, 1)))
            if not got.dropped:
                want.acked[("1", got.first)] = 999_999
                if recorder is not None:
                    recorder.mark("ack", "1", got.first, 999_999)

    if recorder is None:
        loop.run_until_complete(reopen())
    else:
        with fsio.install(recorder):
            loop.run_until_complete(reopen())
    check_log(Log.open_read_only(store), want, "read-only open after a writer's")
    if recorder is None:
        return
    trace = Trace(recorder.ops)
    rng = nested or random.Random(0)
    for _ in range(nested_states):
        cut = rng.randrange(recorder.start, len(trace.ops) + 1)
        fates = random.Random(rng.getrandbits(64)) if rng.random() < 0.7 else None
        again = expectations(trace, cut)
        merged = Expect({**before.acked, **again.acked}, before.journal, before.delivered)
        inner = scratch.with_name(scratch.name + "-recovery")
        shutil.rmtree(inner, ignore_errors=True)
        crash_image(trace, cut, fates).materialise(inner)
        check_log(Log.open_read_only(inner), merged,
                  f"power cut during recovery (cut {cut} of {len(trace.ops)})")


@dataclass(slots=True)
class Outcome:
    states: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


def crash_states(trace: Trace, states: int, seed: int
                 ) -> Iterator[tuple[int, random.Random | None]]:
    """(cut, rng) pairs, alternating: the smallest state at every cut in a shuffled order, and
    random fates at random cuts (half of them just after an fsync or an entry operation, where
    reorderings of un-fsynced entries matter); random ones only once every cut was taken."""
    rng = random.Random(seed)
    n = len(trace.ops)
    cuts = list(range(n + 1))
    rng.shuffle(cuts)
    interesting = [i + 1 for i, op in enumerate(trace.ops)
                   if op.kind not in ("write", "mark")] or cuts
    for made in range(states):
        if made % 2 == 0 and cuts:
            yield cuts.pop(), None
            continue
        cut = rng.choice(interesting) if rng.random() < 0.5 else rng.randrange(n + 1)
        yield cut, random.Random(rng.getrandbits(64))


def run_states(trace: Trace, states: int, seed: int, *, writer_every: int = 8,
               stop_at_first: bool = False, time_budget_s: float | None = None,
               nested_states: int = 0) -> Outcome:
    """Check `states` crash states of `trace`; a read-write open every `writer_every`th,
    with `nested_states` crash states of that open's own recovery each."""
    import logging

    outcome = Outcome()
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="sunpm-powerloss-",
                                 dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    loop = asyncio.new_event_loop()
    logging.disable(logging.CRITICAL)  # thousands of expected torn-tail reports
    try:
        for k, (cut, rng) in enumerate(crash_states(trace, states, seed)):
            if time_budget_s is not None and time.monotonic() - started > time_budget_s:
                break
            want = expectations(trace, cut)
            image = crash_image(trace, cut, rng)
            try:
                check_image(image, want, base / "s", writer=k % writer_every == 0, loop=loop,
                            nested=random.Random(seed * 7919 + k), nested_states=nested_states)
            except CrashCheckError as err:
                outcome.failures.append(f"cut {cut} ({'random' if rng else 'smallest'}): {err}")
            except Exception as err:  # noqa: BLE001  (an open or read that raised fails too)
                outcome.failures.append(f"cut {cut}: {type(err).__name__}: {err} "
                                        f"{traceback.format_exc(limit=3)}")
            outcome.states += 1
            if stop_at_first and outcome.failures:
                break
    finally:
        logging.disable(logging.NOTSET)
        loop.close()
        shutil.rmtree(base, ignore_errors=True)
    outcome.seconds = time.monotonic() - started
    return outcome


def record_trace(seed: int, appends: int = 150) -> Trace:
    with tempfile.TemporaryDirectory(prefix="sunpm-powerloss-run-") as tmp:
        return record_workload(Path(tmp) / "store", seed, appends)


def main(argv: list[str] | None = None,
         out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description="Power-loss crash states of the store.")
    parser.add_argument("--states", type=int, default=20_000, help="crash states to check")
    parser.add_argument("--seed", type=int, default=1, help="first workload seed")
    parser.add_argument("--runs", type=int, default=4, help="recorded workloads (seeds)")
    parser.add_argument("--appends", type=int, default=300, help="appends per workload")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.CRITICAL)  # the workload's expected quota reports
    failures = 0
    for run in range(args.runs):
        trace = record_trace(args.seed + run, args.appends)
        result = run_states(trace, args.states // args.runs, args.seed + run, nested_states=4)
        failures += len(result.failures)
        out(f"seed {args.seed + run}: {len(trace.ops)} operations, {result.states} crash states "
            f"in {result.seconds:.1f} s, {len(result.failures)} failures")
        for failure in result.failures[:5]:
            out(f"  {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    pa.set_cpu_count(1)
    sys.exit(main())
