"""Which `/BIN` package is newer than the running version (docs/behaviour.md §4.2 step 6)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import tracemalloc
from pathlib import Path
from typing import BinaryIO

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.model import ServerSettings, ServerType
from exporters.transports import DirTransport, Failure, RemoteFile, TransportError
from pipeline.service.firmware import newest_offer, stage_offered_package, version_key


def test_newest_package_above_the_running_version() -> None:
    names = ["wgapp_1.2.0.spm", "wgapp_1.10.0.spm", "wgapp_1.9.9.spm", "wgapp_1.10.0.spm.md5",
             "readme.txt", "wgapp_x.spm", "wgapp_2.0.spm.tmp"]
    assert newest_offer(names, "1.2.0") == ("wgapp_1.10.0.spm", "1.10.0")
    assert newest_offer(names, "1.10.0") is None
    assert newest_offer([], "0") is None
    assert version_key("1.0.0.dev3") == (1, 0, 0, 0)


@given(st.lists(st.integers(0, 999), min_size=1, max_size=4),
       st.lists(st.integers(0, 999), min_size=1, max_size=4))
def test_offer_is_chosen_by_numeric_order(offered: list[int], running: list[int]) -> None:
    version = ".".join(map(str, offered))
    chosen = newest_offer([f"wgapp_{version}.spm"], ".".join(map(str, running)))
    assert (chosen is not None) == (tuple(offered) > tuple(running))


def _bin_tree(root: Path, package: bytes, md5: str | None) -> ServerSettings:
    for folder in ("BIN", "CONFIG", "DATA"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "BIN" / "wgapp_9.0.spm").write_bytes(package)
    if md5 is not None:
        (root / "BIN" / "wgapp_9.0.spm.md5").write_text(f"{md5}  wgapp_9.0.spm\n")
    return ServerSettings(slot=1, type=ServerType.DIR, dir_path=str(root))


async def test_an_offered_package_is_streamed_to_disk_and_fetched_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = os.urandom(1 << 20) * 48  # 48 MiB
    settings = _bin_tree(tmp_path / "srv", package,
                         hashlib.md5(package, usedforsecurity=False).hexdigest())
    fetched: list[str] = []
    real = DirTransport.download_to

    async def counted(self: DirTransport, path: str, out: BinaryIO, *, max_bytes: int) -> int:
        fetched.append(path)
        return await real(self, path, out, max_bytes=max_bytes)
    monkeypatch.setattr(DirTransport, "download_to", counted)
    data = tmp_path / "data"
    tracemalloc.start()
    try:
        staged = await stage_offered_package(data, settings, tmp_path, running="1.0")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert staged == data / "update" / "wgapp_9.0.spm"
    assert staged.read_bytes() == package
    assert peak < 8 << 20, f"{peak >> 20} MiB held to stage a 48 MiB package"
    assert sorted(p.name for p in staged.parent.iterdir()) == ["tried.json", "wgapp_9.0.spm"]
    # Tried already (installed or not): the next sessions do not fetch it again.
    staged.unlink()
    assert await stage_offered_package(data, settings, tmp_path, running="1.0") is None
    assert [p for p in fetched if p.endswith(".spm")] == ["/BIN/wgapp_9.0.spm"]


async def test_a_package_whose_md5_differs_is_not_staged_and_leaves_no_part(
        tmp_path: Path) -> None:
    settings = _bin_tree(tmp_path / "srv", b"package", "0" * 32)
    data = tmp_path / "data"
    assert await stage_offered_package(data, settings, tmp_path, running="1.0") is None
    assert sorted(p.name for p in (data / "update").iterdir()) == ["tried.json"]


def test_a_name_ending_in_a_line_break_is_no_offer() -> None:
    assert newest_offer(["wgapp_9.0.spm\n"], "1.0") is None
    assert newest_offer(["wgapp_\u0669.spm"], "1.0") is None      # an Arabic-Indic nine


async def test_a_package_over_the_cap_is_fetched_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A listing without sizes (0: unknown, as an FTP server without the MLSD size fact): the
    cap is found while the package arrives."""
    settings = _bin_tree(tmp_path / "srv", b"x" * 4096, None)
    monkeypatch.setattr("pipeline.service.firmware.PACKAGE_CAP_BYTES", 1024)
    fetched: list[str] = []
    real = DirTransport.download_to
    real_list = DirTransport.list

    async def sizeless(self: DirTransport, directory: str) -> list[RemoteFile]:
        return [dataclasses.replace(f, size=0) for f in await real_list(self, directory)]
    monkeypatch.setattr(DirTransport, "list", sizeless)

    async def counted(self: DirTransport, path: str, out: BinaryIO, *, max_bytes: int) -> int:
        fetched.append(path)
        return await real(self, path, out, max_bytes=max_bytes)
    monkeypatch.setattr(DirTransport, "download_to", counted)
    data = tmp_path / "data"
    for _ in range(4):
        assert await stage_offered_package(data, settings, tmp_path, running="1.0") is None
    assert fetched == ["/BIN/wgapp_9.0.spm"]
    assert not [p for p in (data / "update").iterdir() if p.name.endswith(".part")]


