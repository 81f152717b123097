"""`sunpm sd sql PATH SQL` asked of a running `sunpm sd serve PATH` (`_sd_server.py`): the
socket's name, the question's bytes, the answer relayed.

A question a server answers costs its asking process little but the interpreter's start, so this
module is imported before the command line's parser (`main`: argparse, `re` and `enum` behind
it, then the `sd` family's module, were half of that process's time) and imports only modules
the interpreter has loaded already or that load in microseconds: no `json` (the question is
length-prefixed fields), no `typing`, no `pathlib`, and the socket as the interpreter's `_socket`
makes it (the `socket` module loads `enum` and `selectors` to wrap it).
"""

from __future__ import annotations

import _socket
import codecs
import os
import stat
import struct
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Final

#: A frame of the answer: its kind (standard output, standard error, exit code) and its length.
FRAME: Final = struct.Struct("!cI")
OUT, ERR, EXIT = b"1", b"2", b"x"
#: A question: this mark, its length, then its fields (`_FIELDS`), each a length and its text
#: (UTF-8, lone surrogates kept: a path that is no UTF-8 comes back as it was given).
_MARK: Final = b"SQL1"
_LENGTH: Final = struct.Struct("!I")
_FIELDS: Final = ("query", "format", "cwd", "dump", "out", "out_errors", "err", "err_errors")
REQUEST_MAX: Final = 16 << 20
#: The packages whose code writes an answer: a change to any gives the server another name.
_CODE: Final = ("sdcard", "store", "config", "fsio", "pipeline/cli")
#: The libraries that do (DuckDB's text of a value or an error may change from one version to
#: the next): an upgrade replaces their folders.
_LIBRARIES: Final = ("duckdb", "pyarrow")
_FORMATS: Final = ("table", "csv", "json")


def socket_path(dump: str | os.PathLike[str]) -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("TMPDIR") or "/tmp"
    folder = os.path.join(runtime, f"sunpm-sd-{os.getuid()}")
    key = _sha256_hex(os.fsencode("\0".join([os.path.realpath(dump), sys.executable,
                                              code_stamp()])))[:24]
    return os.path.join(folder, f"{key}.sock")


def _sha256_hex(data: bytes) -> str:
    try:
        # CPython's own SHA-256 (3.12 on: `_sha2`, before: `_sha256`), without `hashlib`'s
        # load of OpenSSL (some 3 ms of a question's start); the same digest.
        from _sha2 import sha256
    except ImportError:
        try:
            from _sha256 import sha256
        except ImportError:
            from hashlib import sha256
    return str(sha256(data).hexdigest())


def code_stamp() -> str:
    """The installed code's files as they are (names, sizes, times): any change, another stamp."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    parts = []
    for package in _CODE:
        with os.scandir(os.path.join(root, package)) as entries:
            for entry in entries:
                if entry.name.endswith(".py"):
                    st = entry.stat()
                    parts.append(f"{package}/{entry.name}:{st.st_size}:{st.st_mtime_ns}")
    for library in _LIBRARIES:
        # The folder the import would take, found without importing (the client never does).
        for folder in sys.path:
            try:
                st = os.stat(os.path.join(folder or ".", library, "__init__.py"))
            except OSError:
                continue
            parts.append(f"{folder}/{library}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
            break
    return "\n".join(sorted(parts))


def private(folder: str | os.PathLike[str]) -> bool:
    """The folder is ours alone: a directory (not a link) owned by this user, no access for
    anyone else. A socket elsewhere could be another user's, answering in our name."""
    try:
        st = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def request(query: str, fmt: str, cwd: str, dump: str, out: tuple[str, str],
            err: tuple[str, str]) -> bytes:
    """A question's bytes."""
    body = b"".join(_LENGTH.pack(len(data)) + data for data in (
        text.encode("utf-8", "surrogatepass")
        for text in (query, fmt, cwd, dump, out[0], out[1], err[0], err[1])))
    return _MARK + _LENGTH.pack(len(body)) + body


def request_read(data: bytes | bytearray) -> bool | None:
    """True: `data` holds a whole question; False: only its start so far; None: it is none of
    ours, or too long."""
    head = len(_MARK) + _LENGTH.size
    if data[: len(_MARK)] != _MARK[: len(data)]:
        return None
    if len(data) < head:
        return False
    (size,) = _LENGTH.unpack_from(data, len(_MARK))
    if size > REQUEST_MAX:
        return None
    return len(data) >= head + int(size)


