"""`sunpm sd serve PATH`: a dump kept open for `sunpm sd sql PATH SQL`, which asks it over a Unix
socket when one runs (docs/cli.md, "sd serve").

A question costs a new `sunpm sd sql` process its interpreter, its imports (DuckDB, pyarrow),
the dump's open and a scan of every segment it needs: about 2 s on a month of a hundred devices,
most of it before the first row is read. The server pays the imports and the open once; what a
scan selected of each group of sealed files, and of the open segments, stays in its memory
(`store/_memo.py`, bounded), for the next question asking for the same columns and filter. The
client side (`_sd_client.py`) imports next to nothing, so that a question answered by a server
costs little more than the interpreter's start.

The answer is the one the command gives in a process of its own, byte for byte: the same code
(`answer`) writes it, over the dump as opened under the path the asker spelled (findings name
its files so), with the dump's findings as that process would hold them, encoded as the asker's
streams, in a DuckDB connection kept from one question to the next only while they read (a
`SET` or a table one question makes is gone at the next). The dump is opened again when any of
its folders, or any file but a sealed `.arrow` one (written whole, under a new name), changed
since.

The socket lives in a folder of the user's own (`$XDG_RUNTIME_DIR`, else the temporary folder:
`sunpm-sd-<uid>`, mode 0700, refused otherwise); its name is a hash of the dump's real path and
of the installed code and libraries, so a question never reaches a server of another dump or of
older code; a lock file beside it, held while the server runs, lets only one of two servers
started together bind it. Questions are read as their bytes arrive and answered one at a time, in turn; a
question whose client leaves, or a stop, interrupts its DuckDB query. What a client does not
take as fast as its answer is written waits for it (`_Outbox`: memory, then a temporary file,
bounded) and is sent by a thread of its own, while the next questions are answered.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, cast

from pipeline.cli import stop_received
from pipeline.cli._sd_client import (
    ERR,
    EXIT,
    FRAME,
    OUT,
    parsed_request,
    private,
    request_read,
    socket_path,
)

if TYPE_CHECKING:
    import threading

    from sdcard.dump import Dump
    from sdcard.sql import Session

#: A client connected has this long to send its question, and so many may be sending at once
#: (beyond, a connection is closed at once: its asker answers the question itself).
_REQUEST_S: Final = 10.0
_PENDING_MAX: Final = 64
#: An answer its client takes more slowly than it is written (a paused `less`, `| (sleep 60;
#: cat)`) waits for it in memory up to this much, then in a private temporary file, and is sent
#: by a thread of its own while the next questions are answered. At most `_SPOOL_FILES_MAX`
#: bytes wait in files, all answers together: beyond, an answer is written as fast as its client
#: takes it, the others waiting, as do questions arriving while `_SENDING_MAX` answers are still
#: being sent (closed: their askers answer them themselves).
_SPOOL_MEMORY: Final = 1 << 20
_SPOOL_FILES_MAX: Final = 1 << 30
_SENDING_MAX: Final = 64
_CHUNK: Final = 1 << 16


# -- the server: `sunpm sd serve PATH` ----------------------------------------------------------


class _Framed(io.RawIOBase):
    """Bytes written go to the client as frames of one kind."""

    def __init__(self, outbox: _Outbox, kind: bytes) -> None:
        super().__init__()
        self._outbox = outbox
        self._kind = kind
        #: The answer abandoned: what is still buffered goes nowhere.
        self.dropped = False
        self.sent = False

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]  # any bytes-like object
        if data and not self.dropped:
            self.sent = True
            self._outbox.write(FRAME.pack(self._kind, len(data)) + bytes(data))
        return len(data)


class _Senders:
    """The answers still on their way to their clients (`_Outbox`), and what they hold in
    files."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.active: set[_Outbox] = set()
        self.filed = 0

    def full(self) -> bool:
        with self.lock:
            return len(self.active) >= _SENDING_MAX

    def drain(self, stopped: threading.Event) -> None:
        """Until every answer is sent (or its asker gone), or `stopped`."""
        while not stopped.wait(0.2):
            with self.lock:
                if not self.active:
                    return

    def stop(self) -> None:
        """Every answer still being sent abandoned (its client says the server stopped in the
        middle of it)."""
        with self.lock:
            active = list(self.active)
        for outbox in active:
            outbox.abort()
        for outbox in active:
            outbox.join(10.0)


