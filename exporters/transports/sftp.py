"""`sftp`: SFTP (SSH file transfer, protocol 3) with asyncssh, host key checked.

The host key is checked against `FTP_HostKey`, an OpenSSH key line (`ssh-ed25519 AAAA…`, a leading
host field of a known_hosts line is allowed) or a fingerprint `SHA256:<base64>` (docs/formats.md
§4). With `FTP_HostKey` empty an unknown key is refused, unless `FTP_AcceptUnknownHostKey=1`: then
the first key seen is pinned and handed, as an OpenSSH key line, to the caller's `on_host_key_pinned`
callback, which persists it before the connection is used. A mismatch is never retriable.

Peer quirks handled here:
- SFTP v3 `RENAME` fails when the target exists (draft-ietf-secsh-filexfer-02 §6.5). OpenSSH and
  asyncssh servers offer `posix-rename@openssh.com`, which replaces atomically; it is used where
  offered, else the old final name is removed and the rename done (docs/behaviour.md §4.2 step 8),
  which leaves a short moment without the final name but never a partial one.
- Servers map "disk full" to `SSH_FX_FAILURE` with an errno text (OpenSSH: "Failure" only), or to
  `SSH_FX_NO_SPACE_ON_FILESYSTEM`/`SSH_FX_QUOTA_EXCEEDED` (v5+); both are retriable here.
- With `FTP_HostKey` a fingerprint, the key type is unknown, and sshd offers its RSA, ECDSA and
  Ed25519 keys but shows only the one the client prefers (RSA for asyncssh's defaults). A key
  that does not match is therefore not yet a mismatch: the handshake is tried again restricted
  to each other key family the first key was not of, and only when none matches is the key
  refused. (An OpenSSH key line pins its own type, so it needs one handshake.)
- A name listed twice in one `READDIR` answer counts once (a folder cannot hold it twice; seen
  from OpenSSH's internal-sftp run under the tests' nss_wrapper, never from a plain sshd).
- A read returns only once all it asked for (32 KiB) arrived, however many short answers the
  server gives: downloads and listings push their deadline back as the connection receives
  each KiB (Linux `TCP_INFO`), so a slow link that moves is not cut (docs/behaviour.md §4.5).
  A write is confirmed only once its 32 KiB arrived: uploads push their deadline back as the
  peer acknowledges each KiB too.
- `~/.ssh/config`, agents and the user's own keys are never read: the gateway logs in with the
  configured password only, whatever the account it runs under.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import io
import posixpath
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import BinaryIO, Final, TypeVar

with warnings.catch_warnings():
    # asyncssh (and pyOpenSSL, which it imports when present) names cryptography's DSA types at
    # import; cryptography >= 51 deprecates every such access, which printed ten warnings before
    # any sunpm command. Only those are silenced.
    warnings.filterwarnings("ignore", message="DSA is deprecated", category=UserWarning,
                            module=r"(asyncssh|OpenSSL)\.")
    import asyncssh

from config.model import ServerSettings

from ._base import (
    DEFAULT_TIMEOUTS,
    DOWNLOAD_MAX_BYTES,
    LISTING_MAX_ENTRIES,
    PROGRESS_BYTES,
    Failure,
    HostKeyPinned,
    RemoteFile,
    Timeouts,
    TransportError,
    capped_listing,
    check_size,
    check_tree_path,
    final_and_temp,
    stale_temp,
    tcp_bytes_acked,
    tcp_bytes_received,
)

T = TypeVar("T")

DEFAULT_PORT: Final = 22
# Uploads go as writes of 32 KiB, 8 in flight (256 KiB on the way, as far servers need), the
# deadline pushed back as each one is confirmed and as the peer acknowledges each KiB: a link
# slower than 32 KiB a period confirms none for longer than the timeout, yet moves.
_ATTRS_BYTES: Final = 32  # what a listing entry carries besides its names, roughly
_WRITE_BYTES: Final = 32 * 1024
_WRITES_IN_FLIGHT: Final = 8
# A read of a download: the deadline is pushed back as the connection receives its bytes, so
# a link far slower than 32 KiB a period still moves (docs/behaviour.md §4.5).
_READ_BYTES: Final = 32 * 1024
_PROGRESS_POLL_S: Final = 1.0


class _HostKeyCheck(asyncssh.SSHClient):
    """Accepts a host key by fingerprint or on first sight; remembers the key presented."""

    def __init__(self, fingerprint: str, accept_unknown: bool) -> None:
        self._fingerprint = fingerprint.rstrip("=")
        self._accept_unknown = accept_unknown
        self.seen: asyncssh.SSHKey | None = None

    @property
    def fingerprint_only(self) -> bool:
        return bool(self._fingerprint)

    def validate_host_public_key(self, host: str, addr: str, port: int,
                                 key: asyncssh.SSHKey) -> bool:
        self.seen = key
        if self._fingerprint:
            return _fingerprint(key) == self._fingerprint
        return self._accept_unknown


def _fingerprint(key: asyncssh.SSHKey) -> str:
    return key.get_fingerprint("sha256").rstrip("=")


#: host key algorithms by key family, in the order a fingerprint pin tries them
_KEY_FAMILIES: Final = (
    ("ed25519", ("ssh-ed25519",)),
    ("ecdsa", ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")),
    ("rsa", ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")),
)


#: handshakes retried when a key-family retry loses its connection (see `_handshake`)
_LOST_RETRIES: Final = 2


def _family(key: asyncssh.SSHKey) -> str:
    algorithm = key.get_algorithm()
    for family, algorithms in _KEY_FAMILIES:
        if algorithm in algorithms:
            return family
    return algorithm


def parse_host_key(text: str) -> asyncssh.SSHKey | str:
    """An OpenSSH key line as a key, or a `SHA256:` fingerprint as text; ValueError otherwise."""
    text = text.strip()
    if text.startswith("SHA256:"):
        return text
    fields = text.split()
    # A known_hosts line starts with the host pattern; a bare key line with the algorithm.
    if len(fields) >= 3 and not fields[0].startswith(("ssh-", "ecdsa-", "sk-")):
        fields = fields[1:]
    try:
        return asyncssh.import_public_key(" ".join(fields[:2]))
    except (asyncssh.KeyImportError, IndexError) as err:
        raise ValueError(f"FTP_HostKey is neither an OpenSSH key line nor SHA256:<b64>: {err}") \
            from err


async def _remove_stale(sftp: asyncssh.SFTPClient, stale: str) -> None:
    """Delete a `.tmp` left by a cut upload so that this upload writes a new file (see ftp.py's
    docstring: a server still draining the cut upload writes into the unlinked old one)."""
    # Absent, or no delete right: best effort.
    with contextlib.suppress(asyncssh.SFTPNoSuchFile, asyncssh.SFTPPermissionDenied,
                             asyncssh.SFTPFailure):
        await sftp.remove(stale)


class SftpTransport:
    """SFTP file server: `FTP_Host`, `FTP_Port` (22), `FTP_User`, `FTP_Password`, `FTP_RootDir`,
    `FTP_HostKey`, `FTP_AcceptUnknownHostKey`."""

    def __init__(self, settings: ServerSettings, *, timeouts: Timeouts = DEFAULT_TIMEOUTS,
                 on_host_key_pinned: HostKeyPinned | None = None) -> None:
        self.server = settings.slot
        self._settings = settings
        self._timeouts = timeouts
        self._root = settings.root_dir or "/"
        self._on_pinned = on_host_key_pinned
        # The key family a fingerprint pin matched: asked for first on the next connect.
        self._host_key_algorithms: builtins.list[str] = []
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None

    async def connect(self) -> None:
        await self.close()
        try:
            expected = parse_host_key(self._settings.host_key) if self._settings.host_key else ""
        except ValueError as err:
            raise TransportError(self.server, "connect", str(err), failure=Failure.TRUST) from err
        trusted = [expected] if isinstance(expected, asyncssh.SSHKey) else []
        fingerprint = expected if isinstance(expected, str) else ""
        pin = not self._settings.host_key and self._settings.accept_unknown_host_key
        checker = _HostKeyCheck(fingerprint, pin)
        try:
            async with asyncio.timeout(self._timeouts.connect_s):
                self._conn = await self._handshake(trusted, checker)
                self._sftp = await self._conn.start_sftp_client()
                await self._sftp.stat(self._root)
        except TimeoutError as err:
            await self.close()
            raise TransportError(self.server, "connect",
                                 f"no answer after {self._timeouts.connect_s:g} s",
                                 failure=Failure.TIMEOUT) from err
        except asyncssh.HostKeyNotVerifiable as err:
            await self.close()
            raise TransportError(self.server, "connect", self._untrusted(checker),
                                 failure=Failure.TRUST) from err
        except (OSError, asyncssh.Error) as err:
            await self.close()
            raise self._mapped("connect", "/", err) from err
        except BaseException:
            await self.close()
            raise
        if pin and checker.seen is not None and self._on_pinned is not None:
            line = checker.seen.export_public_key("openssh").decode().strip()
            try:
                await self._on_pinned(line)
            except BaseException:
                await self.close()  # an unpersisted pin would be re-learnt from anyone next time
                raise

    async def _handshake(self, trusted: builtins.list[asyncssh.SSHKey],
                         checker: _HostKeyCheck) -> asyncssh.SSHClientConnection:
        """Connect and log in; with a fingerprint pin, once more per key family not yet seen
        while the key shown does not match (see the module docstring)."""
        families = iter(_KEY_FAMILIES)
        seen: set[str] = set()
        algorithms = self._host_key_algorithms
        lost_retries = 0
        while True:
            try:
                conn = await asyncssh.connect(
                    self._settings.host, self._settings.port or DEFAULT_PORT,
                    username=self._settings.user, password=self._settings.password,
                    known_hosts=(trusted, [], []), client_factory=lambda: checker,
                    client_keys=None, agent_path=None, config=[], x509_trusted_certs=None,
                    server_host_key_algs=algorithms or "default",
                    preferred_auth="password,keyboard-interactive",
                    keepalive_interval=self._timeouts.operation_s / 2, keepalive_count_max=2)
                self._host_key_algorithms = algorithms
                return conn
            except asyncssh.ConnectionLost:
                # A server without the asked key family ends the key exchange with a disconnect
                # message; when our next packet crosses its close, the reset discards that
                # message and only "connection lost" arrives. Asked again, it answers plainly;
                # a loss that repeats is a real one.
                if not algorithms or checker.seen is None or lost_retries == _LOST_RETRIES:
                    raise
                lost_retries += 1
            except (asyncssh.HostKeyNotVerifiable, asyncssh.KeyExchangeFailed) as err:
                if not checker.fingerprint_only or checker.seen is None or (
                        isinstance(err, asyncssh.KeyExchangeFailed) and not algorithms):
                    raise
                seen.add(_family(checker.seen))
                for family, family_algorithms in families:
                    if family not in seen:
                        algorithms = list(family_algorithms)
                        break
                else:
                    raise asyncssh.HostKeyNotVerifiable("no host key matches") from err

    def _untrusted(self, checker: _HostKeyCheck) -> str:
        seen = _fingerprint(checker.seen) if checker.seen is not None else "unknown"
        if self._settings.host_key:
            return f"host key {seen} does not match FTP_HostKey"
        return (f"unknown host key {seen} refused; set FTP_HostKey or "
                "FTP_AcceptUnknownHostKey=1")

    async def list(self, directory: str) -> builtins.list[RemoteFile]:
        remote = self._remote("list", directory)
        limit = self._timeouts.operation_s

        async def scan(sftp: asyncssh.SFTPClient) -> builtins.list[RemoteFile]:
            # Keyed by name: sshd has been seen to list a file twice in one READDIR answer.
            files: dict[str, RemoteFile] = {}
            more = False
            # Read as it comes, so an endless listing stops at the cap (docs/behaviour.md §4.5).
            # Every entry counts, folders and links too: an endless run of them must end.
            seen = moved = 0
            loop = asyncio.get_running_loop()
            entries = sftp.scandir(remote)
            # A long listing that keeps coming is progress, pushed back per KiB of names.
            async with self._moved_or_timeout(limit) as deadline, \
                    contextlib.aclosing(entries):  # type: ignore[type-var]
                async for entry in entries:
                    if seen == LISTING_MAX_ENTRIES:
                        more = True
                        break
                    seen += 1
                    moved += len(entry.filename) + len(entry.longname or "") + _ATTRS_BYTES
                    if moved >= PROGRESS_BYTES:
                        moved = 0
                        deadline.reschedule(loop.time() + limit)
                    name = str(entry.filename)
                    attrs = entry.attrs
                    if name in (".", "..") or attrs.type != asyncssh.FILEXFER_TYPE_REGULAR:
                        continue
                    mtime = float(attrs.mtime) if attrs.mtime is not None else None
                    files[name] = RemoteFile(name=name, size=attrs.size or 0, mtime_s=mtime)
            return capped_listing(self.server, directory, list(files.values()), more=more)
        return await self._call("list", directory, scan, limited=False)

    async def download(self, path: str, *, max_bytes: int = DOWNLOAD_MAX_BYTES) -> bytes:
        out = io.BytesIO()
        await self.download_to(path, out, max_bytes=max_bytes)
        return out.getvalue()

    async def download_to(self, path: str, out: BinaryIO, *,
                          max_bytes: int = DOWNLOAD_MAX_BYTES) -> int:
        remote = self._remote("download", path)
        limit = self._timeouts.operation_s

        async def fetch(sftp: asyncssh.SFTPClient) -> int:
            received = moved = 0
            loop = asyncio.get_running_loop()
            # Pushed back only once 1 KiB moved (docs/behaviour.md §4.5): a trickle times out.
            async with self._moved_or_timeout(limit) as deadline, \
                    sftp.open(remote, "rb") as f:
                while True:
                    block = await f.read(_READ_BYTES)
                    if not block:
                        return received
                    received += len(block)
                    check_size(self.server, path, received, max_bytes)
                    # "rb" yields bytes; asyncssh types read() as AnyStr for both modes.
                    out.write(block if isinstance(block, bytes) else block.encode())
                    moved += len(block)
                    if moved >= PROGRESS_BYTES:
                        moved = 0
                        deadline.reschedule(loop.time() + limit)
        return await self._call("download", path, fetch, limited=False)

    async def size(self, path: str) -> int | None:
        remote = self._remote("size", path)

        async def stat(sftp: asyncssh.SFTPClient) -> int | None:
            try:
                attrs = await sftp.stat(remote)
            except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPPermissionDenied,
                    asyncssh.SFTPNoSuchPath):
                return None  # a refused lookup counts as absent (docs/behaviour.md §5.2)
            return attrs.size
        return await self._call("size", path, stat)

    async def upload(self, path: str, data: bytes, *, two_step: bool,
                     after_cut: bool = False) -> None:
        final, written = final_and_temp(self._remote("upload", path), two_step)
        stale = stale_temp(final, two_step, after_cut)

        async def store(sftp: asyncssh.SFTPClient) -> None:
            async with asyncio.timeout(self._timeouts.operation_s):
                if stale is not None:
                    await _remove_stale(sftp, stale)
                f = await sftp.open(written, "wb")
            try:
                await self._write_all(f, data)
            finally:
                async with asyncio.timeout(self._timeouts.operation_s):
                    await f.close()
            if written != final:
                async with asyncio.timeout(self._timeouts.operation_s):
                    await self._rename_replacing(sftp, written, final)
        await self._call("upload", path, store, limited=False)

    async def _write_all(self, f: asyncssh.SFTPClientFile, data: bytes) -> None:
        """`data` written at its offsets, `_WRITES_IN_FLIGHT` writes at a time; TimeoutError once
        for the operation timeout no write was confirmed and less than 1 KiB was acknowledged
        by the peer (docs/behaviour.md §4.5)."""
        limit = self._timeouts.operation_s
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Future[int]] = set()
        offsets = iter(range(0, len(data), _WRITE_BYTES))
        try:
            async with self._moved_or_timeout(limit, tcp_bytes_acked) as deadline:
                while True:
                    for offset in offsets:
                        pending.add(asyncio.ensure_future(
                            f.write(data[offset:offset + _WRITE_BYTES], offset)))
                        if len(pending) == _WRITES_IN_FLIGHT:
                            break
                    if not pending:
                        return
                    done, pending = await asyncio.wait(pending,
                                                       return_when=asyncio.FIRST_COMPLETED)
                    for write in done:
                        write.result()  # a refusal or a lost connection ends the upload
                    deadline.reschedule(loop.time() + limit)
        finally:
            for write in pending:
                write.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    @staticmethod
    async def _rename_replacing(sftp: asyncssh.SFTPClient, written: str, final: str) -> None:
        try:
            await sftp.posix_rename(written, final)
            return
        except asyncssh.SFTPOpUnsupported:
            pass  # plain SFTP v3 server: see the module docstring
        with contextlib.suppress(asyncssh.SFTPNoSuchFile):  # first upload of this name
            await sftp.remove(final)
        await sftp.rename(written, final)

    async def delete(self, path: str) -> None:
        remote = self._remote("delete", path)

        async def remove(sftp: asyncssh.SFTPClient) -> None:
            await sftp.remove(remote)
        await self._call("delete", path, remove)

    async def close(self) -> None:
        sftp, self._sftp = self._sftp, None
        conn, self._conn = self._conn, None
        if sftp is not None:
            sftp.exit()
        if conn is not None:
            conn.close()
            try:
                async with asyncio.timeout(min(5.0, self._timeouts.operation_s)):
                    await conn.wait_closed()
            except TimeoutError:
                conn.abort()

    # ------------------------------------------------------------------ plumbing

    @contextlib.asynccontextmanager
    async def _moved_or_timeout(self, limit: float, count: Callable[[object], int | None] = (
            tcp_bytes_received)) -> AsyncIterator[asyncio.Timeout]:
        """`asyncio.timeout(limit)`, pushed back each time `count` (the bytes the connection
        received, or those the peer acknowledged) grew by 1 KiB (Linux `TCP_INFO`, polled): a
        read asks for 32 KiB and returns only once they are all there, a write is confirmed only
        once its 32 KiB arrived, which a slow link that moves takes minutes to do. The caller
        pushes it back per KiB read or per write confirmed too, where the system does not tell."""
        conn = self._conn
        sock = conn.get_extra_info("socket") if conn is not None else None
        loop = asyncio.get_running_loop()

        async def watch(deadline: asyncio.Timeout) -> None:
            last = count(sock)
            while last is not None:
                await asyncio.sleep(min(_PROGRESS_POLL_S, limit / 4))
                now = count(sock)
                if now is None:
                    return
                if now - last >= PROGRESS_BYTES:
                    last = now
                    if not deadline.expired():  # an expiring timeout cannot be moved
                        deadline.reschedule(loop.time() + limit)

        # Keep-alives are left off meanwhile, this deadline guards: on a slow upload their
        # request waits behind the writes queued, and the server, with nothing to confirm until
        # a write arrived whole, may be silent for longer than the 1.5 timeouts they allow.
        quiet = conn if count(sock) is not None else None
        async with asyncio.timeout(limit) as deadline:
            watcher = asyncio.create_task(watch(deadline))
            if quiet is not None:
                quiet.set_keepalive(0)
            try:
                yield deadline
            finally:
                if quiet is not None:
                    quiet.set_keepalive(self._timeouts.operation_s / 2)
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    def _remote(self, op: str, path: str) -> str:
        check_tree_path(self.server, op, path)
        return posixpath.join(self._root, path.lstrip("/"))

    async def _call(self, op: str, path: str,
                    fn: Callable[[asyncssh.SFTPClient], Awaitable[T]], *,
                    limited: bool = True) -> T:
        """Run one operation; `limited` puts it whole under the operation timeout, else `fn`
        times each step itself (transfers: a limit per block, so progress keeps them alive)."""
        sftp = self._sftp
        if sftp is None:
            raise TransportError(self.server, op, "not connected",
                                 failure=Failure.CONNECTION_LOST, path=path)
        try:
            if limited:
                async with asyncio.timeout(self._timeouts.operation_s):
                    return await fn(sftp)
            return await fn(sftp)
        except TimeoutError as err:
            await self.close()
            raise TransportError(self.server, op,
                                 f"no progress for {self._timeouts.operation_s:g} s",
                                 failure=Failure.TIMEOUT, path=path) from err
        except UnicodeDecodeError as err:
            # A name that is not UTF-8 (asyncssh decodes strictly): no name of the tree.
            raise TransportError(self.server, op, f"a name is not UTF-8 ({err.reason})",
                                 failure=Failure.PROTOCOL, path=path) from err
        except (OSError, asyncssh.Error) as err:
            mapped = self._mapped(op, path, err)
            if mapped.failure in (Failure.CONNECTION_LOST, Failure.TIMEOUT):
                await self.close()  # the connection is in no known state
            raise mapped from err

    def _mapped(self, op: str, path: str, err: OSError | asyncssh.Error) -> TransportError:
        failure, detail = classify(err)
        return TransportError(self.server, op, detail, failure=failure, path=path)


def classify(err: OSError | asyncssh.Error) -> tuple[Failure, str]:
    """Map an asyncssh or socket error to a failure and its one-line detail."""
    detail = " ".join(str(getattr(err, "reason", "") or err).split()) or type(err).__name__
    if isinstance(err, asyncssh.SFTPError):
        if isinstance(err, (asyncssh.SFTPNoSpaceOnFilesystem, asyncssh.SFTPQuotaExceeded)):
            return Failure.SERVER_FULL, detail
        if isinstance(err, (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection,
                            asyncssh.SFTPEOFError)):
            return Failure.CONNECTION_LOST, detail
        if isinstance(err, asyncssh.SFTPFailure) and "space" in detail.lower():
            return Failure.SERVER_FULL, detail
        if isinstance(err, (asyncssh.SFTPBadMessage, asyncssh.SFTPOpUnsupported)):
            return Failure.PROTOCOL, detail
        return Failure.REFUSED, detail
    if isinstance(err, asyncssh.ConnectionLost) and "keepalive" in detail:
        return Failure.TIMEOUT, detail  # our keep-alives went unanswered: a stalled server
    if isinstance(err, asyncssh.PermissionDenied):
        return Failure.AUTHENTICATION, detail
    if isinstance(err, asyncssh.HostKeyNotVerifiable):
        return Failure.TRUST, detail
    if isinstance(err, (asyncssh.DisconnectError, asyncssh.ChannelOpenError)):
        return Failure.CONNECTION_LOST, detail
    if isinstance(err, TimeoutError):
        return Failure.TIMEOUT, detail
    if isinstance(err, (ConnectionRefusedError, OSError)) and (
            isinstance(err, ConnectionRefusedError) or err.errno in (101, 113, -2, -3)):
        return Failure.UNREACHABLE, detail
    if isinstance(err, OSError):
        return Failure.CONNECTION_LOST, detail
    return Failure.PROTOCOL, detail
