"""The small interface every transport implements, and the one error they all raise.

A transport moves bytes to a server and knows nothing of windows, cursors or CSV (docs/style.md §1).
Retries, ordering and accounting belong to the outbox: a transport tries once and says, through
`TransportError.retriable`, whether trying again later could help (docs/behaviour.md §4.5).

Paths are paths of the server tree of docs/formats.md §3 (`/DATA/<name>`), always absolute and
`/`-separated; each transport maps them under its root (`FTP_RootDir`, the path of `HTTP_Url`,
`DIR_Path`).
"""

from __future__ import annotations

import builtins
import logging
import posixpath
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, Final, Protocol, runtime_checkable

from config.errors import SunpmError

log = logging.getLogger("sunpm.session")

TMP_SUFFIX: Final = ".tmp"  # docs/formats.md §3: `<name>.tmp`, renamed `<name>` when complete
MAX_IN_FLIGHT: Final = 10  # docs/behaviour.md §4.4: at most 10 unacknowledged MQTT messages
# docs/behaviour.md §4.5 (hostile server): a listing stops at 10,000 entries, and a download that
# no caller capped stops at the largest cap of the files a session fetches (a definition file).
LISTING_MAX_ENTRIES: Final = 10_000
DOWNLOAD_MAX_BYTES: Final = 4 << 20
NAME_MAX_BYTES: Final = 255
# docs/behaviour.md §4.5 (timeouts revised): progress is at least 1 KiB moved in the last 60 s.
PROGRESS_BYTES: Final = 1024


class Failure(StrEnum):
    """Why an operation failed; decides `retriable` (docs/behaviour.md §4.5)."""

    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"          # refused, no route, name not resolved
    CONNECTION_LOST = "connection lost"
    SERVER_FULL = "server disk full"
    SERVER_BUSY = "server busy"          # transient 4xx/5xx the server says may pass
    AUTHENTICATION = "authentication refused"
    TRUST = "identity not trusted"       # TLS certificate or SSH host key mismatch
    REFUSED = "refused"                  # missing directory or a right lacking
    PROTOCOL = "protocol error"          # the peer answered something we cannot use

    @property
    def retriable(self) -> bool:
        return self in _RETRIABLE


# docs/behaviour.md §4.5: only a refused login and a key or certificate mismatch wait 60 min, and
# a refusal stops only what needs it. A protocol error (a WebDAV redirect, an FTP reply out of
# order) is a hiccup of the peer: retried on the 5, 10, 20, 40 min ladder like a lost connection.
_RETRIABLE: Final = frozenset({Failure.TIMEOUT, Failure.UNREACHABLE, Failure.CONNECTION_LOST,
                               Failure.SERVER_FULL, Failure.SERVER_BUSY, Failure.PROTOCOL})


class TransportError(SunpmError):
    """One failed transport operation, as one line a user can act on (docs/style.md §5).

    A refusal names the tree directory, in the form of docs/formats.md §3:
    `server 1: /DATA: upload refused (550 Permission denied)`; anything else names the operation
    and the failure, then the peer's own words:
    `server 2: connect: timeout (no answer after 30 s)`,
    `server 1: upload /LOG/x.log.gz: connection lost ([Errno 104] Connection reset by peer)`.
    """

    def __init__(self, server: int, op: str, detail: str, *, failure: Failure,
                 path: str = "", retriable: bool | None = None) -> None:
        self.server = server
        self.op = op
        self.detail = " ".join(detail.split())  # one line, whatever the peer sent
        self.failure = failure
        self.path = path
        self.retriable = failure.retriable if retriable is None else retriable
        super().__init__(self._line())

    def _line(self) -> str:
        if self.failure is Failure.REFUSED and self.path:
            return f"server {self.server}: {self.directory}: {self.op} refused ({self.detail})"
        # The tree root names nothing useful outside a refusal ("connect /").
        where = f"{self.op} {self.path}" if self.path not in ("", "/") else self.op
        return f"server {self.server}: {where}: {self.failure.value} ({self.detail})"

    @property
    def directory(self) -> str:
        """The tree directory concerned: the path itself for a listing, else the directory the
        path lives in (`/DATA` for `/DATA/x.csv.gz`)."""
        if self.op in ("list", "connect"):
            return self.path or "/"
        return posixpath.dirname(self.path) or "/"

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.server, self.op, self.detail, self.failure, self.path,
                           self.retriable))


