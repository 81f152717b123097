"""A broker written out by hand on 127.0.0.1, for behaviours mosquitto never shows: it answers
CONNECT and SUBSCRIBE, never acknowledges a publish, and drops the connection right after the
answer the test names (`drop_after`: CONNECT or SUBSCRIBE) or holds it, and may follow its
CONNACK or its SUBACK with bytes of the test's (`after_connack`, `after_suback`), or send those
instead of the SUBACK (`instead_of_suback`). Counts the connections it accepted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass(slots=True)
class RawBroker:
    drop_after: int | None = None       # packet type: 1 CONNECT, 8 SUBSCRIBE; None holds
    after_connack: bytes = b""
    after_suback: bytes = b""
    instead_of_suback: bytes | None = None
    connections: int = 0
    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            while True:
                kind, body = await _packet(reader)
                if kind == 1:  # CONNECT
                    writer.write(b"\x20\x02\x00\x00" + self.after_connack)
                    self.connections += 1
                    self.accepted.set()
                elif kind == 8:  # SUBSCRIBE: packet id, then one granted QoS per topic
                    writer.write(b"\x90\x03" + body[:2] + b"\x01" + self.after_suback
                                 if self.instead_of_suback is None else self.instead_of_suback)
                elif kind == 12:  # PINGREQ
                    writer.write(b"\xd0\x00")
                elif kind == 14:  # DISCONNECT
                    break
                await writer.drain()
                if kind == self.drop_after:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


async def _packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(1)
    length = shift = 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return head[0] >> 4, await reader.readexactly(length)


@contextlib.asynccontextmanager
async def raw_broker(*, drop_after: int | None = None, after_connack: bytes = b"",
                     after_suback: bytes = b"",
                     instead_of_suback: bytes | None = None) -> AsyncIterator[RawBroker]:
    broker = RawBroker(drop_after=drop_after, after_connack=after_connack,
                       after_suback=after_suback, instead_of_suback=instead_of_suback)
    listener = await asyncio.start_server(broker.serve, "127.0.0.1", 0)
    broker.port = listener.sockets[0].getsockname()[1]
    try:
        yield broker
    finally:
        listener.close()
        for task in broker.tasks:
            task.cancel()
        await asyncio.gather(*broker.tasks, return_exceptions=True)
