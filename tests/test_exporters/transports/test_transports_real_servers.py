"""Where the servers information systems run differ, each named (servers: tests/real_servers.py).

The whole contract suite also runs against each of them (`target` in conftest.py); these tests pin
the quirk itself first (so a test here cannot pass because the server changed), then what the
transport makes of it:
- vsftpd: `OPTS MLST` is `501 Option not understood` and there is no `MLSD`; `NLST` of a missing
  folder is `226` with nothing listed.
- ProFTPD: a refused listing leaves the connection in ASCII mode, where `SIZE` is refused.
- OpenSSH: the RSA host key is shown unless the client asks for another type.
- Apache mod_dav: `HEAD` of an empty file has no `Content-Length`; `PUT` into a folder it may not
  write is `500`.
Renaming onto an existing name replaces it on all four (`RNTO`, `posix-rename@openssh.com`,
`MOVE` with `Overwrite: T`): `test_upload_replaces_an_existing_final_name[<server>]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ftplib
import socket
import ssl
from collections.abc import Iterator

import asyncssh
import httpx
import pytest
from peers import Certs
from real_servers import RealServer, require
from transport_support import PeerPool, Target, fresh_real_target

from exporters.transports import Failure, TransportError

NAME = "WPM00C44F_IO_210202_084443.csv.gz"


def _target(name: str, peer_pool: PeerPool, certs: Certs) -> Target:
    require(name)
    return fresh_real_target(peer_pool.get_real(name), certs)


def _server(target: Target) -> RealServer:
    assert isinstance(target.peer, RealServer)
    return target.peer


class _FtpTlsResuming(ftplib.FTP_TLS):
    """vsftpd requires data channels to resume the control channel's TLS session."""

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        assert isinstance(self.sock, ssl.SSLSocket)
        tls = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return tls, size  # type: ignore[return-value]


@contextlib.contextmanager
def _raw_ftp(target: Target) -> Iterator[ftplib.FTP]:
    """A plain ftplib session on the target's server, logged in, in the tree."""
    ftp: ftplib.FTP
    if target.kind == "ftps":
        context = ssl.create_default_context(cafile=str(target.certs.dir / target.certs.ca))
        ftp = _FtpTlsResuming(context=context)
    else:
        ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", _server(target).port, timeout=10)
    try:
        if isinstance(ftp, ftplib.FTP_TLS):
            ftp.auth()
            ftp.login("sunpm", "secret", secure=False)
            ftp.prot_p()
        else:
            ftp.login("sunpm", "secret")
        ftp.cwd(str(target.tree))
        yield ftp
    finally:
        ftp.close()


# --------------------------------------------------------------------------- vsftpd


@pytest.fixture(params=["vsftpd-ftp", "vsftpd-ftps"])
def vsftpd(request: pytest.FixtureRequest, peer_pool: PeerPool, certs: Certs) -> Target:
    return _target(request.param, peer_pool, certs)


def test_vsftpd_quirks_hold(vsftpd: Target) -> None:
    with _raw_ftp(vsftpd) as ftp:
        with pytest.raises(ftplib.error_perm, match=r"^501"):
            ftp.sendcmd("OPTS MLST type;size;modify;")
        with pytest.raises(ftplib.error_perm, match=r"^500"):
            ftp.sendcmd("MLST CONFIG")
        assert ftp.nlst("NOPE") == []


async def test_vsftpd_listing_falls_back_to_nlst(vsftpd: Target) -> None:
    (vsftpd.tree / "CONFIG" / "a_daq.csv").write_bytes(b"x" * 300)
    (vsftpd.tree / "CONFIG" / "sub").mkdir()
    transport = vsftpd.transport()
    await transport.connect()
    try:
        listing = await transport.list("/CONFIG")
        assert [(f.name, f.size) for f in listing] == [("a_daq.csv", 300)]
        assert listing[0].mtime_s is not None
        assert await transport.list("/DATA") == []
    finally:
        await transport.close()


async def test_vsftpd_missing_folder_is_refused_not_empty(vsftpd: Target) -> None:
    transport = vsftpd.transport()
    await transport.connect()
    try:
        with pytest.raises(TransportError) as caught:
            await transport.list("/NOPE")
        # The connection is still usable, in the tree root: a later relative step works.
        assert await transport.list("/DATA") == []
    finally:
        await transport.close()
    assert caught.value.failure is Failure.REFUSED and not caught.value.retriable
    assert str(caught.value).startswith("server 1: /NOPE: list refused (550")


# --------------------------------------------------------------------------- ProFTPD


@pytest.fixture
def proftpd(peer_pool: PeerPool, certs: Certs) -> Target:
    return _target("proftpd-ftp", peer_pool, certs)


def test_proftpd_quirk_holds(proftpd: Target) -> None:
    (proftpd.tree / "DATA" / NAME).write_bytes(b"x" * 1234)
    with _raw_ftp(proftpd) as ftp:
        ftp.voidcmd("TYPE I")
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            list(ftp.mlsd("NOPE"))
        with pytest.raises(ftplib.error_perm, match=r"^550.*ASCII"):
            ftp.sendcmd(f"SIZE DATA/{NAME}")


