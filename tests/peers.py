"""Real servers on 127.0.0.1 for transport and session tests: FTP, FTPS, SFTP, WebDAV, MQTT.

Import side (from any test, `tests/` is on sys.path):
- `make_certs(dir) -> Certs`: a trustme CA, a server certificate for 127.0.0.1 only (so
  `localhost` is a host-name mismatch), a client certificate, a second unrelated CA, and SSH host
  keys; all as files in `dir`.
- `run_peer(kind, root, certs, rate_bps=0, basic_only=False) -> Peer`, a context manager that runs
  `kind` in ("ftp", "ftps", "sftp", "webdav") as a child process serving `root` on an ephemeral
  port; `Peer.kill()` SIGKILLs it (a server dying mid-operation). Accounts: `sunpm`/`secret` may
  do everything, `reader`/`secret` may only list and read (FTP, SFTP). WebDAV serves `root` at `/`
  and, read-only, at `/ro`; Digest and Basic are accepted (`basic_only`: Basic alone).
  `no_rename_overwrite`: renaming onto an existing name is refused, as by IIS (FTP `RNTO` 550)
  or by a plain SFTP v3 server (no `posix-rename@openssh.com`). `no_mlsd`: an FTP server
  without `MLSD`.
  `rate_bps` throttles uploads on the server side so a test can act mid-transfer. Any file whose
  name contains `DISKFULL` is written to /dev/full, so the server meets ENOSPC as on a full disk.
  Hostile variants: `endless_challenge` (WebDAV: a request without credentials is challenged
  with a 401 whose body never ends) and `reply_delay_s` (FTP/FTPS: each reply after login waits
  that long, a server answering slowly on its control connection).
- `slow_link(port, rate_bps)`: an async context manager giving a port that forwards to `port`,
  client to server at `rate_bps` through small buffers (a slow link seen by the client's kernel).
- `run_broker(dir, certs) -> Broker`: mosquitto with three listeners: `plain_port` (anonymous),
  `auth_port` (user `sunpm`/`secret`), `tls_port` (TLS, client certificate required); persistent
  sessions survive `restart()`. `pause()`/`resume()` SIGSTOP/SIGCONT it, `kill()` SIGKILLs it.

Script side: `python tests/peers.py ftp|ftps|sftp|webdav --root DIR --certs DIR [--rate BPS]
[--basic-only] [--port N]` prints `PORT <n>` once listening and serves until killed or until its
standard input closes (so a crashed test run leaves no server behind).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncssh

USERS = {"sunpm": "secret", "reader": "secret"}
DISK_FULL_MARK = "DISKFULL"
READ_ONLY_USER = "reader"
_START_TIMEOUT_S = 20.0
# The receive buffer of a paced server side: Linux's least (some 2.3 KiB once it doubled it),
# so that the window opens a KiB at a time, at the pace the server reads, and little of what
# the sender saw acknowledged is still to be read when its last byte is.
_PACED_RECEIVE_BUFFER = 2048


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True, slots=True)
class Certs:
    dir: Path
    ca: str = "ca.pem"                 # file names inside `dir` (what *_CaFile keys name)
    other_ca: str = "other-ca.pem"
    server_cert: str = "server.pem"
    server_key: str = "server.key"
    client_cert: str = "client.pem"
    client_key: str = "client.key"
    host_key: str = "ssh_host_key"
    host_key_line: str = ""            # OpenSSH public key line of `host_key`
    host_key_fingerprint: str = ""     # SHA256:<b64>
    other_host_key_line: str = ""      # a key the SFTP peer does not have


def make_certs(directory: Path) -> Certs:
    import asyncssh
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    other.cert_pem.write_to_path(str(directory / "other-ca.pem"))
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(str(directory / "server.pem"), append=True)
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    client = ca.issue_cert("sunpm-client@example.org")
    client.cert_chain_pems[0].write_to_path(str(directory / "client.pem"))
    client.private_key_pem.write_to_path(str(directory / "client.key"))
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(directory / "ssh_host_key"))
    other_key = asyncssh.generate_private_key("ssh-ed25519")
    for path in directory.iterdir():
        path.chmod(0o644)  # mosquitto may read them under its own account
    return Certs(dir=directory,
                 host_key_line=key.export_public_key().decode().strip(),
                 host_key_fingerprint=key.get_fingerprint("sha256"),
                 other_host_key_line=other_key.export_public_key().decode().strip())


# --------------------------------------------------------------------------- file servers


@dataclass(slots=True)
class Peer:
    kind: str
    root: Path
    port: int
    proc: subprocess.Popen[str]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@contextlib.contextmanager
def run_peer(kind: str, root: Path, certs: Certs, *, rate_bps: int = 0,
             basic_only: bool = False, no_rename_overwrite: bool = False,
             no_mlsd: bool = False, endless_challenge: bool = False,
             reply_delay_s: float = 0.0) -> Iterator[Peer]:
    cmd = [sys.executable, str(Path(__file__).resolve()), kind, "--root", str(root),
           "--certs", str(certs.dir), "--rate", str(rate_bps),
           "--reply-delay", str(reply_delay_s)]
    if endless_challenge:
        cmd.append("--endless-challenge")
    if basic_only:
        cmd.append("--basic-only")
    if no_rename_overwrite:
        cmd.append("--no-rename-overwrite")
    if no_mlsd:
        cmd.append("--no-mlsd")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = _read_port(proc)
        yield Peer(kind=kind, root=root, port=port, proc=proc)
    finally:
        _end(proc)


def _read_port(proc: subprocess.Popen[str]) -> int:
    stdout = proc.stdout
    assert stdout is not None
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(_START_TIMEOUT_S)
    line = found[0] if found else ""
    if not line.startswith("PORT "):
        raise RuntimeError(f"peer did not start: {line!r} (exit {proc.poll()})")
    return int(line.split()[1])


def _end(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
    proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


# --------------------------------------------------------------------------- MQTT broker


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(slots=True)
class Broker:
    dir: Path
    certs: Certs
    plain_port: int = 0
    auth_port: int = 0
    tls_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    def start(self) -> None:
        if not self.plain_port:
            self.plain_port, self.auth_port, self.tls_port = free_ports(3)
            self._write_config()
        self._log = open(self.dir / "mosquitto.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.dir / "mosquitto.conf")],
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + _START_TIMEOUT_S
        for port in (self.plain_port, self.auth_port, self.tls_port):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError("mosquitto exited: "
                                       + (self.dir / "mosquitto.log").read_text()[-2000:])
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)

    def _write_config(self) -> None:
        passwd = self.dir / "passwd"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "sunpm", "secret"],
                       check=True, capture_output=True)
        passwd.chmod(0o644)
        c = self.certs
        (self.dir / "mosquitto.conf").write_text(
            f"""per_listener_settings true
