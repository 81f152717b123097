"""Sequence numbers are never given twice (docs/spec-notes.md, *Sequence numbers never given
again*): delivery cursors are watermarks of seq numbers, so a number given again to a new record
after recovery makes that record look delivered already, and it is never sent.

Each test damages real files between opens (a flipped byte, a zeroed file) the way flash rots or a
power cut leaves them, possibly twice, and checks that the next append gets a number above every
number given before, that nothing damaged is read as data and that every record still intact is
read back."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import traceback
from pathlib import Path

import pyarrow.compute as pc
import pytest
from records_util import T0, record, records
from test_crash import DEVICES, VARS, _forked_child, _read_acks

from store import RECORDS_SCHEMA, Log, ReportKind, StoreOptions
from store._segment import parse_name, scan_stream

OPTIONS = StoreOptions(flush_s=0.01)
ROUNDS = 40


def frames_of(path: Path) -> list[tuple[int, int, int, int]]:
    """(start, end, seq_first, seq_last) of each trusted batch of a stream segment."""
    scan = scan_stream(path.read_bytes(), RECORDS_SCHEMA)
    return [(f.start, f.end, f.seq_first, f.seq_last) for f in scan.batches]


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


async def append(root: Path, count: int, first_s: int, options: StoreOptions = OPTIONS
                 ) -> list[int]:
    """`count` appends of one record each, one commit each; their seq numbers."""
    async with await Log.open(root, options) as log:
        return [(await log.append_records("1", records([T0 + (first_s + i) * 10**9],
                                                       n_vars=3))).first
                for i in range(count)]


def seqs_read(root: Path) -> list[int]:
    log = Log.open_read_only(root)
    table = log.records("1")
    return sorted(set(pc.unique(table.column("seq")).to_pylist()))


async def test_a_rotten_last_batch_of_a_cleanly_closed_store_gives_no_number_again(
        tmp_path: Path) -> None:
    given = await append(tmp_path, 5, 0)
    assert given == [1, 2, 3, 4, 5]
    seg = tmp_path / "devices" / "1" / "1.arrows"
    start, end, _, last = frames_of(seg)[-1]
    assert last == 5
    flip(seg, (start + end) // 2)   # acknowledged, fsynced, closed cleanly: rot, not a torn write
    assert await append(tmp_path, 1, 10) == [6]
    assert seqs_read(tmp_path) == [1, 2, 3, 4, 6]


async def test_damage_then_a_rotten_tail_of_the_same_segment_gives_no_number_again(
        tmp_path: Path) -> None:
    # The first damage (batch 3, trusted batches after it) closes the segment; the second, in its
    # last batch, used to be taken for a torn tail: cut, and seq 6 given to the next record.
    assert await append(tmp_path, 6, 0) == [1, 2, 3, 4, 5, 6]
    seg = tmp_path / "devices" / "1" / "1.arrows"
    frames = frames_of(seg)
    flip(seg, (frames[2][0] + frames[2][1]) // 2)
    async with await Log.open(tmp_path, OPTIONS) as log:
        assert [r.kind for r in log.reports] == [ReportKind.DAMAGE]
    flip(seg, (frames[5][0] + frames[5][1]) // 2)
    assert await append(tmp_path, 2, 10) == [7, 8]
    assert seqs_read(tmp_path) == [1, 2, 4, 5, 7, 8]


async def test_the_last_two_files_damaged_give_no_number_again(tmp_path: Path) -> None:
    # Segments sealed small: the last sealed one loses its last batch to rot, and the live one
    # after it is zeroed whole (a power cut on a file whose blocks were never written back).
    options = StoreOptions(flush_s=0.01, compact_sealed=False, seal_bytes=4096)
    given = await append(tmp_path, 40, 0, options)
    segments = sorted((tmp_path / "devices" / "1").glob("*.arrows"), key=lambda p: int(p.stem))
    assert len(segments) >= 3
    sealed, live = segments[-2], segments[-1]
    start, end, _, _ = frames_of(sealed)[-1]
    flip(sealed, (start + end) // 2)
    live.write_bytes(bytes(live.stat().st_size))
    got = await append(tmp_path, 1, 100, options)
    assert got[0] > given[-1]
    kept = seqs_read(tmp_path)
    assert got[0] in kept and set(kept) - {got[0]} <= set(given)


async def test_numbers_replayed_from_the_commit_log_are_saved_before_it_is_emptied(
        tmp_path: Path) -> None:
    # A writer killed after its appends were acknowledged: their frames are in the commit log
    # only. The next open replays them and empties the log; their numbers must be in `seqs` by
    # then, even when that writer appends nothing and closes cleanly, for the rot of the last
    # batch afterwards not to give seq 5 again.
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            async def killed_writer() -> None:
                log = await Log.open(tmp_path, OPTIONS)
                for i in range(5):
                    await log.append_records("1", records([T0 + i * 10**9], n_vars=3))
                os.kill(os.getpid(), signal.SIGKILL)

            asyncio.run(killed_writer())
        except BaseException:  # noqa: BLE001  (the child's top level: never into pytest)
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    assert (tmp_path / "wal").stat().st_size > 0
    async with await Log.open(tmp_path, OPTIONS) as log:
        assert log.watermark().devices["1"] == 5
    seg = tmp_path / "devices" / "1" / "1.arrows"
    start, end, _, last = frames_of(seg)[-1]
    assert last == 5
    flip(seg, (start + end) // 2)
    assert await append(tmp_path, 1, 10) == [6]


def _damage(rng: random.Random, root: Path) -> str:
    """Rot or cut one of the last two files of a device at a random place; the device's name."""
    device = rng.choice(DEVICES)
    files = sorted((p for p in (root / "devices" / device).glob("*.arrow*")
                    if parse_name(p.name) is not None), key=lambda p: int(p.name.split(".")[0]))
    if not files:
        return ""
    path = rng.choice(files[-2:])
    data = bytearray(path.read_bytes())
    if len(data) < 16:
        return ""
    at = rng.randrange(len(data) // 2, len(data))
    mode = rng.choice(["flip", "truncate", "zero_tail"])
    if mode == "flip":
        data[at] ^= 1 << rng.randrange(8)
    elif mode == "truncate":
        del data[at:]
    else:
        data[at:] = bytes(len(data) - at)
    path.write_bytes(bytes(data))
    return device


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 3])
def test_kills_and_damage_between_them_never_give_a_number_twice(tmp_path: Path,
                                                                 seed: int) -> None:
    # A writer process appends from 16 tasks and is killed with SIGKILL at a random moment; then,
    # one round in two, a byte of one of a device's last two files flips, or the file is cut or
    # zeroed from a random place on (flash that rotted, a card that lost its last blocks), and
    # the next writer opens the store. No acknowledged seq number is ever acknowledged again;
    # every record read holds the values of the append acknowledged with its number (nothing
    # damaged read as data); every record acknowledged since its device's last damage is read.
    # (Seeds 1 and 3 gave a number twice before the `seqs` file: a cut past what the commit log
    # could put back, or a rotten last batch written before the last checkpoint.)
    rng = random.Random(seed)
    acked: dict[tuple[str, int], tuple[int, int]] = {}   # (device, seq) -> (ident, generation)
    damaged_at: dict[str, int] = {}
    record(T0, VARS)
    for generation in range(ROUNDS):
        read_fd, pid = _forked_child(tmp_path, generation, rng.randrange(1 << 30))
        time.sleep(rng.uniform(0.1, 0.4))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status), f"child {generation} ended by itself ({status})"
        for device, first, last, ident in _read_acks(read_fd):
            for seq in range(first, last + 1):
                assert (device, seq) not in acked, f"{device} seq {seq} acknowledged twice"
                acked[(device, seq)] = (ident, generation)
        os.close(read_fd)
        log = Log.open_read_only(tmp_path)
        for device in log.devices():
            table = log.records(device)
            by_seq: dict[int, list[float]] = {}
            for seq, value in zip(table.column("seq").to_pylist(),
                                  table.column("value").to_pylist(), strict=True):
                by_seq.setdefault(seq, []).append(value)
            for seq, vals in by_seq.items():
                assert vals == [vals[0] + i for i in range(VARS)], (device, seq, vals)
                if (device, seq) in acked:
                    assert vals[0] == acked[(device, seq)][0], (device, seq, "not its append")
            for (dev, seq), (_, made) in acked.items():
                if dev == device and made > damaged_at.get(device, -1):
                    assert seq in by_seq, (device, seq, "acknowledged, lost")
        if rng.random() < 0.5:
            device = _damage(rng, tmp_path)
            if device:
                damaged_at[device] = generation
    assert len(acked) > 20 * ROUNDS and damaged_at, (len(acked), damaged_at)