def parsed_request(data: bytes | bytearray) -> dict[str, object] | None:
    """The question a whole `request` holds: query, format, cwd, dump, and the asker's streams'
    codings (`out`, `err`: encoding and error handler); None for bytes that are none of ours."""
    at = len(_MARK) + _LENGTH.size
    (size,) = _LENGTH.unpack_from(data, len(_MARK))
    if len(data) != at + size:
        return None
    texts = []
    try:
        for _ in _FIELDS:
            (length,) = _LENGTH.unpack_from(data, at)
            at += _LENGTH.size
            if at + length > len(data):
                return None
            texts.append(bytes(data[at : at + length]).decode("utf-8", "surrogatepass"))
            at += length
    except (struct.error, UnicodeDecodeError):
        return None
    if at != len(data):
        return None
    fields = dict(zip(_FIELDS, texts, strict=True))
    return {"query": fields["query"], "format": fields["format"], "cwd": fields["cwd"],
            "dump": fields["dump"], "out": [fields["out"], fields["out_errors"]],
            "err": [fields["err"], fields["err_errors"]]}


def question(words: list[str]) -> tuple[str, str, str] | None:
    """`PATH SQL [--format F]` (the words after `sd sql`) as the command's parser reads them:
    the path, the SQL and the format, when they are written this plainly; None otherwise (an
    option this does not read, a word the parser would take for one, another count of
    positional words or an option between them, a path the parser's `Path` would spell
    otherwise): the parser reads them."""
    positional: list[tuple[int, str]] = []
    fmt = "table"
    at = 0
    while at < len(words):
        word = words[at]
        if word == "--format" and at + 1 < len(words):
            fmt = words[at + 1]
            at += 2
        elif word.startswith("--format="):
            fmt = word.partition("=")[2]
            at += 1
        elif word.startswith("-"):
            return None
        else:
            positional.append((at, word))
            at += 1
        if fmt not in _FORMATS:  # each one given: the parser checks them all
            return None
    # Side by side: the parser takes PATH alone before an option, then refuses SQL after it.
    if len(positional) != 2 or positional[1][0] != positional[0][0] + 1:
        return None
    (_, path), (_, query) = positional
    if not path or os.path.normpath(path) != path:
        return None
    return path, query, fmt


def ask(dump: str, query: str, fmt: str) -> int | None:
    """The question answered by the server of `dump` (spelled as `str(Path(...))` spells it):
    its answer written to this process's standard output and error, its exit code returned;
    None when no server runs for it (the caller answers it itself)."""
    try:
        path = socket_path(dump)
    except OSError:
        return None
    if not private(os.path.dirname(path)):
        return None
    client = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            client.connect(path)
            # The dump as spelled here: the server names its files as this process would.
            # Its streams' encodings too: the answer's bytes are the ones this process writes
            # (a Latin-1 terminal, a file name that is no UTF-8 in a message).
            client.sendall(request(query, fmt, os.getcwd(), dump, _coding(sys.stdout),
                                   _coding(sys.stderr)))
        except OSError:
            return None  # none listening (a stale socket file), or it just stopped
        return _relay(client, dump)
    finally:
        client.close()


def _coding(stream: IO[str]) -> tuple[str, str]:
    """How text becomes the bytes of `stream`: its encoding and error handler; of a caller's
    text stream without bytes underneath (`redirect_stdout(StringIO())`), UTF-8 that carries
    any text there and back."""
    if getattr(stream, "buffer", None) is None:
        return "utf-8", "surrogatepass"
    return getattr(stream, "encoding", None) or "utf-8", getattr(stream, "errors", None) or "strict"


def _relay(client: _socket.socket, dump: str) -> int | None:
    with open(client.fileno(), "rb", closefd=False) as stream:
        return _relayed(stream, dump)


def _relayed(stream: IO[bytes], dump: str) -> int | None:
    wrote = False
    # A caller's text streams without bytes underneath get text; a frame may end inside a
    # character.
    decoders: dict[bytes, codecs.IncrementalDecoder] = {}
    while True:
        head = stream.read(FRAME.size)
        if len(head) < FRAME.size:
            if not wrote:
                return None  # it stopped before answering: answered here instead
            print(f"sunpm sd sql: the server of {dump} stopped in the middle of the answer",
                  file=sys.stderr)
            return 1
        kind, size = FRAME.unpack(head)
        data = stream.read(size)
        if kind == EXIT:
            return int(data)
        target = sys.stdout if kind == OUT else sys.stderr
        raw = getattr(target, "buffer", None)
        if raw is None:
            if kind not in decoders:
                decoders[kind] = codecs.getincrementaldecoder("utf-8")("surrogatepass")
            target.write(decoders[kind].decode(data))
        else:
            target.flush()
            raw.write(data)
            raw.flush()
        wrote = True