user root
persistence true
persistence_location {self.dir}/
log_dest stdout
log_type error
log_type warning
listener {self.plain_port} 127.0.0.1
allow_anonymous true
listener {self.auth_port} 127.0.0.1
allow_anonymous false
password_file {passwd}
listener {self.tls_port} 127.0.0.1
allow_anonymous true
cafile {c.dir / c.ca}
certfile {c.dir / c.server_cert}
keyfile {c.dir / c.server_key}
require_certificate true
""")

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistent sessions, as on a clean service restart."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


@contextlib.asynccontextmanager
async def slow_link(port: int, rate_bps: int, *, block: int = 4096) -> AsyncIterator[int]:
    """A port forwarding to `port` on 127.0.0.1, client to server at `rate_bps`, reading `block`
    bytes at a time through small buffers (set on the listening socket, so the accepted one has
    them from its first byte and the kernel does not grow them), so that the client's kernel
    sees the link's pace and acknowledges bytes at that pace. Server to client is not paced."""
    pumps: set[asyncio.Task[None]] = set()

    async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, rate: int) -> None:
        try:
            while data := await source.read(block):
                sink.write(data)
                await sink.drain()
                if rate:
                    await asyncio.sleep(len(data) / rate)
        except ConnectionError:
            pass
        finally:
            sink.close()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        pumps.add(asyncio.create_task(pump(reader, up_writer, rate_bps)))
        pumps.add(asyncio.create_task(pump(up_reader, writer, 0)))

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _PACED_RECEIVE_BUFFER)
    listener.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(forward, sock=listener, limit=1024)
    try:
        yield listener.getsockname()[1]
    finally:
        server.close()
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


