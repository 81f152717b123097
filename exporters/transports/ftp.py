"""`ftp`: plain FTP with the standard library's `ftplib`, run off the event loop.

Why `ftplib` rather than aioftp: it is in the standard library, it speaks explicit FTPS (`ftps.py`)
with the `ssl` module's certificate and host name checks, and the servers sunpm meets (vsftpd,
ProFTPD, FileZilla, IIS) are tested against it for decades. Each call runs in a worker thread; the
event loop only waits, inside an `asyncio.timeout` that is pushed back every time a block moves, so
a long upload that makes progress is never cut while a stalled one is (docs/behaviour.md §4.5: "60 s
without progress"). The sockets carry the same timeout as a second guard.

Peer quirks handled here:
- `SIZE` is refused in ASCII mode by several servers (pyftpdlib, ProFTPD): the session runs in
  binary mode (`TYPE I`) from login on.
- `RNTO` over an existing name replaces it on Unix servers but is refused by some (IIS, FileZilla):
  when it is refused and the final name exists, the old file is deleted and the rename retried
  (docs/behaviour.md §4.2 step 8: FTP renames with `RNFR`/`RNTO`).
- `MLSD` gives size and time in one listing; servers without it (500/502/504) fall back to `NLST`
  then `SIZE` and `MDTM` per file. `OPTS MLST` (asking for the facts wanted) is sent on its own:
  vsftpd answers it `501 Option not understood`, which must not read as a refused listing.
- vsftpd answers `NLST` of a missing folder with 226 and an empty list: an empty `NLST` answer is
  checked with `CWD` into the folder (and back), so "missing" stays a refusal, not "empty".
- A listing switches to ASCII (`TYPE A`); ProFTPD then refuses `SIZE` (`550 SIZE not allowed in
  ASCII mode`). `TYPE I` is restored after every listing, refused ones included.
- A server may still be writing a cut upload's `.tmp` from data it had buffered when the next
  upload of the same name starts; two-step uploads delete a stale `.tmp` first so that the old
  writer ends up in an unlinked file instead of the one renamed to the final name. One-step
  uploads delete it only when told an earlier upload of the name may have been cut
  (`after_cut`), so a `.tmp` left before two-step sending was switched off goes too.
- Active mode (`FTP_Passive=0`): ftplib listens for the data connection on every interface and
  takes the first that comes; only one from the server's address is taken here, others are
  closed with a WARNING.
- Passive replies carrying a private address are ignored in favour of the control connection's
  host (`ftplib` default), which NAT'ed servers need.
- Hostile servers (docs/behaviour.md §4.5): a download stops as soon as it passes its cap (the data
  connection is cut and the transfer's reply read, so the control connection stays in step); a
  listing stops at 10,000 lines or 10 MiB, a listing line over 8,192 bytes (`ftplib`'s limit,
  which would leave the 226 reply unread) is skipped, and names that are not UTF-8 are decoded with
  replacement characters instead of failing the listing; a multi-line reply stops at 64 KiB.
  Progress that keeps a transfer or a listing alive is at least 1 KiB moved (an upload's bytes
  count as the server acknowledges them, Linux `TCP_INFO` polled each second, not only as 64 KiB
  blocks are handed over, and its last bytes, still queued once handed over, as they leave; a
  listing without `MLSD` counts the bytes of its `SIZE` and `MDTM` commands and replies, not
  the names done),
  so a server trickling bytes or answering each command slowly times out and a long listing
  that keeps coming does not. An `MLSD` size fact
  that is not plain digits reads as 0 (unknown), not as a failed listing. Any error that is not a server reply (a reply line too long or not text, a protocol
  surprise) drops the connection, whose state is then unknown.
- Preliminary replies (1xx) after a transfer's data (a restart marker `110`, a second `150`) are
  passed over, up to 8, until the completion reply: read as the completion, they failed an
  upload as a protocol error, retried only an hour later. A `120` greeting is passed over too
  until the `220` (RFC 959 §5.4).
- Reply codes: 530 authentication; 550/553/450 refused (missing directory or right), and 501
  too (pyftpdlib's answer to `MLSD` of a missing directory); 452/552 storage full (retriable);
  421/425/426 connection lost (retriable). pyftpdlib answers a full
  disk with `426 transfer aborted` rather than 452, so it reads as a lost connection: retriable
  either way.
"""

