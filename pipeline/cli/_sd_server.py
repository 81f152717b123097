"""`sunpm sd serve PATH`: a dump kept open for `sunpm sd sql PATH SQL`, which asks it over a Unix
socket when one runs (docs/cli.md, "sd serve").

A question costs a new `sunpm sd sql` process its interpreter, its imports (DuckDB, pyarrow),
the dump's open and a scan of every segment it needs: about 2 s on a month of a hundred devices,
most of it before the first row is read. The server pays the imports and the open once; what a
scan selected of each group of sealed files, and of the open segments, stays in its memory
(`store/_memo.py`, bounded), for the next question asking for the same columns and filter. The
client side below imports the standard library only, so that a question answered by a server
costs little more than the interpreter's start.

The answer is the one the command gives in a process of its own, byte for byte: the same code
(`answer`) writes it, over the dump as opened, in a DuckDB connection kept from one question to
the next only while they read (a `SET` or a table one question makes is gone at the next). The dump is opened again when any of its
folders, or any file but a sealed `.arrow` one (written whole, under a new name), changed since.

The socket lives in a folder of the user's own (`$XDG_RUNTIME_DIR`, else the temporary folder:
`sunpm-sd-<uid>`, mode 0700, refused otherwise); its name is a hash of the dump's real path and
of the installed code, so a question never reaches a server of another dump or of older code.
One question is answered at a time; the others wait their turn.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import json
import os
import socket
import stat
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, cast

if TYPE_CHECKING:
    from sdcard.dump import Dump
    from sdcard.sql import Session

#: A frame: its kind (standard output, standard error, exit code) and its length.
_FRAME: Final = struct.Struct("!cI")
_OUT, _ERR, _EXIT = b"1", b"2", b"x"
_REQUEST_MAX: Final = 16 << 20
#: The packages whose code writes an answer: a change to any gives the server another name.
_CODE: Final = ("sdcard", "store", "config", "pipeline/cli")


def socket_path(dump: Path) -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("TMPDIR") or "/tmp"
    folder = Path(runtime) / f"sunpm-sd-{os.getuid()}"
    key = hashlib.sha256("\0".join([os.path.realpath(dump), sys.executable, _code_stamp()])
                         .encode()).hexdigest()[:24]
    return folder / f"{key}.sock"


def _code_stamp() -> str:
    """The installed code's files as they are (names, sizes, times): any change, another stamp."""
    root = Path(__file__).resolve().parents[2]
    parts = []
    for package in _CODE:
        with os.scandir(root / package) as entries:
            for entry in entries:
                if entry.name.endswith(".py"):
                    st = entry.stat()
                    parts.append(f"{package}/{entry.name}:{st.st_size}:{st.st_mtime_ns}")
    return "\n".join(sorted(parts))


def _private(folder: Path) -> bool:
    """The folder is ours alone: a directory (not a link) owned by this user, no access for
    anyone else. A socket elsewhere could be another user's, answering in our name."""
    try:
        st = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


# -- the client: `sunpm sd sql PATH SQL` --------------------------------------------------------


def ask(dump: Path, query: str, fmt: str) -> int | None:
    """The question answered by the server of `dump`: its answer written to this process's
    standard output and error, its exit code returned; None when no server runs for it (the
    caller answers it itself)."""
    try:
        path = socket_path(dump)
    except OSError:
        return None
    if not _private(path.parent):
        return None
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            client.connect(str(path))
            request = {"query": query, "format": fmt, "cwd": os.getcwd()}
            client.sendall(json.dumps(request).encode() + b"\n")
        except OSError:
            return None  # none listening (a stale socket file), or it just stopped
        return _relay(client, dump)
    finally:
        client.close()


