"""The local command channel: a Unix socket `<data>/sunpm.sock` for `sunpm cmd`.

The socket is created with mode 0600, so only its owner (the service user) and root can open it
(docs/behaviour.md §7.1: local users are trusted like logged-in web users; every built-in is
allowed).
One request per connection, one JSON line each way:

    -> {"rpcName": "sunpm.status", "parameters": {}, "callerId": null}
    <- {"result": {...}, "callerId": null}     or     {"error": "<text>", "callerId": null}

`{"request": "archive"}` (`sunpm archive`) is not a command: it makes the debug archive and
answers `{"result": "<path>"}`, nothing journaled.

Requests are limited to 1 MiB; an unreadable one is answered with an error worded like
docs/formats.md §14.4's for the channel. A client has 10 s to send its request line (the
command then may take its 600 s), and at most 16 connections are served at once: a silent or
slow client cannot hold a connection, and many cannot exhaust the gateway's tasks and
descriptors (docs/behaviour.md §13: every queue is bounded); the one over the cap is answered
`local: busy, 16 connections open` at once.

A Unix socket's name holds 107 bytes: a longer path (a deep data folder) is reached through its
folder's descriptor, `/proc/self/fd/<n>/sunpm.sock` (`unix_address`), by the gateway and by
`sunpm cmd` alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Final

from config.errors import SunpmError
from exporters.session.commands import load_command_json, repeated_key
from pipeline.service.commands import CommandExecutor
from store.events import Channel, CommandReceived

log = logging.getLogger("sunpm.command")

SOCKET_NAME: Final = "sunpm.sock"
REQUEST_MAX_BYTES: Final = 1 << 20
REQUEST_TIMEOUT_S: Final = 10.0
CONNECTIONS_MAX: Final = 16
#: The bytes of a Unix socket's name (`sun_path` without its NUL) on Linux.
SUN_PATH_MAX: Final = 107


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """`path` as a Unix socket address: itself when it fits `SUN_PATH_MAX`, else the same file
    through a descriptor of its folder (`/proc/self/fd/<n>/<name>`), open while the block runs.
    OSError (ENAMETOOLONG, naming the path and the limit) when neither fits."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        yield str(path)
        return
    try:
        folder = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    except OSError as err:
        raise OSError(err.errno, f"{path.parent}: {err.strerror}") from err
    try:
        short = f"/proc/self/fd/{folder}/{path.name}"
        if len(os.fsencode(short)) > SUN_PATH_MAX or not os.path.isdir(short.rsplit("/", 1)[0]):
            raise OSError(errno.ENAMETOOLONG, f"{path}: {len(os.fsencode(path))} bytes, over the "
                          f"{SUN_PATH_MAX} a Unix socket's name may hold")
        yield short
    finally:
        os.close(folder)


