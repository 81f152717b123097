"""SIGKILL at random points of uploads to a real FTP server, 50 times (docs/behaviour.md §5.2).

A child process runs a server-1 session; the parent kills it once a `.tmp` upload is under way
(plus a random delay, so kills also land on renames, journal commits and the next lookups), checks
the server, and starts the next child. Finally one child finishes the job.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from delivery_support import DAY, NS, T0, FtpPeer, fill

from store import Log, StoreOptions

CHILD = Path(__file__).with_name("_session_child.py")
KILLS = 50
PAD_BYTES = 48 * 1024          # incompressible, so each upload takes a while on the throttled peer
CUT_S = T0 + 60 * DAY


def _final_files(root: Path) -> dict[str, bytes]:
    return {f"/{p.parent.name}/{p.name}": p.read_bytes()
            for d in ("DATA", "ALARM") for p in (root / d).iterdir()
            if not p.name.endswith(".tmp")}


async def _journaled_files(store_dir: Path) -> dict[str, tuple[int, str]]:
    log = await Log.open(store_dir, read_only=True)
    try:
        files = {}
        for body in log.journal(kinds=["window"]).column("body").to_pylist():
            for f in json.loads(body)["files"]:
                files[f"{f['dir']}/{f['name']}"] = (f["size"], f["sha256"])
        return files
    finally:
        await log.close()


def _spawn(store_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """A child that imports, then waits for `_go` (so its start-up overlaps the previous one)."""
    return subprocess.Popen([sys.executable, str(CHILD), str(store_dir), str(port), str(CUT_S),
                             str(PAD_BYTES)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _go(child: subprocess.Popen[bytes]) -> None:
    assert child.stdin is not None
    child.stdin.write(b"go\n")
    child.stdin.close()


def _reap(child: subprocess.Popen[bytes]) -> None:
    child.kill()
    child.wait(timeout=10)
    for stream in (child.stdin, child.stderr):
        if stream is not None:
            stream.close()


def _tmp_files(root: Path) -> dict[Path, tuple[int, int]]:
    found = {}
    for d in ("DATA", "ALARM"):
        for p in (root / d).glob("*.tmp"):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            found[p] = (st.st_size, st.st_mtime_ns)
    return found


def _wait_for_upload(root: Path, child: subprocess.Popen[bytes], before: dict[Path, tuple[int, int]],
                     timeout_s: float) -> bool:
    """Until a `.tmp` is being written by this child (a new one, or a stale one growing again)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and child.poll() is None:
        now = _tmp_files(root)
        if any(before.get(p) != v for p, v in now.items()):
            return True
        time.sleep(0.005)
    return False


@pytest.mark.slow
# Fifty children each start Python and open the store: past the suite's 300 s on a busy box (the
# loop alone took 200 s at a load of 7-8). The kill loop's own bound below still ends a hang.
@pytest.mark.timeout(900)
async def test_sigkill_mid_upload_loses_nothing_and_repeats_only_the_file_in_flight(
        tmp_path: Path, ftp_throttled: FtpPeer) -> None:
    ftp = ftp_throttled
    store_dir = tmp_path / "store"
    t_fill = time.monotonic()
    log = await Log.open(store_dir, StoreOptions(flush_s=0.05))
    await fill(log, T0, CUT_S + DAY, alarm_every_s=12 * 3600)
    records = {dev: [t for t in log.records(dev).column("ts").cast("int64").to_pylist()
                     if t < CUT_S * NS] for dev in log.devices()}
    await log.close()

    print(f"filled {time.monotonic() - t_fill:.1f} s")
    lags: list[float] = []
    rng = random.Random(20210205)
    in_flight: list[set[str]] = []
    kills = 0
    started = time.monotonic()
    warm = _spawn(store_dir, ftp.port)
    try:
        while kills < KILLS:
            # A backstop for a loop that stopped making progress, not a speed figure (each step
            # has its own timeouts). On the 2-core box it took 81 s at a load average of 5-7 and
            # 200 s at 7-8: a bound of 150 s failed a box that was only busy.
            assert time.monotonic() - started < 600, f"kill loop too slow: {kills} kills"
            before = _tmp_files(ftp.root)
            child, warm = warm, _spawn(store_dir, ftp.port)
            t_go = time.monotonic()
            _go(child)
            if not _wait_for_upload(ftp.root, child, before, timeout_s=20):
                code = child.wait(timeout=30)
                pytest.fail(f"session ended (exit {code}) before {KILLS} kills ({kills} done): "
                            f"{child.stderr.read().decode() if child.stderr else ''}")
            lags.append(time.monotonic() - t_go)
            await asyncio.sleep(rng.uniform(0, 0.2))
            # What may legitimately arrive twice: the upload under way, or the file renamed
            # just before whose `delivered` event the kill may have beaten.
            _reap(child)
            kills += 1
            flight = {f"/{p.parent.name}/{p.name[:-4]}" for d in ("DATA", "ALARM")
                      for p in (ftp.root / d).glob("*.tmp")}
            finals = ftp.finals()
            if finals:
                flight.add(finals[-1])
            in_flight.append(flight)
            # No final name ever holds a partial file: each is exactly the bytes journaled.
            journaled = await _journaled_files(store_dir)
            for name, data in _final_files(ftp.root).items():
                assert name in journaled, name
                assert (len(data), hashlib.sha256(data).hexdigest()) == journaled[name], name
        lags.sort()
        print(f"kill loop {time.monotonic() - started:.1f} s; start to upload: median "
              f"{lags[len(lags) // 2]:.2f} s, max {lags[-1]:.2f} s")
        _go(warm)
        assert warm.wait(timeout=120) == 0, warm.stderr.read().decode() if warm.stderr else ""
    finally:
        _reap(warm)

    print(f"finished {time.monotonic() - started:.1f} s")
    journaled = await _journaled_files(store_dir)
    on_server = _final_files(ftp.root)
    # Nothing lost: every file of every window is on the server with its journaled bytes.
    assert set(on_server) == set(journaled)
    for name, data in on_server.items():
        assert (len(data), hashlib.sha256(data).hexdigest()) == journaled[name]
    got = sorted(line for name, data in on_server.items() if name.startswith("/DATA/")
                 for line in gzip.decompress(data).decode().split("\n") if line.count(";") == 3)
    assert len(got) == len(set(got)) == sum(len(v) for v in records.values())
    # Duplicates only of a file in flight at a kill, at most once per kill.
    renames: dict[str, int] = {}
    for name in ftp.finals():
        renames[name] = renames.get(name, 0) + 1
    for name, count in renames.items():
        if count > 1:
            assert count - 1 <= sum(1 for f in in_flight if name in f), name
    assert sum(c - 1 for c in renames.values()) <= KILLS
    # The loop did cut uploads: most kills left a partial `.tmp` behind for the next child.
    assert sum(1 for f in in_flight if f) >= KILLS // 2
    assert not list(ftp.root.rglob("*.tmp"))