def _relay(client: socket.socket, dump: Path) -> int | None:
    stream = client.makefile("rb")
    wrote = False
    # A caller's text streams without bytes underneath (`redirect_stdout(StringIO())`) get text;
    # a frame may end inside a character.
    decoders = {_OUT: codecs.getincrementaldecoder("utf-8")("replace"),
                _ERR: codecs.getincrementaldecoder("utf-8")("replace")}
    while True:
        head = stream.read(_FRAME.size)
        if len(head) < _FRAME.size:
            if not wrote:
                return None  # it stopped before answering: answered here instead
            print(f"sunpm sd sql: the server of {dump} stopped in the middle of the answer",
                  file=sys.stderr)
            return 1
        kind, size = _FRAME.unpack(head)
        data = stream.read(size)
        if kind == _EXIT:
            return int(data)
        target = sys.stdout if kind == _OUT else sys.stderr
        raw = getattr(target, "buffer", None)
        if raw is None:
            target.write(decoders[kind].decode(data))
        else:
            target.flush()
            raw.write(data)
            raw.flush()
        wrote = True


# -- the server: `sunpm sd serve PATH` ----------------------------------------------------------


class _Framed(io.RawIOBase):
    """Bytes written go to the client as frames of one kind."""

    def __init__(self, conn: socket.socket, kind: bytes) -> None:
        super().__init__()
        self._conn = conn
        self._kind = kind

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]  # any bytes-like object
        if data:
            self._conn.sendall(_FRAME.pack(self._kind, len(data)) + bytes(data))
        return len(data)


def _framed_text(conn: socket.socket, kind: bytes) -> IO[str]:
    """A text stream of the answer, sent in frames of about 64 KiB (written by C code: an
    answer of 100,000 rows is 100,000 writes)."""
    raw = cast(io.RawIOBase, _Framed(conn, kind))
    return io.TextIOWrapper(io.BufferedWriter(raw, 1 << 16), encoding="utf-8",
                            errors="replace", newline="")


OpenDump = Callable[[Path], "Dump"]
Answer = Callable[["Dump", str, str, IO[str], IO[str], "Session"], int]


