"""The IS side of an MQTT test: a subscriber on the broker of `peers.run_broker`.

Import side (`tests/` is on sys.path): `subscriber(port, *topics)`, an async context manager
collecting `(topic, payload)` pairs in arrival order while open, `wait_for(got, n)`, and
`session_subscribed(slot)`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiomqtt
from waiting import wait_until


@contextlib.asynccontextmanager
async def subscriber(port: int, *topics: str, qos: int = 1, identifier: str = "is-side"
                     ) -> AsyncIterator[list[tuple[str, bytes]]]:
    got: list[tuple[str, bytes]] = []
    async with aiomqtt.Client("127.0.0.1", port, identifier=identifier) as client:
        for topic in topics:
            await client.subscribe(topic, qos=qos)

        async def collect() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                got.append((str(message.topic), message.payload))

        task = asyncio.create_task(collect(), name="is-listener")
        try:
            yield got
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def wait_for(got: list[tuple[str, bytes]], n: int, timeout_s: float = 10) -> None:
    """Until `got` holds `n` messages at least; AssertionError after `timeout_s`."""
    await wait_until(lambda: len(got) >= n, timeout_s, what=f"{n} messages")


async def session_subscribed(slot: int, timeout_s: float = 10) -> None:
    """Until the `MqttSession.serve` of server `slot` is connected and subscribed to its command
    topic: it starts its command task (`mqtt-commands:<slot>`) only once the transport's
    `connect`, which waits for the SUBACK, has returned."""
    name = f"mqtt-commands:{slot}"
    await wait_until(lambda: any(t.get_name() == name and not t.done()
                                 for t in asyncio.all_tasks()),
                     timeout_s, what=f"server {slot}'s command subscription")