class _Outbox:
    """An answer's bytes on their way to its client, in order: sent at once while the client
    takes them; else kept (memory up to `_SPOOL_MEMORY`, then a temporary file of this user's
    alone, removed as it is made) and sent by a thread of its own, so that a client reading
    slowly holds no one else waiting. A client gone is an `OSError` at the next write."""

    def __init__(self, conn: socket.socket, senders: _Senders) -> None:
        import threading

        self._conn = conn
        self._senders = senders
        self._cond = threading.Condition()
        self._memory = bytearray()
        self._file: IO[bytes] | None = None
        #: The file's bytes still to send: from `_read_at` to `_write_at`.
        self._read_at = self._write_at = 0
        self._ended = False
        self._closed = False
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None

    @property
    def conn(self) -> socket.socket:
        return self._conn

    def _waiting(self) -> int:
        return len(self._memory) + self._write_at - self._read_at

    def write(self, data: bytes) -> None:
        with self._cond:
            if self._error is not None:
                raise BrokenPipeError(f"the client went away ({self._error})")
            if not self._waiting():
                try:
                    sent = self._conn.send(data, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    sent = 0
                except OSError as error:
                    self._error = error
                    raise
                data = data[sent:]
                if not data:
                    return
            if self._write_at == self._read_at \
                    and len(self._memory) + len(data) <= _SPOOL_MEMORY:
                self._memory += data
                self._start()
                return
            if self._filed(data):
                self._start()
                return
            # No room in files (or no file could be written): sent as the client takes it,
            # once what waits before it is sent.
            self._cond.wait_for(lambda: self._error is not None or not self._waiting())
            if self._error is not None:
                raise BrokenPipeError(f"the client went away ({self._error})")
        self._conn.sendall(data)

    def _filed(self, data: bytes) -> bool:
        """`data` added to the file (made at the first), if the files' budget allows."""
        import tempfile

        with self._senders.lock:
            if self._senders.filed + len(data) > _SPOOL_FILES_MAX:
                return False
            self._senders.filed += len(data)
        try:
            if self._file is None:
                # Closed by `_close`, once its last byte is sent.
                self._file = tempfile.TemporaryFile(prefix="sunpm-sd-answer-")  # noqa: SIM115
            view = memoryview(data)
            at = self._write_at
            while view:
                written = os.pwrite(self._file.fileno(), view, at)
                view, at = view[written:], at + written
        except OSError:
            with self._senders.lock:
                self._senders.filed -= len(data)
            # What was written past `_write_at` is never read, and overwritten next time.
            return False
        self._write_at += len(data)
        return True

    def _start(self) -> None:
        import threading

        if self._thread is None:
            with self._senders.lock:
                self._senders.active.add(self)
            self._thread = threading.Thread(target=self._send, name="sd-serve-send", daemon=True)
            self._thread.start()
        self._cond.notify_all()

    def _send(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._error is not None or self._waiting() > 0
                                        or self._ended)
                    if self._error is not None or not self._waiting():
                        return
                    from_file = not self._memory
                    if from_file:
                        assert self._file is not None
                        chunk = os.pread(self._file.fileno(),
                                         min(_CHUNK, self._write_at - self._read_at),
                                         self._read_at)
                    else:
                        chunk = bytes(self._memory[:_CHUNK])
                try:
                    sent = self._conn.send(chunk)
                except OSError as error:
                    with self._cond:
                        self._error = self._error or error
                        self._cond.notify_all()
                    return
                with self._cond:
                    if from_file:
                        self._read_at += sent
                        with self._senders.lock:
                            self._senders.filed -= sent
                        if self._read_at == self._write_at and self._file is not None:
                            self._file.truncate(0)
                            self._read_at = self._write_at = 0
                    else:
                        del self._memory[:sent]
                    self._cond.notify_all()
        finally:
            self._close()

    def finish(self) -> None:
        """The answer written whole (or abandoned): the connection closed once it is sent."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()
            alone = self._thread is None
        if alone:
            self._close()

    def abort(self) -> None:
        """Nothing more sent: the client is gone, or its answer abandoned."""
        with contextlib.suppress(OSError):
            # Wakes a send blocked on a client that takes nothing.
            self._conn.shutdown(socket.SHUT_RDWR)
        with self._cond:
            self._error = self._error or BrokenPipeError("abandoned")
            self._memory.clear()
            self._cond.notify_all()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            waiting = self._write_at - self._read_at
            self._read_at = self._write_at = 0
            self._memory.clear()
        with self._senders.lock:
            self._senders.filed -= waiting
            self._senders.active.discard(self)
        if self._file is not None:
            self._file.close()
        self._conn.close()


def _framed_text(raw: _Framed, coding: object) -> IO[str]:
    """A text stream of the answer, encoded as the client's stream (`coding`: its encoding and
    error handler), sent in frames of about 64 KiB (written by C code: an answer of 100,000
    rows is 100,000 writes). LookupError or ValueError: no coding Python knows."""
    encoding, errors = cast(list[str], coding)
    codecs.lookup(encoding)
    codecs.lookup_error(errors)
    return io.TextIOWrapper(io.BufferedWriter(cast(io.RawIOBase, raw), 1 << 16),
                            encoding=encoding, errors=errors, newline="")


OpenDump = Callable[[Path], "Dump"]
Answer = Callable[["Dump", str, str, IO[str], IO[str], "Session"], int]


def serve(dump_path: Path, *, idle_s: float, memory_bytes: int, open_dump: OpenDump,
          answer: Answer) -> int:
    """Answer questions about `dump_path` until `idle_s` pass without one (or SIGINT, SIGTERM);
    the exit code: 0 after a stop, 2 when the dump cannot be opened or the socket made, 3 when a
    server of this dump runs already."""
    import signal
    import threading

    path = Path(socket_path(dump_path))
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
    except OSError as err:
        print(f"sunpm sd serve: {path.parent}: {err.strerror}", file=sys.stderr)
        return 2
    if not private(path.parent):
        print(f"sunpm sd serve: {path.parent} is not a folder of this user's alone (mode 0700); "
              "remove it or set XDG_RUNTIME_DIR", file=sys.stderr)
        return 2
    state = _State(open_dump)
    try:
        # A dump that cannot be opened is said now, not at the first question.
        state.current(dump_path)
    except Exception as err:  # what the command would say of it
        if stop_received() is not None:
            raise  # `main`'s early stop, wrapped on its way out (a class being made): said so
        print(f"sunpm sd serve: {err}", file=sys.stderr)
        return 2
    # What the open made stays: set aside from collections before the first question.
    state.settle()
    stopped = threading.Event()
    claimed: list[_Listening] = []

    def stop(signum: int, frame: object) -> None:
        stopped.set()
        for claim in claimed:
            claim.listener.close()  # wakes the poll (the listener reads as closed)

    # Taken before the socket is made: a stop from then on is this server's own, which leaves
    # no socket or lock file behind (`main`'s early handler, before, raises where it lands).
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            listening = _listen(path)
        except OSError as err:
            print(f"sunpm sd serve: {path}: {err.strerror or err} (a socket path has at most "
                  "107 bytes: set XDG_RUNTIME_DIR to a shorter folder)", file=sys.stderr)
            return 2
        if listening is None:
            print(f"sunpm sd serve: a server of {dump_path} runs already", file=sys.stderr)
            return 3
        claimed.append(listening)
        if stopped.is_set():  # as the socket was made
            listening.release(path)
            return 0
        _answer_until_stopped(listening, path, dump_path, state, stopped, idle_s=idle_s,
                              memory_bytes=memory_bytes, answer=answer)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _answer_until_stopped(listening: _Listening, path: Path, dump_path: Path, state: _State,
                          stopped: threading.Event, *, idle_s: float, memory_bytes: int,
                          answer: Answer) -> None:
    import signal

    from store import _memo

    _memo.enable(memory_bytes)
    asking = _Asking(listening.listener)
    senders = _Senders()
    # A signal is also written here at once, even while DuckDB holds the main thread (its
    # handler above runs only once the main thread is back in Python): the question being
    # answered is interrupted.
    signalled, wakeup = os.pipe()
    os.set_blocking(wakeup, False)
    previous_wakeup = signal.set_wakeup_fd(wakeup)
    print(f"sunpm sd serve: {dump_path} open for `sunpm sd sql` (stops after "
          f"{idle_s / 60:g} min without a question, or Ctrl-C)", file=sys.stderr, flush=True)
    try:
        idle_at = time.monotonic() + idle_s
        while not stopped.is_set():
            ready = asking.wait(idle_at)
            if ready is None:
                if not stopped.is_set():
                    print("sunpm sd serve: idle, stopped", file=sys.stderr)
                break
            for conn, request in ready:
                if stopped.is_set() or senders.full():
                    conn.close()  # its asker answers the question itself
                    continue
                started = time.perf_counter()
                code = _answer_one(_Outbox(conn, senders), request, state, answer, signalled)
                idle_at = time.monotonic() + idle_s
                if code is not None:
                    print(f"sunpm sd serve: answered in {time.perf_counter() - started:.3f} s "
                          f"(exit {code})", file=sys.stderr, flush=True)
                state.settle()
    finally:
        asking.close()
        listening.release(path)  # a new server may start while the answers below are sent
        _memo.enable(0)
        if not stopped.is_set():
            # Idle: the answers their askers still take (a paused `less`) are sent to the end,
            # unless they leave or a signal stops it.
            senders.drain(stopped)
        senders.stop()
        signal.set_wakeup_fd(previous_wakeup)
        os.close(signalled)
        os.close(wakeup)


class _Asking:
    """The connections whose question is still coming in, read as their bytes arrive: a client
    that connects and says nothing (or little at a time) keeps no one else waiting."""

    def __init__(self, listener: socket.socket) -> None:
        import select

        self._select = select
        self._listener = listener
        listener.setblocking(False)
        self._poll = select.poll()
        self._poll.register(listener, select.POLLIN)
        #: By descriptor: the connection, what it sent so far, when it is given up.
        self._pending: dict[int, tuple[socket.socket, bytearray, float]] = {}

    def wait(self, idle_at: float) -> list[tuple[socket.socket, dict[str, object]]] | None:
        """The questions fully received, in the order they were; None at `idle_at` (nothing
        asked) or once the listener is closed (a stop)."""
        while True:
            now = time.monotonic()
            until = min([idle_at, *(at for _, _, at in self._pending.values())])
            if now >= idle_at or self._listener.fileno() < 0:
                return None
            ready: list[tuple[socket.socket, dict[str, object]]] = []
            for fd, events in self._poll.poll(max(0.0, until - now) * 1000):
                if fd == self._listener.fileno() or fd not in self._pending:
                    if events & self._select.POLLNVAL:
                        return None
                    self._accept()
                    continue
                request = self._read(fd)
                if request is not None:
                    ready.append(request)
            now = time.monotonic()
            for fd in [fd for fd, (_, _, at) in self._pending.items() if at <= now]:
                self._drop(fd)  # connected and never asked in time
            if ready:
                return ready

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return  # gone before accepted, or closed by a stop
        if len(self._pending) >= _PENDING_MAX:
            conn.close()  # its asker answers the question itself
            return
        conn.setblocking(False)
        self._pending[conn.fileno()] = (conn, bytearray(), time.monotonic() + _REQUEST_S)
        self._poll.register(conn, self._select.POLLIN)

    def _read(self, fd: int) -> tuple[socket.socket, dict[str, object]] | None:
        conn, data, _ = self._pending[fd]
        try:
            chunk = conn.recv(1 << 16)
        except BlockingIOError:
            return None
        except OSError:
            chunk = b""
        data += chunk
        whole = request_read(data)
        if chunk and whole is False:
            return None
        self._poll.unregister(fd)
        del self._pending[fd]
        request = parsed_request(data) if chunk and whole else None
        if request is None:
            conn.close()  # not one of ours, too long, or gone before its question ended
            return None
        conn.setblocking(True)
        return conn, request

    def _drop(self, fd: int) -> None:
        conn, _, _ = self._pending.pop(fd)
        self._poll.unregister(fd)
        conn.close()

    def close(self) -> None:
        for fd in list(self._pending):
            self._drop(fd)


class _Listening:
    """The server's claim on its socket: a lock file beside it, held (`flock`) while the server
    runs, then the socket bound. Two servers of one dump started at the same instant both find
    no one answering; only the lock decides between them, where a look then a bind would let
    both bind (the later one over the earlier's socket file, which then answers no one)."""

    def __init__(self, listener: socket.socket, lock: int, lock_path: Path) -> None:
        self.listener = listener
        self._lock = lock
        self._lock_path = lock_path

    def release(self, path: Path) -> None:
        """The socket and the lock file removed, while still held: no later server's."""
        self.listener.close()
        for held in (path, self._lock_path):
            with contextlib.suppress(OSError):
                held.unlink()
        os.close(self._lock)


def _listen(path: Path) -> _Listening | None:
    """The listening socket at `path`; None when a server of it runs already (holds the lock).
    A socket file left by a server that died is replaced."""
    import fcntl

    lock_path = path.with_suffix(".lock")
    while True:
        lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            return None
        except BaseException:
            os.close(lock)
            raise
        try:
            # The lock file of a server that removed it as we opened it: locked in vain.
            if os.fstat(lock).st_ino == os.stat(lock_path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(lock)
    try:
        path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(path))
            listener.listen(16)
        except BaseException:
            listener.close()
            raise
    except BaseException:
        lock_path.unlink(missing_ok=True)
        os.close(lock)
        raise
    return _Listening(listener, lock, lock_path)


#: Opens of the dump kept, each under the path an asker spelled (a script's absolute path, a
#: shell's relative one): about 7 MB each on a month of a hundred devices, where opening again
#: costs 0.4 s and reads every open segment.
_OPENS_KEPT: Final = 4


class _State:
    """The dump as opened, by the path the asker spelled (its findings name its files as a
    process of the asker's would), and what it looked like then (`_signature`), for the last few
    spellings; the DuckDB session of the questions over the current one, kept while they only
    read (a question that sets, creates or prepares anything closes it: the next one gets a
    fresh one, as a process of its own would)."""

    def __init__(self, open_dump: OpenDump) -> None:
        from collections import OrderedDict

        self._open = open_dump
        self._path: Path | None = None
        self._dump: Dump | None = None
        self._session: Session | None = None
        #: By spelling: the dump, what it looked like, how many findings it held once opened.
        self._opens: OrderedDict[Path, tuple[Dump, _Signature, tuple[int, int]]] = OrderedDict()
        #: How many findings the current dump held once opened, and once the session was made.
        self._opened = self._made = (0, 0)
        #: An open or a session was (maybe) let go since the last `settle`.
        self._dropped = False

    def current(self, path: Path) -> Dump:
        """The dump at `path` (relative to the current folder, the asker's) as it is now."""
        try:
            signature: _Signature | None = _signature(path)
        except OSError:
            signature = None  # gone or unreadable: the open says why, as the command would
        if self._dump is not None and path == self._path and signature is not None \
                and self._opens[path][1] == signature:
            return self._dump
        self.done(keep=False)
        self._dropped = True  # the current open, maybe for good
        self._dump = self._path = None
        kept = self._opens.pop(path, None)
        if kept is None or signature is None or kept[1] != signature:
            opened = self._open(path)
            if signature is None:  # opened all the same: for this question only
                self._dump, self._opened = opened, _said(opened)
                return opened
            kept = (opened, signature, _said(opened))
        self._opens[path] = kept
        while len(self._opens) > _OPENS_KEPT:
            self._opens.popitem(last=False)
        self._dump, _, self._opened = kept
        self._path = path
        return self._dump

    def session(self) -> Session:
        """The session of the next question, the dump's findings as a process of its own would
        have them once its session is made: the open's and the session's (the journal read,
        the definitions), none of an earlier question's reads."""
        from sdcard.sql import Session

        dump = self._dump
        assert dump is not None, "current() first"
        if self._session is None:
            _forget(dump, self._opened)
            self._session = Session(dump)
            self._made = _said(dump)
        _forget(dump, self._made)
        return self._session

    def done(self, *, keep: bool) -> None:
        """After a question: its session kept for the next if `keep` and it only read."""
        if self._session is not None and not (keep and self._session.pristine):
            self._session.close()
            self._session = None
            self._dropped = True

    def settle(self) -> None:
        """Between questions: what the last one left that only the cycle collector frees is
        freed, and what stays (the opens, the memo, DuckDB's and pyarrow's objects) is set aside
        from later collections (`gc.freeze`). A collection walking all of it took 38 ms on a
        month of a hundred devices, in one question out of three or four. Once an open or a
        session was let go, everything is walked again (what they held in cycles is freed)."""
        import gc

        if self._dropped:
            gc.unfreeze()
            self._dropped = False
        gc.collect()
        gc.freeze()


def _said(dump: Dump) -> tuple[int, int]:
    return len(dump.log.reports), len(dump.extra)


def _forget(dump: Dump, said: tuple[int, int]) -> None:
    """The dump's findings back to what they were when `said` was taken."""
    dump.log.forget_reports(said[0])
    del dump.extra[said[1]:]


_Signature = tuple[tuple[str, int, int, int], ...]


def _signature(root: Path) -> _Signature:
    """Every folder of the dump and every file but sealed `.arrow` ones (written whole under a
    new name, which changes their folder): name, size, modification and change times. What a
    writer does to a store (a commit, a compaction, a deletion) changes it."""
    found = []
    folders = [str(root)]
    while folders:
        folder = folders.pop()
        try:
            st = os.stat(folder)
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            if folder == str(root):
                raise
            continue  # removed since its parent was listed: the parent's times say so
        found.append((folder, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif not entry.name.endswith(".arrow"):
                    st = entry.stat(follow_symlinks=False)
                    found.append((entry.path, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
            except FileNotFoundError:
                continue  # a writer's file renamed or removed since listed (a live store)
    return tuple(sorted(found))


def _answer_one(outbox: _Outbox, request: dict[str, object], state: _State,
                answer: Answer, signalled: int) -> int | None:
    """One question, answered as the command would, the exit code last (returned; None when
    the client went away, the server was stopped before the end, or the question was not one of
    ours). A client gone before the end (Ctrl-C, `| head`, killed) ends its answer: at its next
    output, or sooner by interrupting DuckDB when it goes while nothing is written (a long
    aggregate); so does a signal to the server (`signalled` readable), whose client answers the
    question itself when nothing was sent yet. What the client has not taken yet when the answer
    is written is sent to it by `outbox` while the next questions are answered."""
    code = _answered(outbox, request, state, answer, signalled)
    if code is None:
        outbox.abort()
    outbox.finish()
    return code


def _answered(outbox: _Outbox, request: dict[str, object], state: _State, answer: Answer,
              signalled: int) -> int | None:
    raw_out, raw_err = _Framed(outbox, OUT), _Framed(outbox, ERR)
    try:
        query, fmt = str(request["query"]), str(request["format"])
        cwd, spelled = str(request["cwd"]), str(request["dump"])
        out = _framed_text(raw_out, request["out"])
        err = _framed_text(raw_err, request["err"])
        # A relative path in the SQL, or the dump's, is the client's.
        os.chdir(cwd)
    except (KeyError, TypeError, ValueError, LookupError, OSError):
        return None  # not one of ours, or its folder is gone: the asker answers it itself
    try:
        try:
            dump = state.current(Path(spelled))
            session = state.session()
        except Exception as error:  # noqa: BLE001  (said as the command says it)
            print(f"sunpm sd sql: {error}", file=err)
            code = 2
        else:
            unsaid = False
            with _Watch(outbox, session, signalled) as watch:
                try:
                    code = answer(dump, query, fmt, out, err, session)
                except OSError:
                    state.done(keep=False)  # its answer cut short
                    raise
                except Exception as error:  # noqa: BLE001  (the server answers the next one)
                    # Text the client's streams cannot encode (`PYTHONIOENCODING=ascii`), before
                    # anything was sent: its asker answers, failing as it fails alone.
                    unsaid = isinstance(error, UnicodeEncodeError) \
                        and not (raw_out.sent or raw_err.sent)
                    print(f"sunpm sd sql: internal error: {error!r}", file=err)
                    code = 1
            if watch.gone or unsaid:
                state.done(keep=False)
                raw_out.dropped = raw_err.dropped = True
                return None
            state.done(keep=code == 0)
        out.flush()
        err.flush()
        outbox.write(FRAME.pack(EXIT, len(str(code))) + str(code).encode())
    except OSError:
        return None  # the client went away
    return code


class _Watch:
    """While a question is answered, its client watched: gone (its socket closed, or anything
    more sent on it), or the server signalled to stop (`signalled` readable), the DuckDB query
    is interrupted and the answer abandoned. The watch ends before the question's answer does,
    so that no interrupt reaches the next question."""

    def __init__(self, outbox: _Outbox, session: Session, signalled: int) -> None:
        import threading

        self._signalled = signalled
        self._outbox = outbox
        self._conn = outbox.conn
        self._session = session
        self._lock = threading.Lock()
        self._over = False
        self._wake_r, self._wake_w = os.pipe()
        self.gone = False
        self._thread = threading.Thread(target=self._run, name="sd-serve-watch", daemon=True)

    def __enter__(self) -> _Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._over = True
        os.write(self._wake_w, b"x")
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        import select

        poll = select.poll()
        poll.register(self._conn, select.POLLIN | select.POLLRDHUP)
        poll.register(self._wake_r, select.POLLIN)
        poll.register(self._signalled, select.POLLIN)
        while True:
            fds = {fd for fd, _ in poll.poll()}
            if self._wake_r in fds:
                return
            if fds:
                break
        self.gone = True
        # A write waiting for the client to take what is before it (the files full) ends too.
        self._outbox.abort()
        woken = select.poll()
        woken.register(self._wake_r, select.POLLIN)
        # Again until the question ends: an interrupt with no query running is lost (the
        # client went before DuckDB began), and leaves nothing behind for a later query.
        while True:
            with self._lock:
                if self._over:
                    return
                self._session.interrupt()
            if woken.poll(50):
                return