async def test_a_download_that_keeps_failing_is_tried_three_times_per_listing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk too small for the package (or a link that always breaks): not 256 MiB fetched at
    every session for ever; tried again when the server offers the package changed."""
    settings = _bin_tree(tmp_path / "srv", b"x" * 4096, None)
    fetched: list[str] = []

    async def disk_full(self: DirTransport, path: str, out: BinaryIO, *, max_bytes: int) -> int:
        fetched.append(path)
        out.write(b"x" * 100)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(DirTransport, "download_to", disk_full)
    data = tmp_path / "data"
    for _ in range(5):
        assert await stage_offered_package(data, settings, tmp_path, running="1.0") is None
    assert len(fetched) == 3
    assert not [p for p in (data / "update").iterdir() if p.name.endswith(".part")]
    package = tmp_path / "srv" / "BIN" / "wgapp_9.0.spm"
    package.write_bytes(b"y" * 5000)
    assert await stage_offered_package(data, settings, tmp_path, running="1.0") is None
    assert len(fetched) == 4


async def test_a_server_without_bin_is_no_warning(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "srv" / "CONFIG").mkdir(parents=True)
    settings = ServerSettings(slot=1, type=ServerType.DIR, dir_path=str(tmp_path / "srv"))
    assert await stage_offered_package(tmp_path / "data", settings, tmp_path,
                                       running="1.0") is None
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_package_that_arrives_too_slowly_does_not_hold_the_sessions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Fetched at the end of server 1's session: 256 MiB over a slow modem link would hold every
    later session (alarms, data) for hours."""
    settings = _bin_tree(tmp_path / "srv", b"x" * 4096, None)
    monkeypatch.setattr("pipeline.service.firmware.DOWNLOAD_LIMIT_S", 0.5)

    async def trickle(self: DirTransport, path: str, out: BinaryIO, *, max_bytes: int) -> int:
        for _ in range(600):                    # one byte every 0.1 s: a minute at most
            out.write(b"x")
            await asyncio.sleep(0.1)
        return 600
    monkeypatch.setattr(DirTransport, "download_to", trickle)
    data = tmp_path / "data"
    async with asyncio.timeout(20):
        assert await stage_offered_package(data, settings, tmp_path, running="1.0") is None
    assert "not done within 0 s; 2 more attempt(s)" in caplog.text
    assert [p.name for p in (data / "update").iterdir()] == ["attempts.json"]


async def test_a_package_listed_over_the_cap_is_not_fetched_at_all(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    settings = _bin_tree(tmp_path / "srv", b"x" * 4096, None)
    monkeypatch.setattr("pipeline.service.firmware.PACKAGE_CAP_BYTES", 1024)
    fetched: list[str] = []

    async def counted(self: DirTransport, path: str, out: BinaryIO, *, max_bytes: int) -> int:
        fetched.append(path)
        return 0
    monkeypatch.setattr(DirTransport, "download_to", counted)
    for _ in range(2):
        assert await stage_offered_package(tmp_path / "data", settings, tmp_path,
                                           running="1.0") is None
    assert fetched == []
    assert caplog.text.count("4096 bytes, more than 256 MiB") == 1


async def test_an_md5_file_that_cannot_be_read_once_does_not_bar_the_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = b"package"
    settings = _bin_tree(tmp_path / "srv", package,
                         hashlib.md5(package, usedforsecurity=False).hexdigest())
    real = DirTransport.download
    failures = [TransportError(1, "download", "connection reset by peer",
                               failure=Failure.CONNECTION_LOST, path="/BIN/wgapp_9.0.spm.md5")]

    async def flaky(self: DirTransport, path: str, *, max_bytes: int = 1 << 22) -> bytes:
        if failures:
            raise failures.pop()
        return await real(self, path, max_bytes=max_bytes)
    monkeypatch.setattr(DirTransport, "download", flaky)
    data = tmp_path / "data"
    assert await stage_offered_package(data, settings, tmp_path, running="1.0") is None
    staged = await stage_offered_package(data, settings, tmp_path, running="1.0")
    assert staged is not None and staged.read_bytes() == package


async def test_a_version_of_thousands_of_digits_is_no_offer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile `/BIN` name (a server's listing, which no local file system could hold):
    Python's `int()` refuses 4,300 digits and over, and the error failed every server-1 session
    after its uploads (retried for ever)."""
    settings = _bin_tree(tmp_path / "srv", b"package", None)
    real = DirTransport.list

    async def listed(self: DirTransport, path: str) -> list[RemoteFile]:
        files = await real(self, path)
        return [*files, dataclasses.replace(files[0], name=f"wgapp_1.{'9' * 5000}.spm"),
                dataclasses.replace(files[0], name=f"wgapp_{'9' * 10}.spm")]
    monkeypatch.setattr(DirTransport, "list", listed)
    staged = await stage_offered_package(tmp_path / "data", settings, tmp_path, running="1.0")
    assert staged is not None and staged.name == "wgapp_9.0.spm"
    assert version_key("1.²") == (1, 0) and version_key(f"2.{'9' * 5000}") == (2, 0)