class DownloadTooLarge(TransportError):
    """A download passed its cap while arriving (docs/behaviour.md §4.5): that file is not used,
    the connection stays usable and the rest of the session goes on."""

    def __init__(self, server: int, path: str, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # Not retriable: that file is refused (the next try finds it as large), the rest goes on.
        super().__init__(server, "download", f"larger than {size_text(max_bytes)}",
                         failure=Failure.PROTOCOL, path=path, retriable=False)

    def __reduce__(self) -> tuple[object, ...]:
        return (DownloadTooLarge, (self.server, self.path, self.max_bytes))


#: The largest MQTT PUBLISH packet the gateway sends, as a whole (fixed header included): the
#: size it reads at most from a broker (`mqtt.PACKET_MAX_BYTES`), and a broker's
#: `max_packet_size` of 16 MiB still takes it (docs/spec-notes.md, *MQTT message over 16 MiB*).
MESSAGE_MAX_BYTES: Final = 16 << 20


def publish_packet_bytes(topic: str, payload: bytes, qos: int) -> int:
    """The size of the MQTT 3.1.1 PUBLISH packet carrying `payload` to `topic` at `qos`."""
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + len(payload)
    length_bytes = 1
    while remaining >= 128 ** length_bytes:
        length_bytes += 1
    return 1 + length_bytes + remaining


class MessageTooLarge(TransportError):
    """A message not published for its size alone: sent, a broker with a packet limit drops the
    connection at each try, and the queue behind it never moves. Not retriable: the next try
    finds it as large; the caller sets it aside and goes on."""

    def __init__(self, server: int, topic: str, packet_bytes: int) -> None:
        self.topic = topic
        self.packet_bytes = packet_bytes
        super().__init__(server, "publish", self.reason, failure=Failure.PROTOCOL, path=topic,
                         retriable=False)

    @property
    def reason(self) -> str:
        return (f"a message of {self.packet_bytes} bytes, larger than "
                f"{size_text(MESSAGE_MAX_BYTES)}")

    def __reduce__(self) -> tuple[object, ...]:
        return (MessageTooLarge, (self.server, self.topic, self.packet_bytes))


def size_text(n: int) -> str:
    """`1 MiB`, `64 KiB`, `300 bytes`: a cap as people write it."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def check_size(server: int, path: str, received: int, max_bytes: int) -> None:
    """Raise DownloadTooLarge once more than `max_bytes` arrived (called as blocks arrive)."""
    if received > max_bytes:
        raise DownloadTooLarge(server, path, max_bytes)


def _rebuild(server: int, op: str, detail: str, failure: Failure, path: str,
             retriable: bool) -> TransportError:
    return TransportError(server, op, detail, failure=failure, path=path, retriable=retriable)


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Network waits (docs/behaviour.md §4.5); tests shorten them."""

    connect_s: float = 30.0
    operation_s: float = 60.0
    # The slowest link a transport that cannot see its bytes leave the kernel still waits for:
    # what may still be queued there is given its time at this rate on top of `operation_s`.
    slow_link_bps: int = 1024


DEFAULT_TIMEOUTS: Final = Timeouts()


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteFile:
    """One entry of a directory listing; `mtime_s` is None when the server does not tell."""

    name: str
    size: int
    mtime_s: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundMessage:
    """A message received on a subscribed topic (the command topic, docs/formats.md §14.4)."""

    topic: str
    payload: bytes


# Called with the OpenSSH key line of a host key pinned on first sight (FTP_AcceptUnknownHostKey=1);
# the caller persists it as FTP_HostKey before the connection is used.
HostKeyPinned = Callable[[str], Awaitable[None]]


@runtime_checkable
class FileTransport(Protocol):
    """A file server: `ftp`, `ftps`, `sftp`, `webdav`, `dir`. One operation at a time."""

    server: int

    async def connect(self) -> None:
        """Open the connection and log in; TLS certificate or host key checked here."""

    async def list(self, directory: str) -> builtins.list[RemoteFile]:
        """Regular files of `directory` (sub-directories left out), at most
        `LISTING_MAX_ENTRIES` (the rest is left out with a warning)."""

    async def download(self, path: str, *, max_bytes: int = DOWNLOAD_MAX_BYTES) -> bytes:
        """The whole content of `path`; `DownloadTooLarge` as soon as more than `max_bytes`
        arrived (the transfer is cut, the connection stays usable)."""

    async def download_to(self, path: str, out: BinaryIO, *,
                          max_bytes: int = DOWNLOAD_MAX_BYTES) -> int:
        """`download`, written to `out` block by block as it arrives instead of held in memory
        (a `/BIN` package: 256 MiB); the byte count. After a failure `out` holds a part."""

    async def size(self, path: str) -> int | None:
        """Size of `path`, or None when absent; a refused lookup counts as absent
        (docs/behaviour.md §5.2)."""

    async def upload(self, path: str, data: bytes, *, two_step: bool,
                     after_cut: bool = False) -> None:
        """Write `data` as `path`, replacing a same-named file, and return only once the server
        confirmed the final name. With `two_step`, the bytes go to `path + ".tmp"` first and are
        renamed, so the final name never holds a partial file. Before a two-step upload, or when
        `after_cut` says an earlier upload of this name may have been cut, a `.tmp` left behind
        is deleted first (best effort)."""

    async def delete(self, path: str) -> None:
        """Remove `path`; removing an absent file is an error (the server says why)."""

    async def close(self) -> None:
        """Close the connection; safe to call twice or after a failure."""


@runtime_checkable
class MessageTransport(Protocol):
    """A broker: `mqtt`, `mqtts`."""

    server: int

    async def connect(self) -> None:
        """Connect (persistent session) and subscribe to the command topic when one is set."""

    async def publish(self, topic: str, payload: bytes, qos: int | None = None) -> None:
        """Publish, retain off, at `qos` (None: the configured `MQTT_Qos`) and return once
        delivered: PUBACK (QoS 1), PUBCOMP (QoS 2) or sent (QoS 0). Up to `MAX_IN_FLIGHT` calls
        may wait at once; more wait their turn. A packet over `MESSAGE_MAX_BYTES` is not sent:
        `MessageTooLarge`."""

    def messages(self) -> AsyncIterator[InboundMessage]:
        """Messages of the command topic, in arrival order; raises TransportError when the
        connection is lost."""

    async def close(self) -> None:
        """Disconnect; safe to call twice or after a failure."""


def final_and_temp(path: str, two_step: bool) -> tuple[str, str]:
    """(final path, path written to): the `.tmp` twin with two-step upload, else the final one."""
    return path, (path + TMP_SUFFIX if two_step else path)


def stale_temp(path: str, two_step: bool, after_cut: bool) -> str | None:
    """The `.tmp` twin to delete before uploading `path`, or None.

    Always before a two-step upload (a server still draining a cut upload then writes into the
    unlinked old file, not into the one renamed to the final name); before a one-step upload only
    when an earlier upload of this name may have been cut (`after_cut`), so that a `.tmp` left
    while two-step sending was on does not stay on the server forever, without a round trip per
    upload otherwise (docs/spec-notes.md, "Stale `.tmp`").
    """
    return path + TMP_SUFFIX if two_step or after_cut else None


def is_plain_name(name: str) -> bool:
    """A plain file name (docs/behaviour.md §4.5): no `/`, `\\`, NUL or control character, not
    `.` or `..`, 1 to 255 bytes of UTF-8. Anything else from a server is refused before use."""
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        return False
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in name):  # C0, DEL, C1
        return False
    try:
        return len(name.encode("utf-8")) <= NAME_MAX_BYTES
    except UnicodeEncodeError:  # a lone surrogate: no server name is made of those
        return False


