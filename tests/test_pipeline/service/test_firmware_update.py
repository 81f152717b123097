"""`updateFirmware`'s download and install (docs/behaviour.md §7.3) against a real HTTP server
and real processes: what a URL may name, a server that trickles, a checksum mismatch, an update
command that fails, hangs or prints without end, two installs at once, leftovers of a crash."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import io
import logging
import os
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from http_serving import serving_http
from small_disks import mounted_tmpfs
from waiting import wait_until

from config.model import ServerSettings, ServerType
from pipeline.service import maintenance
from pipeline.service.admin import AdminError, _stage_upload
from pipeline.service.firmware import stage_offered_package
from pipeline.service.maintenance import (
    MaintenanceError,
    clean_update_folder,
    install_firmware,
    stage_firmware,
    update_argv,
)

PACKAGE = b"package bytes " * 1000
MD5 = hashlib.md5(PACKAGE, usedforsecurity=False).hexdigest()


@contextmanager
def http_server(trickle_s: float = 0.0, cut_at: int | None = None,
                lengths: tuple[str, ...] = ()) -> Iterator[int]:
    """Every path answers PACKAGE (one byte every `trickle_s` when given; only its first
    `cut_at` bytes, then the connection closed, when given; with `lengths` as its
    Content-Length headers when given)."""
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            for length in lengths or (str(len(PACKAGE)),):
                self.send_header("Content-Length", length)
            self.end_headers()
            if cut_at is not None:
                self.wfile.write(PACKAGE[:cut_at])
                self.close_connection = True
                return
            if not trickle_s:
                self.wfile.write(PACKAGE)
                return
            for byte in PACKAGE:
                if stop.wait(trickle_s):
                    return
                self.wfile.write(bytes((byte,)))
                self.wfile.flush()

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving_http(Handler) as port:
        try:
            yield port
        finally:
            stop.set()  # a trickling answer ends, so the shutdown is not waited out


@pytest.mark.parametrize("tail", ["tried.json", "..", "a%0Ab.spm", ".hidden.spm", ""])
async def test_a_url_names_no_file_outside_plain_package_names(tmp_path: Path,
                                                               tail: str) -> None:
    data = tmp_path / "data"
    (data / "update").mkdir(parents=True)
    (data / "update" / "tried.json").write_text('["kept"]')
    with http_server() as port:
        staged = await stage_firmware(data, f"http://127.0.0.1:{port}/x/{tail}", "", "", MD5)
    assert staged.parent == data / "update"
    assert staged.name == "package.spm"
    assert staged.read_bytes() == PACKAGE
    assert (data / "update" / "tried.json").read_text() == '["kept"]'
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["package.spm",
                                                                          "tried.json"]


async def test_a_checksum_mismatch_leaves_nothing_staged(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with http_server() as port, pytest.raises(MaintenanceError) as caught:
        await stage_firmware(data, f"http://127.0.0.1:{port}/wgapp_2.0.spm", "", "", "0" * 32)
    assert str(caught.value) == f"checksum mismatch (expected {'0' * 32}, got {MD5})"
    assert list((data / "update").iterdir()) == []


async def test_a_download_given_up_on_stops_writing(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that trickles: past the 10 min the command is answered, and the download's
    thread must not go on writing (then stage the package after the answer said it failed)."""
    monkeypatch.setattr(maintenance, "DOWNLOAD_LIMIT_S", 0.5)
    data = tmp_path / "data"
    with http_server(trickle_s=0.05) as port:
        with pytest.raises(MaintenanceError, match="not done within"):
            await stage_firmware(data, f"http://127.0.0.1:{port}/wgapp_2.0.spm", "", "", MD5)
        await wait_until(lambda: not list((data / "update").iterdir()), within_s=10,
                         what="the partial download removed")