from __future__ import annotations

import asyncio
import builtins
import calendar
import contextlib
import fcntl
import ftplib
import io
import posixpath
import re
import socket
import ssl
import struct
import termios
import time
from collections.abc import Callable
from typing import BinaryIO, Final, Protocol, TypeVar, cast

from config.model import ServerSettings

from ._base import (
    DEFAULT_TIMEOUTS,
    DOWNLOAD_MAX_BYTES,
    LISTING_MAX_ENTRIES,
    PROGRESS_BYTES,
    DownloadTooLarge,
    Failure,
    RemoteFile,
    Timeouts,
    TransportError,
    capped_listing,
    check_size,
    check_tree_path,
    final_and_temp,
    is_plain_name,
    log,
    stale_temp,
    tcp_bytes_acked,
)

T = TypeVar("T")


class Progress(Protocol):
    """Told what moved; a call without a count is a step worth a whole progress unit."""

    def __call__(self, moved: int = PROGRESS_BYTES) -> None: ...


_BLOCK_BYTES: Final = 64 * 1024
DEFAULT_PORT: Final = 21
_MAX_LINE: Final = ftplib.MAXLINE             # 8,192 bytes
_LISTING_MAX_BYTES: Final = 10 << 20
_REPLY_MAX_BYTES: Final = 64 << 10
_RESYNC_S: Final = 10.0                       # waiting for the reply of a cut transfer
_DRAIN_POLL_S: Final = 0.1
_PROGRESS_POLL_S: Final = 1.0                # acknowledged bytes looked at
_PRELIMINARY_MAX: Final = 8                   # further 1xx replies passed over after a transfer
_FOREIGN_MAX: Final = 8                       # active-mode data connections from elsewhere


class _ServerOnly(socket.socket):
    """The listening socket of active mode (`FTP_Passive=0`), which ftplib binds on every
    interface: a connection from elsewhere than the server (a host racing it to the port, to
    get an upload or feed a download) is closed, and the next one awaited."""

    server_host = ""
    server_number = 0

    def accept(self) -> tuple[socket.socket, object]:
        for _ in range(_FOREIGN_MAX):
            conn, address = super().accept()
            if isinstance(address, tuple) and address[0] == self.server_host:
                return conn, address
            conn.close()
            log.warning("server %d: data connection from %s, not the server; closed",
                        self.server_number, address[0] if isinstance(address, tuple) else "?")
        raise ftplib.error_proto(f"{_FOREIGN_MAX} data connections from elsewhere than the "
                                 "server")