def check_tree_path(server: int, op: str, path: str) -> str:
    """Refuse paths that could leave the tree or that no file system takes: relative ones, `..`,
    empty parts, parts that are not plain names (NUL, control characters, over 255 bytes)."""
    if path == "/":
        return path
    parts = path.split("/")
    if not path.startswith("/") or not all(is_plain_name(p) for p in parts[1:]):
        # Shown escaped and cut: the path may hold a NUL, control characters or 10,000 bytes.
        cut = path if len(path) <= 80 else path[:77] + "..."
        shown = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in cut)
        # Not retriable: the name is refused whoever asks again, as a directory refused is.
        raise TransportError(server, op, "bad tree path (a part is not a plain file name)",
                             failure=Failure.PROTOCOL, path=shown, retriable=False)
    return path


def capped_listing(server: int, directory: str, files: builtins.list[RemoteFile],
                   *, more: bool = False) -> builtins.list[RemoteFile]:
    """A listing's plain-named entries, sorted, at most `LISTING_MAX_ENTRIES`; entries left out
    are logged (`more`: the transport already stopped reading at the cap)."""
    plain = [f for f in files if is_plain_name(f.name)]
    if len(plain) < len(files):
        log.warning("server %d: %s: %d listed names are not plain file names; ignored", server,
                    directory, len(files) - len(plain))
    if more or len(plain) > LISTING_MAX_ENTRIES:
        log.warning("server %d: %s: listing stopped at %d entries", server, directory,
                    LISTING_MAX_ENTRIES)
        plain = plain[:LISTING_MAX_ENTRIES]
    return sorted(plain, key=lambda f: f.name)


