"""The configuration watch's folder digest (pipeline/service/config_watch.py): a file is read
only when its stat identity changed, and every edit is still seen."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from _service_plant import UID as PLANT_UID
from _service_plant import running_gateway, wait_for

from pipeline.service.config_watch import RACY_NS, FolderDigest

UID = "WPM00BDE4"


def _folder(root: Path, definitions: int) -> Path:
    (root / "CONFIG").mkdir(parents=True)
    (root / "DEF").mkdir()
    (root / "SCRIPT").mkdir()
    for suffix in ("config.ini", "var.ini", "daq.csv", "scl.ini"):
        (root / "CONFIG" / f"{UID}_{suffix}").write_bytes(f"# {suffix}\n".encode())
    for n in range(definitions):
        (root / "DEF" / f"def{n:03}.csv").write_bytes(f"1;Power{n};W\n".encode())
    (root / "SCRIPT" / "hello.lua").write_bytes(b"wd.log('hello')\n")
    return root


class _CountedReads:
    """Path.read_bytes on the real file system, each path read noted."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def __call__(self, path: Path) -> bytes:
        self.paths.append(path)
        return path.read_bytes()


def _later() -> int:
    """A wall clock past the racy window: the files just written count as settled."""
    return time.time_ns() + 2 * RACY_NS


def test_unchanged_files_are_not_read_again(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "config", definitions=200)
    reads = _CountedReads()
    digest = FolderDigest(read=reads, wall_ns=_later)
    first = digest.of(folder, UID)
    assert len(reads.paths) == 4 + 200 + 1
    for _ in range(3):
        reads.paths.clear()
        assert digest.of(folder, UID) == first
        assert reads.paths == []


def test_a_same_size_edit_keeping_the_mtime_is_seen_and_only_it_is_read(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "config", definitions=50)
    reads = _CountedReads()
    digest = FolderDigest(read=reads, wall_ns=_later)
    before = digest.of(folder, UID)
    edited = folder / "DEF" / "def007.csv"
    old = edited.stat()
    edited.write_bytes(edited.read_bytes().replace(b"Power7", b"Pmax_7"))   # same size
    os.utime(edited, ns=(old.st_atime_ns, old.st_mtime_ns))                 # same mtime
    now = edited.stat()
    assert (now.st_size, now.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    reads.paths.clear()
    after = digest.of(folder, UID)
    assert after != before
    assert reads.paths == [edited]
    # A fresh digest of the folder agrees: nothing stale was kept.
    assert FolderDigest().of(folder, UID) == after


def test_files_added_removed_or_replaced_change_the_digest(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "config", definitions=3)
    reads = _CountedReads()
    digest = FolderDigest(read=reads, wall_ns=_later)
    seen = {digest.of(folder, UID)}
    (folder / "DEF" / "new.csv").write_bytes(b"1;P;W\n")
    seen.add(digest.of(folder, UID))
    (folder / "DEF" / "def001.csv").unlink()
    seen.add(digest.of(folder, UID))
    # An editor's save: a new file renamed over the old one, same size.
    daq = folder / "CONFIG" / f"{UID}_daq.csv"
    daq.with_suffix(".tmp").write_bytes(b"# daq.csX\n")
    daq.with_suffix(".tmp").replace(daq)
    seen.add(digest.of(folder, UID))
    assert len(seen) == 4


def test_a_file_written_just_now_is_read_at_every_look_until_it_settles(tmp_path: Path) -> None:
    """A write within the file system's timestamp tick can leave the identity as it was: a file
    whose timestamps are that recent is not trusted unread."""
    folder = _folder(tmp_path / "config", definitions=2)
    reads = _CountedReads()
    now = time.time_ns()
    digest = FolderDigest(read=reads, wall_ns=lambda: now)
    digest.of(folder, UID)
    reads.paths.clear()
    digest.of(folder, UID)
    assert len(reads.paths) == 4 + 2 + 1        # all written within RACY_NS of `now`
    now += 2 * RACY_NS
    digest.of(folder, UID)                       # read once more, now settled
    reads.paths.clear()
    digest.of(folder, UID)
    assert reads.paths == []


def test_a_folder_written_just_now_is_not_settled(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "config", definitions=1)
    now = time.time_ns()
    clock = [now]
    digest = FolderDigest(wall_ns=lambda: clock[0])
    digest.of(folder, UID)
    assert not digest.settled()
    clock[0] = now + 2 * RACY_NS
    assert digest.settled()
    clock[0] = now - 3600 * 10**9      # the files' times an hour ahead: a clock set back
    assert digest.settled()


async def test_a_daq_csv_still_being_uploaded_is_not_applied_half_written(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An upload in place over a slow link: its first part happens to be a valid daq.csv. The
    watch waits until the file stops changing, then applies the whole of it, once."""
    caplog.set_level("INFO", logger="sunpm.config")
    async with running_gateway(tmp_path, inverters=0) as plant:
        gateway = plant.gateway
        running = gateway.site
        assert running is not None
        daq = plant.config_dir / "CONFIG" / f"{PLANT_UID}_daq.csv"
        full = daq.read_bytes() + b"# uploaded from the office\n" * 20
        part = full[:len(daq.read_bytes()) + 6]           # `# uplo`: a comment, still valid
        looks: list[int] = []
        real_of = gateway._folder_digest.of

        def counted(config_dir: Path, uid: str) -> str:
            looks.append(time.monotonic_ns())
            return real_of(config_dir, uid)
        gateway._folder_digest.of = counted               # type: ignore[method-assign]
        deadline = time.monotonic() + 30
        with daq.open("r+b") as out:
            out.truncate(0)
            # The writer's pace, not a wait for the gateway: the part is kept being written
            # until the watch has looked at it twice.
            while len(looks) < 2 and time.monotonic() < deadline:
                out.seek(0)
                out.write(part)
                out.flush()
                os.utime(daq)
                await asyncio.sleep(0.5)
                assert gateway.site is running, "a half-written daq.csv was applied"
            assert len(looks) >= 2, "the watch never looked"
            out.seek(0)
            out.write(full)
        await wait_for(lambda: gateway.site is not running and gateway.site is not None,
                       30, "the reload")
        assert gateway.site is not None
        assert gateway.site.loaded[f"CONFIG/{PLANT_UID}_daq.csv"] == full
        assert caplog.text.count("Local configuration change; applying it") == 1


def test_an_editors_swap_and_backup_files_are_no_change(tmp_path: Path) -> None:
    """vim rewrites `.def001.csv.swp` every few seconds while the file is open: each rewrite
    was taken for a local change (a reload ending the open recording periods)."""
    folder = _folder(tmp_path / "config", definitions=3)
    digest = FolderDigest(wall_ns=_later)
    before = digest.of(folder, UID)
    (folder / "DEF" / ".def001.csv.swp").write_bytes(b"b0VIM 9.0")
    (folder / "DEF" / "def001.csv~").write_bytes(b"1;Power1;W\n")
    (folder / "SCRIPT" / ".hello.lua.swp").write_bytes(b"b0VIM 9.0")
    assert digest.of(folder, UID) == before
    (folder / "DEF" / "def001.csv").write_bytes(b"1;Power1;kW\n")
    assert digest.of(folder, UID) != before