class CappedLines(ftplib.FTP):
    """`retrlines` (the listings: `MLSD`, `NLST`, `LIST`) with the caps of docs/behaviour.md §4.5,
    transfer replies past preliminary ones, and in active mode the data connection from the
    server only; ftps.py's client mixes it in too."""

    server: int = 0
    # Told the bytes of each listing line and control line as they move: a long listing that
    # keeps coming is progress (docs/behaviour.md §4.5), the operation sets it for its own call.
    moved: Callable[[int], object] = staticmethod(lambda count: None)

    def retrlines(self, cmd: str, callback: Callable[[str], object] | None = None) -> str:
        assert callback is not None, "listings always collect their lines"
        self.sendcmd("TYPE A")
        lines = total = skipped = 0
        cut = False
        with self.transfercmd(cmd) as conn, conn.makefile("rb") as fp:
            while True:
                raw = fp.readline(_MAX_LINE + 1)
                total += len(raw)
                self.moved(len(raw))
                if not raw or total > _LISTING_MAX_BYTES or lines == LISTING_MAX_ENTRIES:
                    cut = bool(raw)
                    break
                if len(raw) > _MAX_LINE and not raw.endswith(b"\n"):
                    skipped += 1  # the rest of the line follows: read and dropped
                    while raw and not raw.endswith(b"\n") and total <= _LISTING_MAX_BYTES:
                        raw = fp.readline(_MAX_LINE + 1)
                        total += len(raw)
                        self.moved(len(raw))
                    continue
                callback(raw.decode(self.encoding, "replace").rstrip("\r\n"))
                lines += 1
            if not cut and isinstance(conn, ssl.SSLSocket):
                conn.unwrap()  # as ftplib: a clean TLS close before the server's reply
        if skipped:
            log.warning("server %d: %s: %d listing lines over %d bytes; ignored", self.server,
                        cmd, skipped, _MAX_LINE)
        if cut:
            log.warning("server %d: %s: listing stopped at %d entries or %d MiB", self.server,
                        cmd, LISTING_MAX_ENTRIES, _LISTING_MAX_BYTES >> 20)
            return end_cut_transfer(self)
        return transfer_reply(self)

    def putline(self, line: str) -> None:
        super().putline(line)
        self.moved(len(line) + 2)

    def getline(self) -> str:
        # Control lines count too: a listing without `MLSD` is a `SIZE` and an `MDTM` per name,
        # and a server answering each slowly must still move 1 KiB per period to go on.
        line = super().getline()
        self.moved(len(line) + 2)
        return line

    def retrbinary(self, cmd: str, callback: Callable[[bytes], object],
                   blocksize: int = 8192, rest: int | str | None = None) -> str:
        """ftplib's, with the completion reply read by `transfer_reply`."""
        self.voidcmd("TYPE I")
        with self.transfercmd(cmd, rest) as conn:
            while data := conn.recv(blocksize):
                callback(data)
            if isinstance(conn, ssl.SSLSocket):
                conn.unwrap()  # as ftplib: a clean TLS close before the server's reply
        return transfer_reply(self)

    def getmultiline(self) -> str:
        """ftplib's, with the reply bounded: an endless `220-` banner is a protocol error, not
        a string that grows until memory runs out."""
        line = self.getline()
        if line[3:4] == "-":
            code, total = line[:3], len(line)
            while True:
                nextline = self.getline()
                total += len(nextline)
                if total > _REPLY_MAX_BYTES:
                    raise ftplib.error_proto(f"{code} reply longer than "
                                             f"{_REPLY_MAX_BYTES >> 10} KiB")
                line = line + "\n" + nextline
                if nextline[:3] == code and nextline[3:4] != "-":
                    break
        return line

    def makeport(self) -> socket.socket:
        """ftplib's, taking in active mode the data connection from the server only."""
        sock = super().makeport()
        if self.sock is None:
            return sock
        timeout = sock.gettimeout()
        listener = _ServerOnly(sock.family, sock.type, sock.proto, fileno=sock.detach())
        listener.settimeout(timeout)
        listener.server_host = self.sock.getpeername()[0]
        listener.server_number = self.server
        return listener


def transfer_reply(ftp: ftplib.FTP) -> str:
    """The completion reply of a transfer, past further preliminary replies: a server may send
    a restart marker (`110`) or a second `150`/`125` after the data (RFC 959 lets 1xx precede
    the completion reply), and `voidresp` read that as a protocol error, which failed the
    session non-retriably. At most `_PRELIMINARY_MAX`, so that a server sending them forever
    is a protocol error soon, not a wait."""
    for _ in range(_PRELIMINARY_MAX + 1):
        reply = ftp.getresp()  # 4xx and 5xx raise here
        if not reply.startswith("1"):
            if not reply.startswith("2"):
                raise ftplib.error_reply(reply)
            return reply
    raise ftplib.error_proto(f"more than {_PRELIMINARY_MAX} preliminary replies after a "
                             "transfer")