def test_leftovers_of_a_crash_and_staged_packages_go_at_start(tmp_path: Path) -> None:
    folder = tmp_path / "update"
    folder.mkdir()
    for name in (".wgapp_2.0.spm.part", ".package.spm.abc123.part", "wgapp_1.5.spm",
                 "tried.json", "attempts.json"):
        (folder / name).write_bytes(b"x")
    clean_update_folder(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["attempts.json", "tried.json"]
    clean_update_folder(tmp_path / "absent")


def _command(code: str) -> str:
    return f"{sys.executable} -c '{code}'"


async def test_a_failing_update_command_says_why(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "sunpm.system")
    code = "import sys; print(\"dpkg: error: package is broken\"); sys.exit(3)"
    assert await install_firmware(_command(code), tmp_path / "p.spm") == 3
    assert "Update command exited 3; the running version stays: dpkg: error: package is " \
           "broken" in caplog.text


async def test_an_update_command_that_hangs_is_killed(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(maintenance, "INSTALL_LIMIT_S", 1.0)
    pid_file = tmp_path / "child.pid"
    # The command starts a child of its own that hangs too: both go.
    code = ("import os, subprocess, sys, time; "
            "c = subprocess.Popen([sys.executable, \"-c\", \"import time; time.sleep(60)\"]); "
            f"open(\"{pid_file}\", \"w\").write(str(c.pid)); time.sleep(60)")
    started = time.monotonic()
    status = await install_firmware(_command(code), tmp_path / "p.spm")
    assert status != 0 and time.monotonic() - started < 30
    assert "Update command killed: still running after 1 s" in caplog.text
    child = int(pid_file.read_text())
    await wait_until(lambda: not _alive(child), what="the command's child killed")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


async def test_an_update_command_printing_without_end_keeps_its_tail_only(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "sunpm.system")
    code = ("import sys; [sys.stdout.buffer.write(b\"x\" * 65536) for _ in range(1024)]; "
            "print(\"the end\")")
    tracemalloc.start()
    try:
        assert await install_firmware(_command(code), tmp_path / "p.spm") == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak >> 20} MiB held for 64 MiB of output"
    assert "the end" in caplog.text


async def test_two_installs_run_one_after_the_other(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    code = ("import os, sys, time; f = open(sys.argv[1], \"a\"); f.write(\"start \"); f.flush(); "
            "time.sleep(0.3); f.write(\"end \"); f.close()")
    command = f"{sys.executable} -c '{code}'"
    await asyncio.gather(install_firmware(command, marks), install_firmware(command, marks))
    assert marks.read_text() == "start end start end "


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "small", "1m") as mount:
        yield mount


async def test_a_full_disk_while_a_bin_package_arrives_names_the_gateways_disk(
        tmp_path: Path, small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "srv" / "BIN").mkdir(parents=True)
    (tmp_path / "srv" / "BIN" / "wgapp_9.0.spm").write_bytes(os.urandom(3 << 20))
    settings = ServerSettings(slot=1, type=ServerType.DIR, dir_path=str(tmp_path / "srv"))
    data = small_disk / "data"
    for _ in range(4):
        assert await stage_offered_package(data, settings, tmp_path, running="1.0") is None
    failures = [r.getMessage() for r in caplog.records if "not downloaded" in r.getMessage()]
    assert len(failures) == 3
    assert all("the gateway's disk: No space left on device" in f for f in failures), failures
    assert "server disk full" not in caplog.text
    assert [p.name for p in (data / "update").iterdir()] == ["attempts.json"]


def test_a_full_disk_while_an_upload_is_staged_is_a_form_error(small_disk: Path) -> None:
    target = small_disk / "update" / "wgapp_2.0.spm"
    target.parent.mkdir()
    with pytest.raises(AdminError) as caught:
        _stage_upload(io.BytesIO(b"x" * (3 << 20)), target, "")
    assert str(caught.value) == "wgapp_2.0.spm not staged: No space left on device"
    assert caught.value.field == "package"
    assert list(target.parent.iterdir()) == []


async def test_an_update_command_with_an_unbalanced_quote_is_refused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert await install_firmware("sh -c 'install", tmp_path / "p.spm") == 127
    assert "Update command could not start: SYSTEM_UpdateCommand cannot be split into words " \
           "(No closing quotation)" in caplog.text
    with pytest.raises(MaintenanceError, match="cannot be split"):
        update_argv("sh -c 'install")
    assert update_argv("sudo /usr/local/bin/install-sunpm --yes") == [
        "sudo", "/usr/local/bin/install-sunpm", "--yes"]


async def test_a_download_cut_midway_is_a_failed_download_not_a_bad_package(
        tmp_path: Path) -> None:
    """The technician must learn that the link broke, not that the package is wrong."""
    data = tmp_path / "data"
    with http_server(cut_at=5000) as port, pytest.raises(MaintenanceError) as caught:
        await stage_firmware(data, f"http://127.0.0.1:{port}/wgapp_2.0.spm", "", "", MD5)
    assert str(caught.value) == f"download failed: cut after 5000 of {len(PACKAGE)} bytes"
    assert list((data / "update").iterdir()) == []


@pytest.mark.parametrize("lengths", [("²",), ("-5",), ("1e3",), ("0x10",), ("9" * 5000,),
                                     (str(len(PACKAGE)), "5")])
async def test_a_malformed_content_length_is_named_with_its_server(
        tmp_path: Path, lengths: tuple[str, ...]) -> None:
    """Not Python's `invalid literal for int()`, nor a package staged whose end cannot be told
    from a cut."""
    data = tmp_path / "data"
    with http_server(lengths=lengths) as port, pytest.raises(MaintenanceError) as caught:
        await stage_firmware(data, f"http://127.0.0.1:{port}/wgapp_2.0.spm",
                             "", "", MD5)
    shown = ", ".join(repr(length[:40]) for length in lengths)
    assert str(caught.value) == (f"download failed: the server 127.0.0.1:{port} sent a "
                                 f"malformed Content-Length header ({shown}), not a byte count")
    assert list((data / "update").iterdir()) == []


@pytest.mark.parametrize(("url_user", "login", "password", "expected"), [
    ("plant%40site:s%3Acret@", "", "", "plant@site:s:cret"),
    ("ignored:x@", "tech", "pw", "tech:pw"),
    ("", "tech", "pw", "tech:pw")])
async def test_credentials_in_an_http_url_are_sent_as_basic_authorisation(
        tmp_path: Path, url_user: str, login: str, password: str, expected: str) -> None:
    """`http://user:password@host/x.spm` was looked up whole as a host name (`Name or service
    not known`); the credentials go as the Authorization header, the command's own first."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(200)
            self.send_header("Content-Length", str(len(PACKAGE)))
            self.end_headers()
            self.wfile.write(PACKAGE)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving_http(Handler) as port:
        staged = await stage_firmware(tmp_path / "data",
                                      f"http://{url_user}127.0.0.1:{port}/wgapp_2.0.spm",
                                      login, password, MD5)
    assert staged.read_bytes() == PACKAGE
    token = base64.b64encode(expected.encode()).decode()
    assert seen == [f"Basic {token}"]


async def test_a_repeated_equal_content_length_is_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    size = str(len(PACKAGE))
    with http_server(lengths=(size, f" {size}")) as port:
        staged = await stage_firmware(data, f"http://127.0.0.1:{port}/wgapp_2.0.spm", "", "", MD5)
    assert staged.read_bytes() == PACKAGE


async def test_a_bin_package_that_takes_the_last_of_the_disk_is_not_fetched_for_ever(
        tmp_path: Path, small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The package fits, the record that it was tried does not: it came again at every
    session, 'not checked: No space left on device'."""
    (tmp_path / "srv" / "BIN").mkdir(parents=True)
    (tmp_path / "srv" / "BIN" / "wgapp_9.0.spm").write_bytes(os.urandom((1 << 20) - 2048))
    settings = ServerSettings(slot=1, type=ServerType.DIR, dir_path=str(tmp_path / "srv"))
    data = small_disk / "data"
    for _ in range(5):
        assert await stage_offered_package(data, settings, tmp_path, running="1.0") is None
    failures = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(failures) == 3, failures
    assert failures[-1].endswith("not fetched again until the server offers it changed")