async def test_proftpd_size_after_a_refused_listing(proftpd: Target) -> None:
    (proftpd.tree / "DATA" / NAME).write_bytes(b"x" * 1234)
    transport = proftpd.transport()
    await transport.connect()
    try:
        with pytest.raises(TransportError) as caught:
            await transport.list("/NOPE")
        assert caught.value.failure is Failure.REFUSED
        assert await transport.size(f"/DATA/{NAME}") == 1234
    finally:
        await transport.close()


# --------------------------------------------------------------------------- OpenSSH


@pytest.fixture
def sshd(peer_pool: PeerPool, certs: Certs) -> Target:
    return _target("sshd-rsa", peer_pool, certs)


async def test_sshd_shows_its_rsa_key_by_default(sshd: Target) -> None:
    async with asyncssh.connect("127.0.0.1", _server(sshd).port, username="sunpm",
                                password="secret", known_hosts=None, client_keys=None,
                                agent_path=None, config=[], preferred_auth="password") as conn:
        key = conn.get_server_host_key()
    assert key is not None and key.get_algorithm() == "ssh-rsa"


@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa", "rsa"])
async def test_sshd_fingerprint_of_any_key_type_is_accepted(sshd: Target, key_type: str) -> None:
    fingerprint = _server(sshd).fingerprints[key_type]  # as `ssh-keygen -lf` prints it
    transport = sshd.transport(host_key=fingerprint)
    await transport.connect()
    try:
        assert await transport.list("/DATA") == []
    finally:
        await transport.close()


async def test_sshd_fingerprint_of_no_key_of_it_is_refused(sshd: Target, certs: Certs) -> None:
    other = asyncssh.import_public_key(certs.other_host_key_line).get_fingerprint("sha256")
    transport = sshd.transport(host_key=other)
    with pytest.raises(TransportError) as caught:
        await transport.connect()
    await transport.close()
    assert caught.value.failure is Failure.TRUST and not caught.value.retriable
    assert "does not match FTP_HostKey" in str(caught.value)


# --------------------------------------------------------------------------- Apache


@pytest.fixture(params=["apache-basic", "apache-digest"])
def apache(request: pytest.FixtureRequest, peer_pool: PeerPool, certs: Certs) -> Target:
    return _target(request.param, peer_pool, certs)


def _head(target: Target, path: str) -> httpx.Response:
    auth: httpx.Auth = (httpx.DigestAuth("sunpm", "secret") if target.server.endswith("digest")
                        else httpx.BasicAuth("sunpm", "secret"))
    context = ssl.create_default_context(cafile=str(target.certs.dir / target.certs.ca))
    with httpx.Client(verify=context, auth=auth, trust_env=False) as client:
        return client.head(target.settings.http_url + path)


async def test_apache_empty_file_is_zero_bytes_not_absent(apache: Target) -> None:
    (apache.tree / "CMD" / "WPM00C44F_cmd.json").write_bytes(b"")
    (apache.tree / "CMD" / "one.json").write_bytes(b"[")
    head = _head(apache, "/CMD/WPM00C44F_cmd.json")
    assert head.status_code == 200 and "content-length" not in head.headers
    transport = apache.transport()
    await transport.connect()
    try:
        assert await transport.size("/CMD/WPM00C44F_cmd.json") == 0
        assert await transport.size("/CMD/one.json") == 1
        assert await transport.size("/CMD/absent.json") is None
        assert await transport.size("/CMD") is None  # a folder is no file
    finally:
        await transport.close()


async def test_apache_put_into_an_unwritable_folder_is_refused_not_busy(apache: Target) -> None:
    folder = apache.tree / "LOG"
    folder.chmod(0o555)  # Apache writes as www-data
    transport = apache.transport()
    await transport.connect()
    try:
        with pytest.raises(TransportError) as caught:
            await transport.upload("/LOG/WPM00C44F_LOG_210202_084443.log.gz", b"log",
                                   two_step=True)
        # The connection goes on: another folder takes uploads.
        await transport.upload(f"/DATA/{NAME}", b"data", two_step=True)
    finally:
        await transport.close()
        folder.chmod(0o777)
    err = caught.value
    assert str(err).startswith("server 1: /LOG: upload refused (500 ")
    assert err.failure is Failure.REFUSED and not err.retriable
    assert list(folder.iterdir()) == []
    assert (apache.tree / "DATA" / NAME).read_bytes() == b"data"


async def test_sshd_reconnect_asks_for_the_pinned_key_type_first(sshd: Target) -> None:
    server = _server(sshd)
    transport = sshd.transport(host_key=server.fingerprints["ed25519"])
    refusals = []
    for _ in range(2):
        before = _refused_keys(server)
        await transport.connect()
        await transport.close()
        refusals.append(await _settled_count(server, before))
    # The first connect meets the RSA key and refuses it; the second asks for Ed25519 at once.
    assert refusals == [1, 0]


def _refused_keys(server: RealServer) -> int:
    return sum(p.read_text(errors="replace").count("Host key is not trusted")
               for p in server.logs if p.exists())


async def _settled_count(server: RealServer, before: int) -> int:
    """Refusals logged since `before`, once sshd has had time to write its log line."""
    for _ in range(40):
        count = _refused_keys(server) - before
        if count:
            return count
        await asyncio.sleep(0.05)
    return 0
