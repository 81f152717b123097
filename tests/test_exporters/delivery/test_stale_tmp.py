"""A `.tmp` left on a real FTP server by a cut two-step upload goes, even once two-step sending is
switched off; uploads that cannot follow a cut one cost no extra command (docs/spec-notes.md,
"Stale `.tmp`")."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from _session_child import session
from delivery_support import DAY, T0, FtpPeer, fill

from store import Log, StoreOptions

CHILD = Path(__file__).with_name("_session_child.py")
PAD_BYTES = 256 * 1024   # incompressible: an upload takes ~0.5 s on the throttled peer
CUT_S = T0 + 4 * DAY


async def _session(store_dir: Path, port: int, *, two_step: bool) -> bool:
    return await session(store_dir, port, CUT_S, PAD_BYTES, two_step=two_step)


def _cut_two_step_upload(store_dir: Path, port: int, root: Path) -> Path:
    """A two-step session in a child process, SIGKILLed while it writes its first `.tmp`."""
    child = subprocess.Popen([sys.executable, str(CHILD), str(store_dir), str(port), str(CUT_S),
                              str(PAD_BYTES)], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and child.poll() is None:
            tmps = [p for p in root.rglob("*.tmp") if p.stat().st_size > 0]
            if tmps:
                break
            time.sleep(0.005)
        else:
            err = child.stderr.read().decode() if child.stderr else ""
            raise AssertionError(f"no upload under way (exit {child.poll()}): {err}")
    finally:
        child.kill()
        child.wait(timeout=10)
        if child.stderr is not None:
            child.stderr.close()
    left = list(root.rglob("*.tmp"))
    assert len(left) == 1, left
    return left[0]


async def _journaled(store_dir: Path) -> dict[str, tuple[int, str]]:
    log = await Log.open(store_dir, read_only=True)
    try:
        return {f"{f['dir']}/{f['name']}": (f["size"], f["sha256"])
                for body in log.journal(kinds=["window"]).column("body").to_pylist()
                for f in json.loads(body)["files"]}
    finally:
        await log.close()


def _deletes(ftp: FtpPeer) -> list[str]:
    return [path for op, path in ftp.log() if op == "DELE"]


async def test_a_tmp_cut_while_two_step_goes_once_two_step_is_off(
        tmp_path: Path, ftp_throttled: FtpPeer) -> None:
    ftp = ftp_throttled
    store_dir = tmp_path / "store"
    log = await Log.open(store_dir, StoreOptions(flush_s=0.05))
    await fill(log, T0, CUT_S + DAY, alarm_every_s=12 * 3600)
    await log.close()

    stale = _cut_two_step_upload(store_dir, ftp.port, ftp.root)
    name = f"/{stale.parent.name}/{stale.name.removesuffix('.tmp')}"
    assert not (stale.parent / stale.name.removesuffix(".tmp")).exists()
    deletes_before = len(_deletes(ftp))

    assert await _session(store_dir, ftp.port, two_step=False)

    assert not list(ftp.root.rglob("*.tmp"))
    journaled = await _journaled(store_dir)
    assert name in journaled
    for remote, (size, sha) in journaled.items():
        data = (ftp.root / remote.lstrip("/")).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha), remote
    # One DELE, for the window left undelivered by the cut session; the windows built by this
    # session went up one-step with no extra command.
    assert _deletes(ftp)[deletes_before:] == [name + ".tmp"]
    fresh = [f for f in ftp.finals() if f != name]
    assert len(fresh) >= 4, ftp.finals()


async def test_a_first_upload_with_two_step_off_sends_no_delete(
        tmp_path: Path, ftp: FtpPeer) -> None:
    store_dir = tmp_path / "store"
    log = await Log.open(store_dir, StoreOptions(flush_s=0.05))
    await fill(log, T0, CUT_S + DAY, alarm_every_s=12 * 3600)
    await log.close()

    assert await _session(store_dir, ftp.port, two_step=False)

    journaled = await _journaled(store_dir)
    assert sorted(ftp.finals()) == sorted(journaled)
    assert [op for op, _ in ftp.log()] == ["STOR"] * len(journaled)
    assert _deletes(ftp) == []