def _greeting(ftp: ftplib.FTP) -> None:
    """Wait past a preliminary greeting: RFC 959 §5.4 lets a server answer a connection `120`
    (ready in n minutes), then `220`. Taken as the greeting, the 220 was read as the answer to
    `USER` and every later reply was one command late. At most `_PRELIMINARY_MAX` of them."""
    for _ in range(_PRELIMINARY_MAX):
        if not ftp.welcome or not ftp.welcome.startswith("1"):
            return
        ftp.welcome = ftp.getresp()  # 421 and other refusals raise here
    raise ftplib.error_proto(f"more than {_PRELIMINARY_MAX} preliminary greetings")


def end_cut_transfer(ftp: ftplib.FTP) -> str:
    """Read the reply of a transfer whose data connection we closed early (226, or 426/451
    from a server that noticed), so the next command gets its own reply; a server that does not
    answer soon is given up: the connection is cut and the next operation fails retriably."""
    sock = ftp.sock
    try:
        if sock is not None:
            sock.settimeout(min(_RESYNC_S, ftp.timeout or _RESYNC_S))
        reply = ftp.getline()
        total = len(reply)
        # A multi-line reply, or a preliminary one before the completion (`transfer_reply`).
        while reply[3:4] == "-" or not reply[:3].isdigit() or reply.startswith("1"):
            reply = ftp.getline()
            total += len(reply)
            if total > _REPLY_MAX_BYTES:  # bounded as any reply (CappedLines.getmultiline)
                raise ftplib.error_proto(f"reply longer than {_REPLY_MAX_BYTES >> 10} KiB")
        if sock is not None:
            sock.settimeout(ftp.timeout)
        return reply
    except (OSError, EOFError, ftplib.Error, ValueError):
        _abort(ftp)
        raise


class _TrackedFtp(CappedLines):
    """Remembers the open data connection so that an abort can cut it too."""

    data_conn: socket.socket | None = None

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int]:
        conn, size = super().ntransfercmd(cmd, rest)
        self.data_conn = conn
        return conn, size  # type: ignore[return-value]


