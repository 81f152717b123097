"""Fault cases of the file transports: peers killed or stalled mid-upload, unreachable or silent
servers, untrusted certificates and host keys. Every failure must say whether a retry can help."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from peers import Certs, Peer, free_ports, run_peer
from transport_support import NETWORK_KINDS, PeerPool, Target, fresh_target

from config.model import ServerSettings, ServerType
from exporters.transports import Failure, FileTransport, Timeouts, TransportError, open_transport

NAME = "WPM00C44F_MODBUS_210202_084443.csv.gz"
PATH = f"/DATA/{NAME}"
RATE_BPS = 256 * 1024
PAYLOAD_BYTES = 1024 * 1024


@pytest.fixture(params=NETWORK_KINDS)
def slow_target(request: pytest.FixtureRequest, certs: Certs,
                tmp_path: Path) -> Iterator[Target]:
    """A dedicated peer, throttled so that a test can act in the middle of an upload."""
    root = tmp_path / "root"
    root.mkdir()
    with run_peer(request.param, root, certs, rate_bps=RATE_BPS) as peer:
        yield fresh_target(request.param, peer, root, certs)


async def _wait_for_partial(tmp: Path, task: asyncio.Task[None], min_bytes: int) -> None:
    deadline = time.monotonic() + 20
    while not (tmp.exists() and tmp.stat().st_size >= min_bytes):
        assert not task.done(), "upload ended before it could be interrupted"
        assert time.monotonic() < deadline, "upload made no progress"
        await asyncio.sleep(0.01)


async def test_server_killed_mid_upload_is_retriable_and_keeps_the_old_final_file(
        slow_target: Target) -> None:
    final = slow_target.tree / "DATA" / NAME
    final.write_bytes(b"previous complete upload")
    transport = slow_target.transport()
    await transport.connect()
    upload = asyncio.create_task(transport.upload(PATH, os.urandom(PAYLOAD_BYTES), two_step=True))
    try:
        await _wait_for_partial(final.with_name(NAME + ".tmp"), upload, 64 * 1024)
        assert slow_target.peer is not None
        slow_target.peer.kill()
        with pytest.raises(TransportError) as caught:
            async with asyncio.timeout(15):
                await upload
    finally:
        upload.cancel()
        await transport.close()
    assert caught.value.retriable, caught.value
    assert final.read_bytes() == b"previous complete upload"


async def test_two_step_upload_is_invisible_under_its_final_name_until_renamed(
        slow_target: Target) -> None:
    data = os.urandom(PAYLOAD_BYTES // 4)
    final = slow_target.tree / "DATA" / NAME
    tmp = final.with_name(NAME + ".tmp")
    transport = slow_target.transport()
    await transport.connect()
    upload = asyncio.create_task(transport.upload(PATH, data, two_step=True))
    seen_partial_tmp = False
    try:
        while not upload.done():
            if final.exists():
                assert final.read_bytes() == data, "final name held a partial file"
            elif tmp.exists() and 0 < tmp.stat().st_size < len(data):
                seen_partial_tmp = True
            await asyncio.sleep(0.005)
        await upload
    finally:
        upload.cancel()
        await transport.close()
    assert seen_partial_tmp
    assert final.read_bytes() == data and not tmp.exists()


async def test_stalled_server_times_out_without_hanging(slow_target: Target) -> None:
    final = slow_target.tree / "DATA" / NAME
    transport = slow_target.transport(timeouts=Timeouts(connect_s=10, operation_s=1.0))
    await transport.connect()
    upload = asyncio.create_task(transport.upload(PATH, os.urandom(PAYLOAD_BYTES), two_step=True))
    assert slow_target.peer is not None
    try:
        await _wait_for_partial(final.with_name(NAME + ".tmp"), upload, 32 * 1024)
        slow_target.peer.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            async with asyncio.timeout(15):
                await upload
        waited = time.monotonic() - started
    finally:
        slow_target.peer.proc.send_signal(signal.SIGCONT)
        upload.cancel()
        await transport.close()
    assert caught.value.failure is Failure.TIMEOUT and caught.value.retriable
    assert waited < 8
    assert not final.exists()


async def test_a_slow_upload_that_keeps_moving_is_not_cut(slow_target: Target) -> None:
    # 1 MiB at 256 KiB/s takes 4 s: four times the operation timeout, never a quarter of it
    # without progress (docs/behaviour.md §4.5: progress is 1 KiB moved). WebDAV, which cannot
    # see its queued bytes leave, gives them their time at 64 KiB/s here: what the kernel may
    # hold once the body is handed over must be little (not a megabyte) for 1.5 s to do.
    data = os.urandom(PAYLOAD_BYTES)
    transport = slow_target.transport(timeouts=Timeouts(connect_s=10, operation_s=1.0,
                                                        slow_link_bps=64 * 1024))
    await transport.connect()
    try:
        await transport.upload(PATH, data, two_step=True)
    finally:
        await transport.close()
    assert (slow_target.tree / "DATA" / NAME).read_bytes() == data


def test_dir_upload_killed_mid_write_never_leaves_a_partial_final_name(tmp_path: Path) -> None:
    (tmp_path / "DATA").mkdir()
    script = (
        "import asyncio, sys\n"
        "from config.model import ServerSettings, ServerType\n"
        "from exporters.transports import DirTransport\n"
        "t = DirTransport(ServerSettings(slot=1, type=ServerType.DIR, dir_path=sys.argv[1]))\n"
        "asyncio.run(t.upload('/DATA/f.csv.gz', b'x' * (256 << 20), two_step=True))\n")
    for _attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)])
        tmp = tmp_path / "DATA" / "f.csv.gz.tmp"
        deadline = time.monotonic() + 30
        while not tmp.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        final = tmp_path / "DATA" / "f.csv.gz"
        assert not final.exists() or final.stat().st_size == 256 << 20
        if not final.exists():
            return
        final.unlink()
    pytest.fail("the upload always finished before it could be killed")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def _settings(kind: str, port: int, certs: Certs) -> ServerSettings:
    if kind == "webdav":
        return ServerSettings(slot=2, type=ServerType.WEBDAV, http_url=f"https://127.0.0.1:{port}/",
                              ca_file=certs.ca)
    return ServerSettings(slot=2, type=ServerType(kind), host="127.0.0.1", port=port,
                          user="sunpm", password="secret", ca_file=certs.ca,
                          host_key=certs.host_key_line)


@pytest.mark.parametrize("kind", [*NETWORK_KINDS, "mqtt", "mqtts"])
async def test_refused_connection_is_retriable(kind: str, certs: Certs) -> None:
    (port,) = free_ports(1)
    transport = open_transport(_settings(kind, port, certs), certs.dir,
                               timeouts=Timeouts(connect_s=5, operation_s=5))
    with pytest.raises(TransportError) as caught:
        await transport.connect()
    await transport.close()
    assert caught.value.failure is Failure.UNREACHABLE and caught.value.retriable
    assert str(caught.value).startswith("server 2: connect: unreachable (")


@pytest.mark.parametrize("kind", [*NETWORK_KINDS, "mqtt", "mqtts"])
async def test_silent_server_times_out_at_connect(kind: str, certs: Certs,
                                                  silent_port: int) -> None:
    transport = open_transport(_settings(kind, silent_port, certs), certs.dir,
                               timeouts=Timeouts(connect_s=0.5, operation_s=0.5))
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        await transport.connect()
    await transport.close()
    assert caught.value.failure is Failure.TIMEOUT and caught.value.retriable
    assert time.monotonic() - started < 5


@pytest.fixture(params=["ftps", "webdav"])
def tls_target(request: pytest.FixtureRequest, peer_pool: PeerPool, certs: Certs) -> Target:
    peer: Peer = peer_pool.get(request.param)
    return fresh_target(request.param, peer, peer.root, certs)


async def _refused_identity(transport: FileTransport) -> TransportError:
    with pytest.raises(TransportError) as caught:
        await transport.connect()
    await transport.close()
    return caught.value


async def test_certificate_of_another_ca_is_not_trusted(tls_target: Target, certs: Certs) -> None:
    err = await _refused_identity(tls_target.transport(ca_file=certs.other_ca))
    assert err.failure is Failure.TRUST and not err.retriable
    assert "certificate" in str(err)


async def test_host_name_not_in_the_certificate_is_not_trusted(tls_target: Target) -> None:
    # The peers' certificate names 127.0.0.1 only.
    if tls_target.kind == "webdav":
        transport = tls_target.transport(
            http_url=tls_target.settings.http_url.replace("127.0.0.1", "localhost"))
    else:
        transport = tls_target.transport(host="localhost")
    err = await _refused_identity(transport)
    assert err.failure is Failure.TRUST and not err.retriable


async def test_system_cas_do_not_trust_a_private_ca(tls_target: Target) -> None:
    err = await _refused_identity(tls_target.transport(ca_file=""))
    assert err.failure is Failure.TRUST and not err.retriable


async def test_missing_ca_file_is_reported_not_retriable(tls_target: Target) -> None:
    err = await _refused_identity(tls_target.transport(ca_file="absent.pem"))
    assert err.failure is Failure.TRUST and not err.retriable
    assert "absent.pem" in str(err)


@pytest.fixture
def sftp_target(peer_pool: PeerPool, certs: Certs) -> Target:
    peer = peer_pool.get("sftp")
    return fresh_target("sftp", peer, peer.root, certs)


@pytest.mark.parametrize("form", ["key line", "known_hosts line", "fingerprint",
                                  "fingerprint with padding"])
async def test_sftp_accepts_the_configured_host_key(sftp_target: Target, certs: Certs,
                                                    form: str) -> None:
    host_key = {"key line": certs.host_key_line,
                "known_hosts line": f"127.0.0.1 {certs.host_key_line}",
                "fingerprint": certs.host_key_fingerprint.rstrip("="),
                "fingerprint with padding": certs.host_key_fingerprint.rstrip("=") + "="}[form]
    transport = sftp_target.transport(host_key=host_key)
    await transport.connect()
    await transport.upload(PATH, b"ok", two_step=True)
    await transport.close()
    assert (sftp_target.tree / "DATA" / NAME).read_bytes() == b"ok"


@pytest.mark.parametrize("form", ["other key", "other fingerprint"])
async def test_sftp_refuses_a_host_key_that_does_not_match(sftp_target: Target, certs: Certs,
                                                           form: str) -> None:
    other = certs.other_host_key_line
    if form == "other fingerprint":
        other = "SHA256:" + "A" * 43
    err = await _refused_identity(sftp_target.transport(host_key=other))
    assert err.failure is Failure.TRUST and not err.retriable
    assert f"host key {certs.host_key_fingerprint.rstrip('=')} does not match FTP_HostKey" \
        in str(err)


async def test_sftp_refuses_an_unknown_host_key_by_default(sftp_target: Target) -> None:
    err = await _refused_identity(sftp_target.transport(host_key=""))
    assert err.failure is Failure.TRUST and not err.retriable
    assert "set FTP_HostKey or FTP_AcceptUnknownHostKey=1" in str(err)


async def test_sftp_pins_the_first_key_seen_through_the_callback(sftp_target: Target,
                                                                 certs: Certs) -> None:
    pinned: list[str] = []

    async def persist(line: str) -> None:
        pinned.append(line)
    settings = replace(sftp_target.settings, host_key="", accept_unknown_host_key=True)
    transport = open_transport(settings, certs.dir, timeouts=Timeouts(connect_s=10,
                                                                      operation_s=10),
                               on_host_key_pinned=persist)
    await transport.connect()
    await transport.close()
    assert pinned == [certs.host_key_line]
    # The pinned line is a valid FTP_HostKey from then on.
    transport = sftp_target.transport(host_key=pinned[0])
    await transport.connect()
    await transport.close()


async def test_sftp_pin_that_cannot_be_persisted_fails_the_connection(sftp_target: Target,
                                                                      certs: Certs) -> None:
    async def broken(line: str) -> None:
        raise OSError("config not writable")
    settings = replace(sftp_target.settings, host_key="", accept_unknown_host_key=True)
    transport = open_transport(settings, certs.dir, on_host_key_pinned=broken)
    assert isinstance(transport, FileTransport)
    with pytest.raises(OSError):
        await transport.connect()
    with pytest.raises(TransportError):
        await transport.size(PATH)  # not left connected


async def test_sftp_malformed_host_key_setting_is_reported(sftp_target: Target) -> None:
    err = await _refused_identity(sftp_target.transport(host_key="ssh-ed25519 not-base64"))
    assert err.failure is Failure.TRUST and "FTP_HostKey" in str(err)


async def test_webdav_basic_only_server_is_answered_with_basic(certs: Certs,
                                                               tmp_path: Path) -> None:
    with run_peer("webdav", tmp_path, certs, basic_only=True) as peer:
        target = fresh_target("webdav", peer, tmp_path, certs)
        transport = target.transport()
        await transport.connect()
        await transport.upload(PATH, b"basic", two_step=True)
        assert await transport.size(PATH) == 5
        await transport.close()
        bad = target.transport(password="wrong")
        err = await _refused_identity(bad)
    assert (target.tree / "DATA" / NAME).read_bytes() == b"basic"
    assert err.failure is Failure.AUTHENTICATION


def test_transport_error_reads_as_one_line_and_survives_pickling() -> None:
    refused = TransportError(1, "upload", "550 Permission denied", failure=Failure.REFUSED,
                             path="/DATA/x.csv.gz")
    assert str(refused) == "server 1: /DATA: upload refused (550 Permission denied)"
    lost = TransportError(2, "upload", "Broken pipe", failure=Failure.CONNECTION_LOST,
                          path="/LOG/y.log.gz")
    assert str(lost) == "server 2: upload /LOG/y.log.gz: connection lost (Broken pipe)"
    assert lost.retriable and not refused.retriable
    copy = pickle.loads(pickle.dumps(refused))
    assert (str(copy), copy.retriable, copy.failure) == (str(refused), False, Failure.REFUSED)
    for failure in Failure:
        # docs/behaviour.md §4.5: a refused login and a key or certificate mismatch wait an
        # hour, a directory refused stops what needs it; a protocol error is retried.
        expected = failure in (Failure.TIMEOUT, Failure.UNREACHABLE, Failure.CONNECTION_LOST,
                               Failure.SERVER_FULL, Failure.SERVER_BUSY, Failure.PROTOCOL)
        assert failure.retriable is expected


async def test_full_server_disk_is_retriable(peer_target: Target) -> None:
    # The peers write names containing DISKFULL to /dev/full (ENOSPC); a folder gets the real
    # thing, a 64 KiB tmpfs (it never follows a link, so a /dev/full link would be refused).
    target = peer_target
    name = "WPM00C44F_DISKFULL_210202_084443.csv.gz"
    data_dir = target.tree / "DATA"
    if target.kind == "dir":
        mounted = await asyncio.to_thread(
            subprocess.run, ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(data_dir)],
            check=False, capture_output=True, text=True)
        if mounted.returncode != 0:
            # As for the other system peers: CI (root) must run it; elsewhere it may skip.
            why = f"cannot mount a small tmpfs: {mounted.stderr.strip()}"
            if os.environ.get("CI"):
                pytest.fail(why)
            pytest.skip(why)
    transport = target.transport()
    await transport.connect()
    try:
        with pytest.raises(TransportError) as caught:
            await transport.upload(f"/DATA/{name}", os.urandom(200_000), two_step=True)
        assert caught.value.retriable, caught.value
        assert caught.value.failure is Failure.SERVER_FULL or target.kind != "dir"
        assert not (data_dir / name).exists()
    finally:
        await transport.close()
        if target.kind == "dir":
            await asyncio.to_thread(subprocess.run, ["umount", str(data_dir)], check=True)


@pytest.mark.parametrize("kind", ["ftp", "sftp"])
async def test_rename_over_an_existing_name_refused_by_the_server_still_replaces_it(
        kind: str, certs: Certs, tmp_path: Path) -> None:
    # IIS-like FTP (RNTO onto an existing file: 550) and SFTP v3 without posix-rename.
    with run_peer(kind, tmp_path, certs, no_rename_overwrite=True) as peer:
        target = fresh_target(kind, peer, tmp_path, certs)
        final = target.tree / "DATA" / NAME
        final.write_bytes(b"old")
        transport = target.transport()
        await transport.connect()
        try:
            await transport.upload(PATH, b"new", two_step=True)
        finally:
            await transport.close()
    assert final.read_bytes() == b"new"
    assert not final.with_name(NAME + ".tmp").exists()


async def test_ftp_active_mode_uploads(peer_pool: PeerPool, certs: Certs) -> None:
    peer = peer_pool.get("ftp")
    target = fresh_target("ftp", peer, peer.root, certs)
    transport = target.transport(passive=False)
    await transport.connect()
    try:
        await transport.upload(PATH, b"active", two_step=True)
        assert [f.name for f in await transport.list("/DATA")] == [NAME]
    finally:
        await transport.close()
    assert (target.tree / "DATA" / NAME).read_bytes() == b"active"


async def test_cancelled_upload_ends_promptly_and_leaves_nothing_running(
        slow_target: Target) -> None:
    final = slow_target.tree / "DATA" / NAME
    transport = slow_target.transport()
    await transport.connect()
    upload = asyncio.create_task(transport.upload(PATH, os.urandom(PAYLOAD_BYTES), two_step=True))
    try:
        await _wait_for_partial(final.with_name(NAME + ".tmp"), upload, 32 * 1024)
        started = time.monotonic()
        upload.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upload
        assert time.monotonic() - started < 3
    finally:
        await transport.close()
    assert not final.exists()
    # The transport is usable again after a new connect.
    await transport.connect()
    try:
        await transport.upload(PATH, b"after", two_step=True)
    finally:
        await transport.close()
    assert final.read_bytes() == b"after"


async def test_ftp_listing_without_mlsd_falls_back_to_nlst(certs: Certs, tmp_path: Path) -> None:
    with run_peer("ftp", tmp_path, certs, no_mlsd=True) as peer:
        target = fresh_target("ftp", peer, tmp_path, certs)
        (target.tree / "CONFIG" / "b_var.ini").write_bytes(b"x" * 10)
        (target.tree / "CONFIG" / "a_config.ini").write_bytes(b"KEY=1\n")
        (target.tree / "CONFIG" / "sub").mkdir()
        transport = target.transport()
        await transport.connect()
        try:
            listing = await transport.list("/CONFIG")
            assert await transport.size("/CONFIG/b_var.ini") == 10
        finally:
            await transport.close()
    assert [(f.name, f.size) for f in listing] == [("a_config.ini", 6), ("b_var.ini", 10)]
    assert all(f.mtime_s is not None for f in listing)