def serve(dump_path: Path, *, idle_s: float, memory_bytes: int, open_dump: OpenDump,
          answer: Answer) -> int:
    """Answer questions about `dump_path` until `idle_s` pass without one (or SIGINT, SIGTERM);
    the exit code: 0 after a stop, 2 when the dump cannot be opened or the socket made, 3 when a
    server of this dump runs already."""
    import signal
    import threading

    from store import _memo

    path = socket_path(dump_path)
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
    except OSError as err:
        print(f"sunpm sd serve: {path.parent}: {err.strerror}", file=sys.stderr)
        return 2
    if not _private(path.parent):
        print(f"sunpm sd serve: {path.parent} is not a folder of this user's alone (mode 0700); "
              "remove it or set XDG_RUNTIME_DIR", file=sys.stderr)
        return 2
    state = _State(dump_path, open_dump)
    try:
        state.current()  # a dump that cannot be opened is said now, not at the first question
    except Exception as err:  # noqa: BLE001  (what the command would say of it)
        print(f"sunpm sd serve: {err}", file=sys.stderr)
        return 2
    try:
        listener = _listen(path)
    except OSError as err:
        print(f"sunpm sd serve: {path}: {err.strerror or err} (a socket path has at most 107 "
              "bytes: set XDG_RUNTIME_DIR to a shorter folder)", file=sys.stderr)
        return 2
    if listener is None:
        print(f"sunpm sd serve: a server of {dump_path} runs already", file=sys.stderr)
        return 3
    _memo.enable(memory_bytes)
    stopped = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopped.set()
        listener.close()  # wakes the accept

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"sunpm sd serve: {dump_path} open for `sunpm sd sql` (stops after "
          f"{idle_s / 60:g} min without a question, or Ctrl-C)", file=sys.stderr, flush=True)
    own = os.stat(path).st_ino
    listener.settimeout(idle_s)
    try:
        while not stopped.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                print("sunpm sd serve: idle, stopped", file=sys.stderr)
                break
            except OSError:
                break  # closed by a signal
            with conn:
                started = time.perf_counter()
                code = _answer_one(conn, state, answer)
            if code is not None:
                print(f"sunpm sd serve: answered in {time.perf_counter() - started:.3f} s "
                      f"(exit {code})", file=sys.stderr, flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        listener.close()
        try:
            if os.stat(path).st_ino == own:  # not a newer server's
                path.unlink()
        except OSError:
            pass
        _memo.enable(0)
    return 0


def _listen(path: Path) -> socket.socket | None:
    """The listening socket at `path`; None when a server answers there already (a socket file
    nobody answers on is a stopped server's: replaced)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        pass
    else:
        return None
    finally:
        probe.close()
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    return listener


class _State:
    """The dump as opened, and what it looked like then (`_signature`); the DuckDB session of
    the questions over it, kept while they only read (a question that sets, creates or prepares
    anything closes it: the next one gets a fresh one, as a process of its own would)."""

    def __init__(self, path: Path, open_dump: OpenDump) -> None:
        self._path = path
        self._open = open_dump
        self._dump: Dump | None = None
        self._session: Session | None = None
        self._signature: tuple[tuple[str, int, int, int], ...] = ()

    def current(self) -> Dump:
        try:
            signature = _signature(self._path)
        except OSError:
            # A path that is no dump (missing, a file): said in the words of `sd inspect`,
            # not the walk's `[Errno 2] ...`.
            self._open(self._path)
            raise
        if self._dump is None or signature != self._signature:
            self.done(keep=False)
            self._dump = None
            self._dump = self._open(self._path)
            self._signature = signature
        return self._dump

    def session(self) -> Session:
        from sdcard.sql import Session

        if self._session is None:
            self._session = Session(self.current() if self._dump is None else self._dump)
        return self._session

    def done(self, *, keep: bool) -> None:
        """After a question: its session kept for the next if `keep` and it only read."""
        if self._session is not None and not (keep and self._session.pristine):
            self._session.close()
            self._session = None


def _signature(root: Path) -> tuple[tuple[str, int, int, int], ...]:
    """Every folder of the dump and every file but sealed `.arrow` ones (written whole under a
    new name, which changes their folder): name, size, modification and change times. What a
    writer does to a store (a commit, a compaction, a deletion) changes it."""
    found = []
    folders = [str(root)]
    while folders:
        folder = folders.pop()
        st = os.stat(folder)
        found.append((folder, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif not entry.name.endswith(".arrow"):
                    st = entry.stat(follow_symlinks=False)
                    found.append((entry.path, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(sorted(found))


def _answer_one(conn: socket.socket, state: _State, answer: Answer) -> int | None:
    """One question: read, answered as the command would, the exit code last (returned; None
    when the client went away). A client gone before the end (Ctrl-C, `| head`) ends its
    answer."""
    try:
        conn.settimeout(10)
        request = json.loads(_request_line(conn))
        query, fmt, cwd = str(request["query"]), str(request["format"]), str(request["cwd"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not one of ours, or gone
    conn.settimeout(None)
    out, err = _framed_text(conn, _OUT), _framed_text(conn, _ERR)
    try:
        with contextlib.suppress(OSError):
            os.chdir(cwd)  # a relative path in the SQL is the client's
        try:
            dump = state.current()
            session = state.session()
        except Exception as error:  # noqa: BLE001  (said as the command says it)
            print(f"sunpm sd sql: {error}", file=err)
            code = 2
        else:
            try:
                code = answer(dump, query, fmt, out, err, session)
            except OSError:
                state.done(keep=False)  # its answer cut short
                raise
            except Exception as error:  # noqa: BLE001  (the server answers the next question)
                print(f"sunpm sd sql: internal error: {error!r}", file=err)
                code = 1
            state.done(keep=code == 0)
        out.flush()
        err.flush()
        conn.sendall(_FRAME.pack(_EXIT, len(str(code))) + str(code).encode())
    except OSError:
        return None  # the client went away
    return code


def _request_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1 << 16)
        if not chunk:
            raise ConnectionError("closed before the question ended")
        data += chunk
        if len(data) > _REQUEST_MAX:
            raise ValueError("question too long")
    return data