class FtpTransport:
    """FTP file server: `FTP_Host`, `FTP_Port`, `FTP_User`, `FTP_Password`, `FTP_RootDir`,
    `FTP_Passive`."""

    def __init__(self, settings: ServerSettings, *, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> None:
        self.server = settings.slot
        self._settings = settings
        self._timeouts = timeouts
        self._root = settings.root_dir or "/"
        self._ftp: ftplib.FTP | None = None
        # ftplib objects are not thread-safe and FTP is one command at a time anyway.
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ hooks for ftps

    def _new_client(self) -> ftplib.FTP:
        return _TrackedFtp()

    def _secure_login(self, ftp: ftplib.FTP) -> None:
        ftp.login(self._settings.user, self._settings.password)

    # ------------------------------------------------------------------ operations

    async def connect(self) -> None:
        await self.close()
        ftp = self._new_client()
        if isinstance(ftp, CappedLines):
            ftp.server = self.server
        port = self._settings.port or DEFAULT_PORT

        def open_session(progress: Progress) -> None:
            ftp.connect(self._settings.host, port, timeout=self._timeouts.connect_s)
            progress()
            _greeting(ftp)
            self._secure_login(ftp)
            ftp.set_pasv(self._settings.passive)
            ftp.timeout = self._timeouts.operation_s  # data connections use this
            if ftp.sock is not None:
                ftp.sock.settimeout(self._timeouts.operation_s)
            ftp.voidcmd("TYPE I")
            ftp.cwd(self._root)
        self._ftp = ftp
        try:
            await self._call("connect", "/", open_session, limit_s=self._timeouts.connect_s)
        except BaseException:
            self._ftp = None
            _abort(ftp)
            raise

    async def list(self, directory: str) -> builtins.list[RemoteFile]:
        remote = self._remote("list", directory)

        def scan(progress: Progress) -> builtins.list[RemoteFile]:
            ftp = self._client("list", directory)
            if isinstance(ftp, CappedLines):
                ftp.moved = progress
            try:
                entries = _mlsd(ftp, remote)
            except ftplib.error_perm as err:
                _binary_again(ftp)
                if not str(err).startswith(_NO_SUCH_COMMAND):
                    raise
                return self._list_without_mlsd(ftp, directory, remote)
            finally:
                if isinstance(ftp, CappedLines):
                    del ftp.moved  # back to the class's: this call's deadline is gone
            ftp.voidcmd("TYPE I")  # listings switch to ASCII; SIZE needs binary
            files = [RemoteFile(name=name, size=_fact_size(facts.get("size", "")),
                                mtime_s=_parse_mdtm(facts.get("modify", "")))
                     for name, facts in entries if facts.get("type", "file") == "file"]
            return capped_listing(self.server, directory, files)
        return await self._call("list", directory, scan)

    def _list_without_mlsd(self, ftp: ftplib.FTP, directory: str,
                           remote: str) -> builtins.list[RemoteFile]:
        files = []
        try:
            names = ftp.nlst(remote)
        except ftplib.error_perm:
            _binary_again(ftp)
            raise
        ftp.voidcmd("TYPE I")
        if not names:
            # vsftpd lists a missing folder as empty: make sure it is there (550 otherwise).
            ftp.cwd(remote)
            ftp.cwd(self._root)
        listed = [posixpath.basename(entry) for entry in names]
        plain = [name for name in listed if is_plain_name(name)]
        if len(plain) < len(listed):  # never used in a command: refused before any use
            log.warning("server %d: %s: %d listed names are not plain file names; ignored",
                        self.server, directory, len(listed) - len(plain))
        for name in plain:
            full = posixpath.join(remote, name)
            size = _size_or_none(ftp, full)
            if size is None:  # a directory, or gone meanwhile
                continue
            try:
                mtime = _parse_mdtm(ftp.voidcmd("MDTM " + full)[4:].strip())
            except ftplib.error_perm:
                mtime = None
            files.append(RemoteFile(name=name, size=size, mtime_s=mtime))
        return capped_listing(self.server, directory, files)

    async def download(self, path: str, *, max_bytes: int = DOWNLOAD_MAX_BYTES) -> bytes:
        out = io.BytesIO()
        await self.download_to(path, out, max_bytes=max_bytes)
        return out.getvalue()

    async def download_to(self, path: str, out: BinaryIO, *,
                          max_bytes: int = DOWNLOAD_MAX_BYTES) -> int:
        remote = self._remote("download", path)

        def fetch(progress: Progress) -> int:
            received = 0

            def sink(block: bytes) -> None:
                nonlocal received
                received += len(block)
                check_size(self.server, path, received, max_bytes)
                out.write(block)
                progress(len(block))
            ftp = self._client("download", path)
            try:
                ftp.retrbinary("RETR " + remote, sink, _BLOCK_BYTES)
            except DownloadTooLarge:
                try:
                    end_cut_transfer(ftp)
                except (OSError, EOFError, ftplib.Error, ValueError):
                    self._ftp = None  # cut by end_cut_transfer: the next operation reconnects
                raise
            return received
        return await self._call("download", path, fetch)

    async def size(self, path: str) -> int | None:
        remote = self._remote("size", path)
        return await self._call("size", path,
                                lambda _: _size_or_none(self._client("size", path), remote))

    async def upload(self, path: str, data: bytes, *, two_step: bool,
                     after_cut: bool = False) -> None:
        final, written = final_and_temp(self._remote("upload", path), two_step)
        stale = stale_temp(final, two_step, after_cut)

        def store(progress: Progress) -> None:
            ftp = self._client("upload", path)
            if stale is not None:
                _remove_stale(ftp, stale)
            _store(ftp, "STOR " + written, data, progress)
            if written != final:
                _rename_replacing(ftp, written, final)
        await self._call("upload", path, store)

    async def delete(self, path: str) -> None:
        remote = self._remote("delete", path)
        await self._call("delete", path, lambda _: self._client("delete", path).delete(remote))

    async def close(self) -> None:
        ftp, self._ftp = self._ftp, None
        if ftp is None:
            return
        try:
            async with asyncio.timeout(min(5.0, self._timeouts.operation_s)):
                await asyncio.to_thread(ftp.quit)
        except (TimeoutError, OSError, EOFError, ftplib.Error):
            pass  # a polite QUIT is all we try; the sockets are closed below either way
        finally:
            _abort(ftp)

    # ------------------------------------------------------------------ plumbing

    def _remote(self, op: str, path: str) -> str:
        check_tree_path(self.server, op, path)
        return posixpath.join(self._root, path.lstrip("/"))

    def _client(self, op: str, path: str) -> ftplib.FTP:
        if self._ftp is None:
            raise TransportError(self.server, op, "not connected",
                                 failure=Failure.CONNECTION_LOST, path=path)
        return self._ftp

    async def _call(self, op: str, path: str, fn: Callable[[Progress], T], *,
                    limit_s: float | None = None) -> T:
        """Run `fn` in a thread; time out after `limit_s` without progress, cutting the sockets so
        the thread ends too (no thread outlives its call)."""
        limit = self._timeouts.operation_s if limit_s is None else limit_s
        loop = asyncio.get_running_loop()
        async with self._lock:
            deadline = asyncio.timeout(limit)
            live = True
            moved = 0

            def push() -> None:
                if live and not deadline.expired():  # an expiring timeout cannot be moved
                    deadline.reschedule(loop.time() + limit)

            def progress(count: int = PROGRESS_BYTES) -> None:
                # Runs in the worker thread; a trickle below 1 KiB per period pushes nothing.
                nonlocal moved
                moved += count
                if moved >= PROGRESS_BYTES:
                    moved = 0
                    loop.call_soon_threadsafe(push)
            job = loop.run_in_executor(None, fn, cast(Progress, progress))
            watcher = asyncio.create_task(self._watch_acked(limit, push))
            try:
                async with deadline:
                    return await asyncio.shield(job)
            except TimeoutError as err:
                if job.done() and job.exception() is not None:
                    raise self._map(op, path, job.exception()) from err  # type: ignore[arg-type]
                await self._abort_and_join(job)
                raise TransportError(self.server, op, f"no progress for {limit:g} s",
                                     failure=Failure.TIMEOUT, path=path) from err
            except asyncio.CancelledError:
                await self._abort_and_join(job)
                raise
            except TransportError:
                raise
            except (OSError, EOFError, ftplib.Error, ValueError) as err:
                raise self._map(op, path, err) from err
            finally:
                live = False
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    async def _watch_acked(self, limit: float, push: Callable[[], None]) -> None:
        """Call `push` each time the peer acknowledged 1 KiB more on the data connection (Linux
        `TCP_INFO`, polled): once the kernel's send buffer is full, an upload hands over a block
        only when a whole block has left, which a slow link that moves takes minutes to do
        (docs/behaviour.md §4.5). Where the system does not tell, blocks count as handed over."""
        ftp = self._ftp
        conn: object = None
        last: int | None = None
        while True:
            await asyncio.sleep(min(_PROGRESS_POLL_S, limit / 4))
            current = getattr(ftp, "data_conn", None)
            acked = tcp_bytes_acked(current)
            if current is not conn or acked is None or last is None:
                conn, last = current, acked  # a new data connection starts its own count
                continue
            if acked - last >= PROGRESS_BYTES:
                last = acked
                push()

    async def _abort_and_join(self, job: asyncio.Future[T]) -> None:
        ftp, self._ftp = self._ftp, None
        if ftp is not None:
            _abort(ftp)
        # The thread now fails fast on its closed socket; wait so that it does not outlive us.
        await asyncio.wait([job])
        if not job.cancelled():
            job.exception()  # retrieved: it is the expected fallout of the abort

    def _map(self, op: str, path: str, err: BaseException) -> TransportError:
        failure, detail = classify(err)
        if failure in (Failure.CONNECTION_LOST, Failure.TIMEOUT) or not isinstance(
                err, (ftplib.error_perm, ftplib.error_temp)):
            # The control connection is no longer in a known state: anything but a plain
            # refusal may have left a reply unread (a line too long, not text, out of turn).
            ftp, self._ftp = self._ftp, None
            if ftp is not None:
                _abort(ftp)
        return TransportError(self.server, op, detail, failure=failure, path=path)


def classify(err: BaseException) -> tuple[Failure, str]:
    """Map an ftplib, ssl or socket error to a failure and its one-line detail."""
    detail = " ".join(str(err).split())
    if isinstance(err, EOFError):  # ftplib's word for the control connection closed
        return Failure.CONNECTION_LOST, detail or "connection closed by the server"
    detail = detail or type(err).__name__
    if isinstance(err, ftplib.error_perm):
        code = detail[:3]
        if code == "530":
            return Failure.AUTHENTICATION, detail
        if code == "552":
            return Failure.SERVER_FULL, detail
        if code in ("500", "502", "504"):
            return Failure.PROTOCOL, detail
        return Failure.REFUSED, detail
    if isinstance(err, ftplib.error_temp):
        code = detail[:3]
        if code == "452":
            return Failure.SERVER_FULL, detail
        if code == "450":
            return Failure.REFUSED, detail
        if code in ("421", "425", "426"):
            return Failure.CONNECTION_LOST, detail
        return Failure.SERVER_BUSY, detail
    if isinstance(err, (ftplib.error_reply, ftplib.error_proto)):
        return Failure.PROTOCOL, detail
    if isinstance(err, ssl.SSLCertVerificationError):
        return Failure.TRUST, err.verify_message or detail
    if isinstance(err, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return Failure.CONNECTION_LOST, detail
    if isinstance(err, ssl.SSLError):
        return Failure.TRUST, detail
    if isinstance(err, TimeoutError):
        return Failure.TIMEOUT, detail
    if isinstance(err, (ConnectionRefusedError, socket.gaierror)):
        return Failure.UNREACHABLE, detail
    if isinstance(err, OSError) and err.errno in _UNREACHABLE_ERRNOS:
        return Failure.UNREACHABLE, detail
    if isinstance(err, OSError):
        return Failure.CONNECTION_LOST, detail
    return Failure.PROTOCOL, detail


_UNREACHABLE_ERRNOS: Final = frozenset({101, 113})  # ENETUNREACH, EHOSTUNREACH


_NO_SUCH_COMMAND: Final = ("500", "502", "504")
_BYTE_COUNT: Final = re.compile(r"[0-9]{1,19}")
_MLST_FACTS: Final = "type;size;modify;"


def _mlsd(ftp: ftplib.FTP, remote: str) -> builtins.list[tuple[str, dict[str, str]]]:
    """`MLSD` entries; the facts are asked for first, and a server that refuses the asking
    (vsftpd: 501) is asked for the listing anyway, with the facts it gives by default."""
    with contextlib.suppress(ftplib.error_perm):
        ftp.sendcmd("OPTS MLST " + _MLST_FACTS)
    return list(ftp.mlsd(remote))


def _fact_size(text: str) -> int:
    """An `MLSD` size fact; 0 (unknown) unless plain digits of a sane length, so that one absurd
    entry from a hostile server does not fail the whole listing (as WebDAV's sizes)."""
    return int(text) if _BYTE_COUNT.fullmatch(text) else 0


def _binary_again(ftp: ftplib.FTP) -> None:
    """`TYPE I` after a refused listing (see the module docstring); a connection that broke
    meanwhile is reported by the next command, not here."""
    with contextlib.suppress(ftplib.Error, OSError, EOFError):
        ftp.voidcmd("TYPE I")


def _size_or_none(ftp: ftplib.FTP, remote: str) -> int | None:
    try:
        # voidcmd: a reply that is not final (1xx, 3xx) is a protocol error that drops the
        # connection, not a size "absent" with the real answer read by the next command.
        reply = ftp.voidcmd("SIZE " + remote)
    except ftplib.error_perm:
        return None  # absent, or the lookup refused: both count as absent (docs/behaviour.md §5.2)
    try:
        return int(reply[3:].strip())
    except ValueError:
        return None


def _store(ftp: ftplib.FTP, cmd: str, data: bytes, progress: Progress) -> None:
    """`storbinary`, with the bytes still queued in the kernel waited for as progress: on a slow
    link the send buffer may hold more than a minute of the file once the last block was handed
    over, and the server's reply comes only once it has it all."""
    view = memoryview(data)
    with ftp.transfercmd(cmd) as conn:
        # The socket timeout bounds a whole `sendall`, not a wait without progress: a 64 KiB
        # block on a link moving 1 KiB/s was cut at 60 s. The caller's deadline, pushed back as
        # the peer acknowledges bytes, is the guard here; it closes the socket when it expires.
        conn.settimeout(None)
        for offset in range(0, len(data), _BLOCK_BYTES):
            block = view[offset:offset + _BLOCK_BYTES]
            conn.sendall(block)
            progress(len(block))
        conn.settimeout(ftp.timeout)
        _drain(conn, progress)
        if isinstance(conn, ssl.SSLSocket):
            conn.unwrap()  # as ftplib: a clean TLS close before the server's reply
    transfer_reply(ftp)


def _drain(conn: socket.socket, progress: Progress) -> None:
    """Wait until the peer acknowledged every byte sent, telling `progress` as the queue
    shrinks; a stalled peer is ended by the caller's deadline, which closes the socket."""
    if not hasattr(termios, "TIOCOUTQ"):  # Linux's SIOCOUTQ; elsewhere the reply wait must do
        return
    last = -1
    while True:
        queued = struct.unpack("i", fcntl.ioctl(conn.fileno(), termios.TIOCOUTQ,
                                                b"\0\0\0\0"))[0]
        if queued <= 0:
            return
        if 0 <= queued < last:
            progress(last - queued)
        last = queued
        time.sleep(_DRAIN_POLL_S)


def _remove_stale(ftp: ftplib.FTP, stale: str) -> None:
    """Delete a `.tmp` left by a cut upload, so this upload gets a new file: a server still
    draining the cut upload's data writes into the old, unlinked one, not into ours (which is
    about to become the final name). Best effort: absent, or no delete right, is fine."""
    with contextlib.suppress(ftplib.error_perm):
        ftp.delete(stale)


def _rename_replacing(ftp: ftplib.FTP, written: str, final: str) -> None:
    try:
        ftp.rename(written, final)
    except ftplib.error_perm:
        if _size_or_none(ftp, final) is None:
            raise
        ftp.delete(final)
        ftp.rename(written, final)


def _parse_mdtm(text: str) -> float | None:
    """`YYYYMMDDhhmmss[.fff]` in UTC (RFC 3659) to seconds since the epoch."""
    try:
        whole, _, frac = text.partition(".")
        parsed = time.strptime(whole, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return calendar.timegm(parsed) + (float("0." + frac) if frac.isdigit() else 0.0)


def _abort(ftp: ftplib.FTP) -> None:
    """Cut the control and data sockets at once: wakes a thread blocked on either."""
    socks = [getattr(ftp, "data_conn", None), ftp.sock]
    for sock in socks:
        if sock is None:
            continue
        with contextlib.suppress(OSError):  # already closed by the peer
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    ftp.close()
