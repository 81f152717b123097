"""Opening a store of 50 MB for each of 100 devices, recovery included (docs/architecture.md §7).

The store is laid out as a live gateway leaves it: per device, sealed 4 MiB segments and one open
segment, each batch one record of 100 variables (one commit at a 10 s period); one device in ten
has a torn tail (zeros, as flash holds after a power cut) that the open must find and cut.
Ours: `Log.open` (checks only each stream's last segment: every commit is fsynced before the
next, so a torn write can only be there). Baseline: the same store checked batch by batch in every
segment (what an open without that invariant, or `fsck`, does).

    python benchmarks/store_open.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _memory import PeakRss
from _records import T0, records_batch, verification_cost
from _report import emit, figure_line

from store import RECORDS_SCHEMA, Log, StoreOptions
from store._ipc import EOS, frame_batch, schema_message
from store._segment import scan_stream


def _record(seq: int, ts: int, variables: int) -> pa.RecordBatch:
    return records_batch([ts] * variables, [seq] * variables, range(1, variables + 1),
                         [float(seq + i) for i in range(variables)])


def build_device(directory: Path, device_bytes: int, seal_bytes: int, variables: int) -> None:
    """One device's segments, written as the writer frames them (without the fsyncs)."""
    directory.mkdir(parents=True)
    header = schema_message(RECORDS_SCHEMA)
    seq = 1
    segments = -(-device_bytes // seal_bytes)  # all full: the open segment too (worst case)
    for k in range(segments):
        seg = bytearray(header)
        seq0 = seq
        while True:
            ts = T0 + seq * 10 * 10**9
            frame = frame_batch(RECORDS_SCHEMA, _record(seq, ts, variables), seq_first=seq,
                                seq_last=seq, ts_min=ts, ts_max=ts)
            if len(seg) + len(frame) > seal_bytes - len(EOS):
                break
            seg += frame
            seq += 1
        if k < segments - 1:
            seg += EOS
        (directory / f"{seq0}.arrows").write_bytes(bytes(seg))


def build_store(root: Path, devices: int, device_bytes: int, seal_bytes: int,
                variables: int) -> None:
    template = root / "template"
    build_device(template, device_bytes, seal_bytes, variables)
    names = sorted(template.iterdir(), key=lambda p: int(p.stem))
    for dev in range(1, devices + 1):
        target = root / "store" / "devices" / str(dev)
        target.mkdir(parents=True)
        for path in names[:-1]:
            os.link(path, target / path.name)  # sealed: never modified, share the bytes
        last = target / names[-1].name
        data = names[-1].read_bytes()
        if dev % 10 == 0:
            data += bytes(3000)  # torn tail
        last.write_bytes(data)
    shutil.rmtree(template)


def _reset_tails(root: Path, devices: int) -> None:
    """Put the torn tails back after an open cut them, so every run recovers the same work."""
    for dev in range(10, devices + 1, 10):
        directory = root / "store" / "devices" / str(dev)
        last = max(directory.iterdir(), key=lambda p: int(p.stem))
        with open(last, "ab") as fh:
            fh.write(bytes(3000))


async def _open(root: Path) -> tuple[float, int]:
    started = time.perf_counter()
    log = await Log.open(root / "store", StoreOptions())
    elapsed = time.perf_counter() - started
    torn = sum(1 for r in log.reports if r.kind.value == "torn_tail")
    await log.close()
    return elapsed, torn


def _full_check(root: Path) -> float:
    started = time.perf_counter()
    batches = 0
    for directory in sorted((root / "store" / "devices").iterdir()):
        for path in directory.iterdir():
            scan = scan_stream(path.read_bytes(), RECORDS_SCHEMA)
            batches += len(scan.batches)
    assert batches > 0
    return time.perf_counter() - started


def run(devices: int = 100, device_mb: float = 50.0, seal_bytes: int = 4 * 2**20,
        variables: int = 100, n: int = 3) -> dict[str, object]:
    """Ours and the baseline n times each, interleaved round by round (the box is shared)."""
    base = Path(tempfile.mkdtemp(prefix="sunpm-bench-open-"))
    mem_ours, mem_theirs = PeakRss(), PeakRss()
    try:
        build_store(base, devices, int(device_mb * 2**20), seal_bytes, variables)
        stored = sum(p.stat().st_size for p in (base / "store" / "devices").rglob("*.arrows"))
        ours_s: list[float] = []
        theirs_s: list[float] = []
        torn_cut: list[int] = []
        for _ in range(n):
            with mem_ours:
                elapsed, torn = asyncio.run(_open(base))
            ours_s.append(elapsed)
            torn_cut.append(torn)
            _reset_tails(base, devices)
            with mem_theirs:
                theirs_s.append(_full_check(base))
        # The open checks each device's last segment frame by frame, CRC-32C included.
        verify = verification_cost([max(d.iterdir(), key=lambda p: int(p.stem)) for d in
                                    (base / "store" / "devices").iterdir()])
        verify["verify_share"] = round(verify["verify_s"] / sorted(ours_s)[len(ours_s) // 2], 3)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return figure_line(
        "store_open",
        "same store, every batch of every segment checked (full scan)",
        "s", ours_s, theirs_s, peak_rss_mb=mem_ours.mb, theirs_peak_rss_mb=mem_theirs.mb,
        digits=3, speedup_digits=2,
        n=n,
        devices=devices,
        store_mb=round(stored / 2**20, 1),
        torn_tails_cut=torn_cut[0],
        page_cache="warm",
        target_s=5.0,
        **verify,
        ours_s=[round(x, 3) for x in ours_s],
        theirs_s=[round(x, 3) for x in theirs_s])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny size, for a smoke test")
    args = parser.parse_args()
    # The torn tails are planted on purpose; their WARNING lines would only hide the result.
    logging.getLogger("sunpm.store").setLevel(logging.ERROR)
    result = run(devices=10, device_mb=0.2, seal_bytes=64 * 1024, n=1) if args.quick else run()
    emit(result)


if __name__ == "__main__":
    main()
