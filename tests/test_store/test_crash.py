"""Crash safety: a writer process killed with SIGKILL at random moments, 200 times.

The child appends continuously from several tasks and reports each acknowledged append on a pipe
as soon as its awaitable completes. After every kill, the store must hold every acknowledged record
exactly once with gap-free sequence numbers, and the next child must open it and append again.
The child is forked from this process (no interpreter start-up per kill), so 200 kills fit in
well under a minute.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import traceback
from pathlib import Path

import pyarrow as pa
import pytest
from records_util import T0, record

from store import RECORDS_SCHEMA, Log, StoreOptions

KILLS = int(os.environ.get("STORE_CRASH_KILLS", "200"))  # fewer only for local experiments
DEVICES = ("1", "2", "3")
VARS = 3
WORKERS = 16  # concurrent appenders, so that commits group several appends


def _child(root: Path, ack_fd: int, generation: int, seed: int) -> None:
    async def appender(log: Log, worker: int, rng: random.Random) -> None:
        counter = 0
        while True:
            device = rng.choice(DEVICES)
            ident = (generation * 100 + worker) * 1_000_000 + counter
            counter += 1
            # Time runs forward per device across generations so days and order stay sane.
            ts = T0 + (generation * 1_000_000 + counter * 8 + worker) * 10**6
            got = await log.append_records(device, record(ts, VARS, float(ident)))
            os.write(ack_fd, f"{device} {got.first} {got.last} {ident}\n".encode())

    async def main() -> None:
        rng = random.Random(seed)
        log = await Log.open(root, StoreOptions(flush_s=rng.choice([0.002, 0.01, 0.03]),
                                                seal_bytes=rng.choice([4096, 20_000, 1 << 22])))
        async with asyncio.TaskGroup() as tg:
            for worker in range(WORKERS):
                tg.create_task(appender(log, worker, random.Random(seed + worker)),
                               name=f"append:{worker}")

    asyncio.run(main())


def _read_acks(fd: int) -> list[tuple[str, int, int, int]]:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    acks = []
    for line in b"".join(chunks).decode().splitlines():
        device, first, last, ident = line.split()
        acks.append((device, int(first), int(last), int(ident)))
    return acks


def _verify(root: Path, acked: dict[tuple[str, int], int],
            since: dict[str, int] | None = None) -> dict[str, int]:
    """Check the store against the acknowledgements; `since` limits the check to the records
    from those sequence numbers on (older segments are sealed and never touched by recovery;
    a full check runs every few kills and at the end). Returns the last seq per device."""
    log = Log.open_read_only(root)
    last: dict[str, int] = {}
    for device in log.devices():
        start = (since or {}).get(device, 1)
        table = log.records(device, seq_from=start)
        seqs = table.column("seq").to_pylist()
        values = table.column("value").to_pylist()
        by_seq: dict[int, list[float]] = {}
        for seq, value in zip(seqs, values, strict=True):
            by_seq.setdefault(seq, []).append(value)
        # Gap-free, each record whole (all its rows), each present once.
        assert sorted(by_seq) == list(range(start, start + len(by_seq))), device
        for seq, vals in by_seq.items():
            assert len(vals) == VARS, (device, seq, vals)
            assert vals == [vals[0] + i for i in range(VARS)], (device, seq)
        idents = [vals[0] for vals in by_seq.values()]
        assert len(set(idents)) == len(idents), f"{device}: a record stored twice"
        for (dev, seq), ident in acked.items():
            if dev == device and seq >= start:
                assert by_seq.get(seq, [None])[0] == ident, (device, seq, "acknowledged, lost")
        last[device] = start + len(by_seq) - 1
    for dev, _ in acked:
        assert dev in log.devices()
    return last


def _forked_child(root: Path, generation: int, seed: int) -> tuple[int, int]:
    """A writer `_child` in a forked process: the read end of its acknowledgements, its pid."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 0
        try:
            os.close(read_fd)
            _child(root, write_fd, generation, seed)
        except Exception:  # noqa: BLE001  (the child's top level: report, never into pytest)
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    return read_fd, pid


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_acknowledged_record(tmp_path: Path) -> None:
    rng = random.Random(4242)
    acked: dict[tuple[str, int], int] = {}
    kills = 0
    verify_s = 0.0
    since: dict[str, int] = {}
    # Built once here: the first record batch imports pyarrow's lazy pandas shim, which every
    # forked child would otherwise import again within its 50-300 ms (and never acknowledge).
    record(T0, VARS)
    started = time.monotonic()
    for generation in range(KILLS):
        read_fd, pid = _forked_child(tmp_path, generation, rng.randrange(1 << 30))
        # One kill in five lands early (during open and recovery), the others mid-appends.
        time.sleep(rng.uniform(0.0, 0.05) if rng.random() < 0.2 else rng.uniform(0.05, 0.3))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
            f"child {generation} ended by itself (status {status})"
        kills += 1
        for device, first, last, ident in _read_acks(read_fd):
            for seq in range(first, last + 1):
                assert (device, seq) not in acked, "a sequence number acknowledged twice"
                acked[(device, seq)] = ident
        os.close(read_fd)
        t_verify = time.monotonic()
        full = generation % 25 == 24
        stored_last = _verify(tmp_path, acked, None if full else since)
        # Next time, start a little before what is stored now: the torn tail lives there.
        since = {device: max(1, seq - 20) for device, seq in stored_last.items()}
        verify_s += time.monotonic() - t_verify
    assert kills == KILLS
    # Enough happened for the test to mean something.
    assert len(acked) > 2 * KILLS, len(acked)

    async def final() -> None:
        async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
            for device in DEVICES:
                before = log.watermark().devices.get(device, 0)
                got = await log.append_records(device, record(T0 + 10**18, VARS, -1.0))
                assert got.first == before + 1

    asyncio.run(final())
    total = sum(_verify(tmp_path, acked).values())
    print(f"kills={kills} acknowledged={len(acked)} stored={total} "
          f"seconds={time.monotonic() - started:.1f} verify_s={verify_s:.1f}")
    assert RECORDS_SCHEMA.names[1] == "seq" and isinstance(pa.__version__, str)