class LocalChannel:
    """Serves `<data>/sunpm.sock` until cancelled, then removes it."""

    def __init__(self, path: Path, commands: CommandExecutor, *,
                 archive: Callable[[], Awaitable[Path]] | None = None,
                 request_timeout_s: float = REQUEST_TIMEOUT_S,
                 connections_max: int = CONNECTIONS_MAX) -> None:
        self.path = path
        self._commands = commands
        self._archive = archive
        self._request_timeout_s = request_timeout_s
        self._connections_max = connections_max
        self._connections = 0
        self._refusing = False

    async def run(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()       # a socket left by a killed run (the store lock says we own
        try:                         # the data now)
            sock = _private_socket(self.path)
            server = await asyncio.start_unix_server(self._serve, sock=sock,
                                                     limit=REQUEST_MAX_BYTES)
        except OSError as err:
            # A read-only folder, no /proc to reach a path over 107 bytes.
            log.warning("Local command socket not available; `sunpm cmd` cannot reach this "
                        "gateway. path=%s error=%s", self.path, err)
            return
        try:
            async with server:
                await server.serve_forever()
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        try:
            refused = self._connections > self._connections_max
            if refused:
                if not self._refusing:     # once per burst: a flood must not flood the log
                    log.warning("Local command connections refused: %d connections open",
                                self._connections_max)
                self._refusing = True
                answer: dict[str, object] = {
                    "error": f"local: busy, {self._connections_max} connections open",
                    "callerId": None}
            else:
                self._refusing = False
                answer = await self._read_and_answer(reader)
            writer.write(json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()
                         + b"\n")
            # A client that never reads its answer must not hold the connection either.
            async with asyncio.timeout(self._request_timeout_s):
                await writer.drain()
            if refused:
                # The request of a refused client is read off (a second at most) so that the
                # close does not reset the connection under its answer.
                with contextlib.suppress(TimeoutError, ValueError, asyncio.LimitOverrunError):
                    async with asyncio.timeout(1.0):
                        await reader.readline()
        except TimeoutError:
            log.debug("Local command answer not read within %g s", self._request_timeout_s)
            writer.transport.abort()
        except (ConnectionError, OSError) as err:
            log.debug("Local command connection lost: %s", err)
        except asyncio.CancelledError:
            # The gateway stops while a command waits: the connection closes unanswered. Not
            # re-raised: asyncio 3.11's stream callback would print this leaf task's
            # cancellation as an unhandled error on stderr.
            log.debug("Local command connection closed at stop")
        finally:
            self._connections -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _read_and_answer(self, reader: asyncio.StreamReader) -> dict[str, object]:
        try:
            async with asyncio.timeout(self._request_timeout_s):
                line = await reader.readline()
        except (ValueError, asyncio.LimitOverrunError):
            return {"error": "local: request larger than 1 MiB", "callerId": None}
        except TimeoutError:
            return {"error": f"local: no request within {self._request_timeout_s:g} s",
                    "callerId": None}
        return await self._answer(line)

    async def _answer(self, line: bytes) -> dict[str, object]:
        # Read as strictly as a command from a server: NaN, Infinity or nesting past 32 levels
        # could not be journaled (or would exhaust the decoder's recursion).
        doc, problem = load_command_json(line, "local")
        if problem is not None:
            return {"error": problem, "callerId": None}
        if not isinstance(doc, dict):
            return {"error": "local: one command object per request", "callerId": None}
        repeated = repeated_key(doc)
        if repeated is not None:
            return {"error": f"local: key '{repeated[:40]}' repeated in an object",
                    "callerId": None}
        if doc.get("request") == "archive" and self._archive is not None:
            try:
                return {"result": str(await self._archive())}
            except (SunpmError, OSError) as err:
                return {"error": f"archive: {err}"}
        rpc, parameters, caller = doc.get("rpcName"), doc.get("parameters", {}), \
            doc.get("callerId")
        if not isinstance(rpc, str) or not rpc:
            return {"error": "local: rpcName is missing", "callerId": None}
        if not isinstance(parameters, dict):
            return {"error": f"{rpc}: parameters must be an object", "callerId": None}
        if caller is not None and (isinstance(caller, bool) or not isinstance(caller, (str, int))):
            return {"error": "local: callerId must be a string or an integer", "callerId": None}
        result = await self._commands.call(CommandReceived(
            channel=Channel.LOCAL, rpc_name=rpc, parameters=parameters, caller_id=caller))
        return dict(result.entry())


def _private_socket(path: Path) -> socket.socket:
    """A Unix socket listening at `path` that only its owner may open (0600) from the start.

    Bound in a folder of this process's only (0700), made 0600 there, then renamed into place:
    the umask, the other way to create it 0600, is the whole process's, and the store's worker
    threads creating folders meanwhile would get them without their x bit."""
    staging = path.with_name(f".s{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        (staging / path.name).unlink()
    with contextlib.suppress(FileExistsError):
        staging.mkdir(mode=0o700)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with unix_address(staging / path.name) as address:
            sock.bind(address)
        os.chmod(staging / path.name, 0o600)
        os.replace(staging / path.name, path)
        sock.listen(100)
    except OSError:
        sock.close()
        raise
    finally:
        with contextlib.suppress(OSError):
            (staging / path.name).unlink()
        with contextlib.suppress(OSError):
            staging.rmdir()
    return sock