@contextlib.contextmanager
def syn_dropping_port() -> Iterator[int]:
    """A port on 127.0.0.1 whose host drops the SYNs: a listener whose accept queue is full
    and never accepted from (the kernel then answers no SYN), so a connect to it waits out its
    whole timeout, as toward a host behind a firewall that drops."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    queued = []
    try:
        for _ in range(3):   # the accept queue filled: no SYN is answered any more
            waiting = socket.socket()
            queued.append(waiting)
            waiting.setblocking(False)
            waiting.connect_ex(listener.getsockname())
        yield listener.getsockname()[1]
    finally:
        for sock in (listener, *queued):
            sock.close()


def have_mosquitto() -> bool:
    return shutil.which("mosquitto") is not None and shutil.which("mosquitto_passwd") is not None


@contextlib.contextmanager
def run_broker(directory: Path, certs: Certs) -> Iterator[Broker]:
    directory.mkdir(parents=True, exist_ok=True)
    broker = Broker(dir=directory, certs=certs)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


# --------------------------------------------------------------------------- script side


def _watch_stdin() -> None:
    def watch() -> None:
        while sys.stdin.read(1):
            pass
        os._exit(0)
    threading.Thread(target=watch, daemon=True).start()


def _announce(port: int) -> None:
    print(f"PORT {port}", flush=True)


def _serve_ftp(args: argparse.Namespace, tls: bool) -> None:
    import logging

    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.filesystems import AbstractedFS
    from pyftpdlib.handlers import FTPHandler, ThrottledDTPHandler
    from pyftpdlib.servers import FTPServer

    class FullableFs(AbstractedFS):  # type: ignore[misc]
        def open(self, filename: str, mode: str) -> Any:
            if "w" in mode and DISK_FULL_MARK in os.path.basename(filename):
                return open("/dev/full", mode, buffering=0)
            return super().open(filename, mode)

        def rename(self, src: str, dst: str) -> None:
            if args.no_rename_overwrite and os.path.lexists(dst):
                raise OSError(errno.EEXIST, "File exists")
            super().rename(src, dst)

    logging.basicConfig(level=logging.WARNING)
    authorizer = DummyAuthorizer()
    for user, password in USERS.items():
        perm = "elr" if user == READ_ONLY_USER else "elradfmwMT"
        authorizer.add_user(user, password, str(args.root), perm=perm)
    handler: Any

    class Smooth(ThrottledDTPHandler):  # type: ignore[misc]
        # pyftpdlib's own throttle lets a full second's worth through at once, then sleeps twice
        # as long: too bursty to catch an upload in the middle. This one paces every block.
        # 4 KiB a read: at a few KiB/s the sender sees bytes acknowledged several times a
        # second, not a burst every few seconds.
        ac_in_buffer_size = 4096
        auto_sized_buffers = False
        read_limit = args.rate

        def __init__(self, sock: socket.socket, cmd_channel: Any) -> None:
            # A small receive buffer, so that the pace is the link's, seen by the sender's
            # kernel as on a slow network, not a megabyte acknowledged and read later (at 16 KiB
            # the window opened 24 KiB at once every 1.5 s at 16 KiB/s: no steady pace).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _PACED_RECEIVE_BUFFER)
            super().__init__(sock, cmd_channel)

        def _throttle_bandwidth(self, len_chunk: int, max_speed: int) -> None:
            def unsleep() -> None:
                self.add_channel(events=self.ioloop.READ if self.receive else self.ioloop.WRITE)
            self.del_channel()
            self._cancel_throttler()
            self._throttler = self.ioloop.call_later(len_chunk / max_speed, unsleep,
                                                     _errback=self.handle_error)
    if tls:
        from pyftpdlib.handlers import TLS_DTPHandler, TLS_FTPHandler

        class SmoothTls(TLS_DTPHandler, Smooth):  # type: ignore[misc]
            pass
        handler = type("Handler", (TLS_FTPHandler,), {})
        handler.certfile = str(args.certs / "server.pem")
        handler.keyfile = str(args.certs / "server.key")
        handler.tls_control_required = True
        handler.tls_data_required = True
        dtp: Any = SmoothTls if args.rate else TLS_DTPHandler
    else:
        handler = type("Handler", (FTPHandler,), {})
        dtp = Smooth if args.rate else handler.dtp_handler
    handler.dtp_handler = dtp
    if args.rate:
        class SmallWindow(handler.passive_dtp):  # type: ignore[misc, name-defined]
            # Set on the listening socket, so that the data connection has it from its first
            # byte: set once accepted, the window already offered let 64 KiB through at once,
            # which then took seconds to read before the window opened again.
            def listen(self, num: int) -> None:
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                       _PACED_RECEIVE_BUFFER)
                super().listen(num)
        handler.passive_dtp = SmallWindow
    handler.abstracted_fs = FullableFs
    if args.no_mlsd:  # an older server: listings by NLST only
        handler.proto_cmds = {k: v for k, v in handler.proto_cmds.items() if k != "MLSD"}
    if args.reply_delay:
        base = handler

        class SlowReplies(base):  # type: ignore[misc, valid-type]
            def respond(self, resp: str, *more: Any, **named: Any) -> None:
                if self.authenticated:
                    # Blocks pyftpdlib's one loop: the whole server is that slow, as one
                    # whose disk or link crawls.
                    time.sleep(args.reply_delay)
                super().respond(resp, *more, **named)
        handler = SlowReplies
    handler.auth_failed_timeout = 0.2  # pyftpdlib waits 3 s before answering a bad password
    handler.authorizer = authorizer
    server = FTPServer(("127.0.0.1", args.port), handler)
    _announce(server.address[1])
    server.serve_forever(handle_exit=False)


def password_server(accepts: Callable[[str, str], bool] = lambda username, password: True
                    ) -> type[asyncssh.SSHServer]:
    """An asyncssh server class asking every user for a password, which `accepts` judges
    (by default any)."""
    import asyncssh

    class Server(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            return accepts(username, password)

    return Server


def _serve_sftp(args: argparse.Namespace) -> None:
    import asyncio

    import asyncssh

    Server = password_server(lambda username, password: USERS.get(username) == password)

    class PeerSftp(asyncssh.SFTPServer):
        def __init__(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
            super().__init__(chan, chroot=str(args.root).encode())
            self._read_only = chan.get_extra_info("username") == READ_ONLY_USER
            # asyncssh serves a client's pipelined writes concurrently: pace them one by one.
            self._pace = asyncio.Lock()

        def _check(self) -> None:
            if self._read_only:
                raise asyncssh.SFTPPermissionDenied("Permission denied")

        def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
            if pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC):
                self._check()
                if DISK_FULL_MARK.encode() in path:
                    return open("/dev/full", "wb", buffering=0)
            return super().open(path, pflags, attrs)

        def remove(self, path: bytes) -> None:
            self._check()
            super().remove(path)

        def rename(self, oldpath: bytes, newpath: bytes) -> None:
            self._check()
            # SFTP v3 RENAME, as OpenSSH's sftp-server does it (link then unlink): never replaces.
            if args.no_rename_overwrite and os.path.lexists(self.map_path(newpath)):
                raise asyncssh.SFTPFailure("File exists")
            super().rename(oldpath, newpath)

        def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
            self._check()
            super().posix_rename(oldpath, newpath)

        async def write(self, file_obj: object, offset: int, data: bytes) -> int:
            if not args.rate:
                return int(super().write(file_obj, offset, data))  # type: ignore[arg-type]
            async with self._pace:
                for start in range(0, len(data), 16384):
                    piece = data[start:start + 16384]
                    await asyncio.sleep(len(piece) / args.rate)
                    super().write(file_obj, offset + start, piece)
                    file_obj.flush()  # type: ignore[attr-defined]
            return len(data)

    if args.no_rename_overwrite:
        from asyncssh.sftp import SFTPServerHandler
        SFTPServerHandler._extensions = [
            (name, value) for name, value in SFTPServerHandler._extensions
            if name != b"posix-rename@openssh.com"]

    async def main() -> None:
        server = await asyncssh.listen("127.0.0.1", args.port, server_factory=Server,
                                       server_host_keys=[str(args.certs / "ssh_host_key")],
                                       sftp_factory=PeerSftp, allow_scp=False)
        _announce(server.sockets[0].getsockname()[1])
        await server.wait_closed()
    asyncio.run(main())


def _serve_webdav(args: argparse.Namespace) -> None:
    import logging

    import wsgidav.fs_dav_provider as fs_provider
    from cheroot import wsgi
    from cheroot.ssl.builtin import BuiltinSSLAdapter
    from wsgidav.wsgidav_app import WsgiDAVApp

    def fullable_open(file: str, mode: str = "r", *more: Any) -> Any:
        if "w" in mode and DISK_FULL_MARK in os.path.basename(file):
            return open("/dev/full", mode, buffering=0)
        return open(file, mode, *more)
    fs_provider.open = fullable_open  # the module's file opener

    users = {u: {"password": p} for u, p in USERS.items()}
    app: Any = WsgiDAVApp({
        "provider_mapping": {"/": str(args.root), "/ro": {"root": str(args.root),
                                                          "readonly": True}},
        "simple_dc": {"user_mapping": {"*": users}},
        "http_authenticator": {"accept_basic": True, "accept_digest": not args.basic_only,
                               "default_to_digest": not args.basic_only},
        "verbose": 1,
        "logging": {"enable_loggers": []},
        "dir_browser": {"enable": False},
    })
    logging.getLogger("wsgidav").setLevel(logging.ERROR)
    if args.rate:
        app = _throttled(app, args.rate)
    if args.endless_challenge:
        app = _endless_challenge(app)
    server = wsgi.Server(("127.0.0.1", args.port), app)
    server.ssl_adapter = BuiltinSSLAdapter(str(args.certs / "server.pem"),
                                           str(args.certs / "server.key"))
    server.prepare()
    if args.rate:
        # As the FTP peer's: a small receive buffer (inherited by accepted sockets), so that
        # the pace is the link's, seen by the sender's kernel as on a slow network.
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    _announce(server.bind_addr[1])
    server.serve()


def _throttled(app: Any, rate: int) -> Any:
    class SlowInput:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def read(self, size: int = -1) -> bytes:
            data: bytes = self._inner.read(min(size, 16384) if size and size > 0 else 16384)
            time.sleep(len(data) / rate)
            return data

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        environ["wsgi.input"] = SlowInput(environ["wsgi.input"])
        return app(environ, start_response)
    return wrapped


def _endless_challenge(app: Any) -> Any:
    """A request without credentials gets wsgidav's own 401 and its challenge headers, then a
    body that never ends: only the headers matter to a client answering the challenge."""
    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        if "HTTP_AUTHORIZATION" in environ:
            return app(environ, start_response)
        answer: list[Any] = []

        def keep(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer.extend((status, headers))
            return lambda data: None
        body = app(environ, keep)
        chunks = iter(body)
        first = next(chunks, b"")  # wsgidav answers as its body is first iterated
        status, headers = answer
        if not status.startswith("401"):
            start_response(status, headers)
            return itertools.chain([first], chunks)
        if hasattr(body, "close"):
            body.close()
        start_response(status, [(k, v) for k, v in headers if k.lower() != "content-length"])

        def endless() -> Iterator[bytes]:
            while True:
                yield b"\0" * 65536
        return endless()
    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["ftp", "ftps", "sftp", "webdav"])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--certs", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=int, default=0)
    parser.add_argument("--basic-only", action="store_true")
    parser.add_argument("--no-rename-overwrite", action="store_true")
    parser.add_argument("--no-mlsd", action="store_true")
    parser.add_argument("--endless-challenge", action="store_true")
    parser.add_argument("--reply-delay", type=float, default=0.0)
    args = parser.parse_args()
    _watch_stdin()
    if args.kind in ("ftp", "ftps"):
        _serve_ftp(args, tls=args.kind == "ftps")
    elif args.kind == "sftp":
        _serve_sftp(args)
    else:
        _serve_webdav(args)


if __name__ == "__main__":
    main()