# Linux `struct tcp_info`: `tcpi_bytes_acked` and `tcpi_bytes_received` (since 4.1) are the 8
# bytes at 120 and 128; the struct only ever grows at its end.
_TCP_INFO_BYTES: Final = 256
_BYTES_ACKED_AT: Final = 120
_BYTES_RECEIVED_AT: Final = 128


def tcp_bytes_received(sock: object) -> int | None:
    """The bytes received so far on a TCP connection (Linux `TCP_INFO` `tcpi_bytes_received`),
    whoever reads them, given its socket or asyncio's view of it; None where the system does
    not tell."""
    return _tcp_info_count(sock, _BYTES_RECEIVED_AT)


def tcp_bytes_acked(sock: object) -> int | None:
    """The bytes the peer's kernel acknowledged so far on a TCP connection (Linux `TCP_INFO`
    `tcpi_bytes_acked`): what left, however the sender hands it over; given its socket or
    asyncio's view of it, None where the system does not tell (or the socket is closed)."""
    return _tcp_info_count(sock, _BYTES_ACKED_AT)


def _tcp_info_count(sock: object, offset: int) -> int | None:
    option = getattr(socket, "TCP_INFO", None)
    getsockopt = getattr(sock, "getsockopt", None)
    if option is None or getsockopt is None:
        return None
    try:
        info = getsockopt(socket.IPPROTO_TCP, option, _TCP_INFO_BYTES)
    except OSError:
        return None
    if not isinstance(info, bytes) or len(info) < offset + 8:
        return None  # a kernel older than 4.1
    count: int = struct.unpack_from("Q", info, offset)[0]
    return count


def tls_context(server: int, cert_dir: Path, ca_file: str, *, cert_file: str = "",
                key_file: str = "") -> ssl.SSLContext:
    """A client context checking the peer's certificate and host name against `ca_file` (a file
    of `/CERT`, kept in `cert_dir`) or the system CAs when empty, optionally presenting a client
    certificate. A missing or unreadable file is a TransportError naming it (not retriable: the
    configuration must change)."""
    current = ca_file
    try:
        context = ssl.create_default_context(cafile=str(cert_dir / ca_file) if ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert_file:
            current = cert_file
            context.load_cert_chain(str(cert_dir / cert_file),
                                    str(cert_dir / key_file) if key_file else None)
    except (OSError, ssl.SSLError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise TransportError(server, "connect", f"cannot load /CERT/{current}: {reason}",
                             failure=Failure.TRUST) from err
    return context
