"""A small FTP server written out by hand on 127.0.0.1, for answers no real server gives: each
command is a method a test may replace (`RawFtp.handlers`), files live in a dict, passive mode
only. Enough of RFC 959 for `exporters.transports.ftp` to log in, list, size, store, rename,
fetch and delete, in passive or active (`PORT`) mode."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from config.model import ServerSettings, ServerType

Handler = Callable[["Conn", str], Awaitable[None]]


@dataclass(slots=True)
class Conn:
    """One control connection and the passive data listener it opened last."""

    server: RawFtp
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    data: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(
        default_factory=asyncio.Queue)
    listener: asyncio.Server | None = None
    rename_from: str = ""
    active: tuple[str, int] | None = None   # the client's PORT address

    async def open_data(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.active is not None:
            return await asyncio.open_connection(*self.active)
        return await asyncio.wait_for(self.data.get(), 10)

    async def reply(self, line: str) -> None:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()



@dataclass(slots=True)
class RawFtp:
    files: dict[str, bytes] = field(default_factory=dict)
    handlers: dict[str, Handler] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    port: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    greeting: tuple[str, ...] = ("220 raw",)

    def settings(self, **kw: object) -> ServerSettings:
        return ServerSettings(slot=1, type=ServerType.FTP, host="127.0.0.1", port=self.port,
                              user="u", password="p", root_dir="/", **kw)  # type: ignore[arg-type]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(self, reader, writer)
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)  # a handler stuck on purpose is cancelled at the end
        try:
            for line in self.greeting:
                await conn.reply(line)
            while line := await reader.readline():
                text = line.decode().rstrip("\r\n")
                self.commands.append(text)
                verb, _, arg = text.partition(" ")
                handler = self.handlers.get(verb.upper(), DEFAULTS.get(verb.upper(), _unknown))
                await handler(conn, arg)
                if verb.upper() == "QUIT":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError,
                asyncio.CancelledError):
            pass
        finally:
            if conn.listener is not None:
                conn.listener.close()
            writer.close()


async def _unknown(conn: Conn, arg: str) -> None:
    await conn.reply("502 not implemented")


async def _ok(conn: Conn, arg: str) -> None:
    await conn.reply("200 ok")


async def _user(conn: Conn, arg: str) -> None:
    await conn.reply("331 password")


async def _pass(conn: Conn, arg: str) -> None:
    await conn.reply("230 in")


async def _cwd(conn: Conn, arg: str) -> None:
    await conn.reply("250 ok")


async def _pasv(conn: Conn, arg: str) -> None:
    if conn.listener is not None:
        conn.listener.close()

    async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await conn.data.put((reader, writer))
    conn.listener = await asyncio.start_server(take, "127.0.0.1", 0)
    port = conn.listener.sockets[0].getsockname()[1]
    await conn.reply(f"227 Entering Passive Mode (127,0,0,1,{port >> 8},{port & 255})")


def port_address(arg: str) -> tuple[str, int]:
    """The address of a `PORT h1,h2,h3,h4,p1,p2` argument."""
    parts = arg.split(",")
    return ".".join(parts[:4]), int(parts[4]) << 8 | int(parts[5])


async def _port(conn: Conn, arg: str) -> None:
    conn.active = port_address(arg)
    await conn.reply("200 ok")


async def _size(conn: Conn, arg: str) -> None:
    data = conn.server.files.get(arg)
    await conn.reply(f"213 {len(data)}" if data is not None else "550 no such file")


async def _mlsd(conn: Conn, arg: str) -> None:
    folder = arg.rstrip("/") + "/"
    await conn.reply("150 listing")
    _, writer = await conn.open_data()
    for name, data in sorted(conn.server.files.items()):
        if name.startswith(folder) and "/" not in name[len(folder):]:
            writer.write(f"type=file;size={len(data)}; {name[len(folder):]}\r\n".encode())
    await writer.drain()
    writer.close()
    await conn.reply("226 done")


async def _stor(conn: Conn, arg: str) -> None:
    await conn.reply("150 send")
    reader, writer = await conn.open_data()
    conn.server.files[arg] = await reader.read()
    writer.close()
    await conn.reply("226 stored")


async def _retr(conn: Conn, arg: str) -> None:
    data = conn.server.files.get(arg)
    if data is None:
        await conn.reply("550 no such file")
        return
    await conn.reply("150 sending")
    _, writer = await conn.open_data()
    writer.write(data)
    await writer.drain()
    writer.close()
    await conn.reply("226 sent")


async def _dele(conn: Conn, arg: str) -> None:
    found = conn.server.files.pop(arg, None)
    await conn.reply("250 deleted" if found is not None else "550 no such file")


async def _rnfr(conn: Conn, arg: str) -> None:
    conn.rename_from = arg
    await conn.reply("350 ready" if arg in conn.server.files else "550 no such file")


async def _rnto(conn: Conn, arg: str) -> None:
    conn.server.files[arg] = conn.server.files.pop(conn.rename_from)
    await conn.reply("250 renamed")


async def _quit(conn: Conn, arg: str) -> None:
    await conn.reply("221 bye")


DEFAULTS: dict[str, Handler] = {
    "USER": _user, "PASS": _pass, "TYPE": _ok, "CWD": _cwd, "PASV": _pasv, "PORT": _port,
    "SIZE": _size,
    "MLSD": _mlsd, "STOR": _stor, "RETR": _retr, "DELE": _dele, "RNFR": _rnfr, "RNTO": _rnto,
    "QUIT": _quit, "OPTS": _ok}


@contextlib.asynccontextmanager
async def raw_ftp(**handlers: Handler) -> AsyncIterator[RawFtp]:
    server = RawFtp(handlers={k.upper(): v for k, v in handlers.items()})
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        for task in server.tasks:
            task.cancel()
        await asyncio.gather(*server.tasks, return_exceptions=True)
