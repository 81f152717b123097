"""The MQTT transport against a real mosquitto on 127.0.0.1 (plain, password and TLS listeners)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import aiomqtt
import pytest
from peers import Broker, Certs, slow_link
from waiting import wait_until

from config.model import ServerSettings, ServerType
from exporters.transports import (
    MAX_IN_FLIGHT,
    Failure,
    InboundMessage,
    MqttTransport,
    Timeouts,
    TransportError,
)

TOPIC = "plant/WPM00C44F/data"
COMMANDS = "plant/WPM00C44F/cmd"
FAST = Timeouts(connect_s=10.0, operation_s=10.0)


def _settings(broker: Broker, **changes: object) -> ServerSettings:
    base = ServerSettings(slot=1, type=ServerType.MQTT, host="127.0.0.1", port=broker.plain_port,
                          mqtt_client_id="WPM00C44F", qos=1, keep_alive_s=30,
                          topic_data=TOPIC, topic_command=COMMANDS, topic_result=COMMANDS + "/r")
    return replace(base, **changes)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def _connected(broker: Broker, certs: Certs, timeouts: Timeouts = FAST,
                     **changes: object) -> AsyncIterator[MqttTransport]:
    transport = MqttTransport(_settings(broker, **changes), cert_dir=certs.dir, timeouts=timeouts)
    await transport.connect()
    try:
        yield transport
    finally:
        await transport.close()


@contextlib.asynccontextmanager
async def _observer(broker: Broker, topic: str = TOPIC,
                    ) -> AsyncIterator[asyncio.Queue[bytes]]:
    """A separate client collecting what the broker delivers on `topic`."""
    received: asyncio.Queue[bytes] = asyncio.Queue()
    async with aiomqtt.Client("127.0.0.1", broker.plain_port, identifier="observer") as client:
        await client.subscribe(topic, qos=2)

        async def collect() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                await received.put(message.payload)
        task = asyncio.create_task(collect(), name="observer")
        try:
            yield received
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _publish_from_outside(broker: Broker, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.plain_port, identifier="operator") as client:
        await client.publish(topic, payload, qos=1)


async def _next(messages: AsyncIterator[InboundMessage], limit_s: float = 5) -> InboundMessage:
    async with asyncio.timeout(limit_s):
        return await anext(messages)


async def test_qos1_publish_returns_only_after_the_broker_acknowledged(broker: Broker,
                                                                       certs: Certs) -> None:
    async with _observer(broker) as received, _connected(broker, certs) as transport:
        broker.pause()
        publish = asyncio.create_task(transport.publish(TOPIC, b'{"inv1":[]}'))
        await asyncio.sleep(0.5)
        assert not publish.done(), "publish returned before any PUBACK could exist"
        broker.resume()
        async with asyncio.timeout(5):
            await publish
        async with asyncio.timeout(5):
            assert await received.get() == b'{"inv1":[]}'


async def test_qos0_publish_returns_once_sent(broker: Broker, certs: Certs) -> None:
    async with _connected(broker, certs, qos=0) as transport:
        broker.pause()
        try:
            async with asyncio.timeout(2):
                await transport.publish(TOPIC, b"fire and forget")
        finally:
            broker.resume()


@pytest.mark.parametrize("configured", [True, False])
async def test_qos2_message_is_delivered_exactly_once(broker: Broker, certs: Certs,
                                                      configured: bool) -> None:
    async with _observer(broker) as received, \
            _connected(broker, certs, qos=2 if configured else 1) as transport:
        await transport.publish(TOPIC, b"once", qos=None if configured else 2)
        async with asyncio.timeout(5):
            assert await received.get() == b"once"
        await asyncio.sleep(0.2)
        assert received.empty()


async def test_at_most_ten_publishes_wait_for_their_acknowledgement(broker: Broker,
                                                                    certs: Certs) -> None:
    payloads = [f"window {i}".encode() for i in range(25)]
    async with _observer(broker) as received, _connected(broker, certs) as transport:
        broker.pause()
        tasks = [asyncio.create_task(transport.publish(TOPIC, p)) for p in payloads]
        await wait_until(lambda: transport.in_flight == MAX_IN_FLIGHT == 10, 5)
        assert not any(t.done() for t in tasks)
        broker.resume()
        async with asyncio.timeout(10):
            await asyncio.gather(*tasks)
        assert transport.in_flight == 0
        got = [await asyncio.wait_for(received.get(), 5) for _ in payloads]
    assert sorted(got) == sorted(payloads)


async def test_publishes_on_a_slow_link_that_keeps_moving_are_not_cut(broker: Broker,
                                                                      certs: Certs) -> None:
    # Ten documents of 64 KiB at 128 KiB/s: the last is acknowledged after some 5 s, five
    # times the operation timeout, yet never a second passes without bytes leaving
    # (docs/behaviour.md §4.5: 60 s without progress, not 60 s per publish).
    payloads = [bytes([i]) * (64 << 10) for i in range(MAX_IN_FLIGHT)]
    async with slow_link(broker.plain_port, 128 << 10) as port, \
            _connected(broker, certs, Timeouts(connect_s=10, operation_s=1.0),
                       port=port) as transport:
        started = time.monotonic()
        await asyncio.gather(*(transport.publish(TOPIC, p) for p in payloads))
    assert time.monotonic() - started > 2


async def test_command_topic_messages_arrive_in_order(broker: Broker, certs: Certs) -> None:
    async with _connected(broker, certs) as transport:
        messages = transport.messages()
        for i in range(3):
            await _publish_from_outside(broker, COMMANDS, f'{{"callerId":"{i}"}}'.encode())
        got = [await _next(messages) for _ in range(3)]
    assert [m.payload for m in got] == [b'{"callerId":"0"}', b'{"callerId":"1"}',
                                        b'{"callerId":"2"}']
    assert {m.topic for m in got} == {COMMANDS}


async def test_a_packet_larger_than_any_command_drops_the_connection_unread(
        broker: Broker, certs: Certs) -> None:
    # MQTT 3.1.1 cannot tell the broker a maximum packet size, and paho reads a packet whole
    # (up to 256 MB) before handing it over: past 16 MiB the connection is dropped before the
    # body is read (docs/behaviour.md §4.5). 2 MiB still arrives, for the session to answer
    # "larger than 1 MiB; not executed" and acknowledge it.
    over_command = b"x" * (2 << 20)
    async with _connected(broker, certs) as transport:
        messages = transport.messages()
        await _publish_from_outside(broker, COMMANDS, over_command)
        # Kept only as far as it takes to see it is too large, so that 64 such messages
        # waiting for a busy handler hold 64 MiB, not a gigabyte.
        assert (await _next(messages)).payload == over_command[:(1 << 20) + 1]
        await _publish_from_outside(broker, COMMANDS, b"y" * (17 << 20))
        with pytest.raises(TransportError) as caught:
            await _next(messages)
    assert caught.value.failure is Failure.CONNECTION_LOST and caught.value.retriable
    assert f"a packet of {(17 << 20) + len(COMMANDS) + 4} bytes" in str(caught.value)
    assert "larger than 16 MiB; not read" in str(caught.value)


async def test_a_former_command_topic_kept_by_the_broker_brings_no_command(
        broker: Broker, certs: Certs) -> None:
    # Clean session off: the broker keeps the subscription to the topic the command topic was
    # changed from, and delivers it still. Whoever may publish there must not command the
    # gateway any more.
    former = "plant/old/cmd"
    async with _connected(broker, certs, topic_command=former):
        pass
    async with _connected(broker, certs) as transport:
        messages = transport.messages()
        await _publish_from_outside(broker, former, b'{"callerId":"old"}')
        await _publish_from_outside(broker, COMMANDS, b'{"callerId":"new"}')
        got = await _next(messages)
    assert (got.topic, got.payload) == (COMMANDS, b'{"callerId":"new"}')


async def test_commands_sent_while_offline_arrive_after_reconnecting(broker: Broker,
                                                                     certs: Certs) -> None:
    # Clean session off: the broker keeps the subscription and queues QoS 1 messages.
    async with _connected(broker, certs):
        pass
    await _publish_from_outside(broker, COMMANDS, b"while away")
    async with _connected(broker, certs) as transport:
        assert (await _next(transport.messages())).payload == b"while away"


async def test_broker_restart_fails_the_connection_retriably_and_reconnect_resumes(
        broker: Broker, certs: Certs) -> None:
    transport = MqttTransport(_settings(broker), cert_dir=certs.dir, timeouts=FAST)
    await transport.connect()
    try:
        await transport.publish(TOPIC, b"before")
        broker.restart()  # SIGTERM then start: persistent sessions are saved and restored
        with pytest.raises(TransportError) as caught:
            async with asyncio.timeout(5):
                async for _ in transport.messages():
                    pass
        assert caught.value.failure is Failure.CONNECTION_LOST and caught.value.retriable
        with pytest.raises(TransportError) as caught:
            await transport.publish(TOPIC, b"while down")
        assert caught.value.retriable
        await transport.close()
        await _publish_from_outside(broker, COMMANDS, b"queued across the restart")
        async with _observer(broker) as received:
            await transport.connect()
            await transport.publish(TOPIC, b"after")
            async with asyncio.timeout(5):
                assert await received.get() == b"after"
            assert (await _next(transport.messages())).payload == b"queued across the restart"
    finally:
        await transport.close()


async def test_broker_killed_while_a_publish_waits_fails_it_at_once(broker: Broker,
                                                                    certs: Certs) -> None:
    async with _connected(broker, certs) as transport:
        broker.pause()
        publish = asyncio.create_task(transport.publish(TOPIC, b"in flight"))
        await wait_until(lambda: transport.in_flight == 1, 5)     # sent, awaiting its PUBACK
        started = time.monotonic()
        broker.kill()
        with pytest.raises(TransportError) as caught:
            async with asyncio.timeout(8):
                await publish
    assert caught.value.failure is Failure.CONNECTION_LOST and caught.value.retriable
    assert time.monotonic() - started < 3


async def test_wrong_password_is_an_authentication_failure(broker: Broker, certs: Certs) -> None:
    async with _connected(broker, certs, port=broker.auth_port, user="sunpm",
                          password="secret") as transport:
        await transport.publish(TOPIC, b"authenticated")
    transport = MqttTransport(_settings(broker, port=broker.auth_port, user="sunpm",
                                        password="wrong"), cert_dir=certs.dir, timeouts=FAST)
    with pytest.raises(TransportError) as caught:
        await transport.connect()
    await transport.close()
    assert caught.value.failure is Failure.AUTHENTICATION and not caught.value.retriable


def _tls(broker: Broker, certs: Certs, **changes: object) -> dict[str, object]:
    return {"type": ServerType.MQTTS, "port": broker.tls_port, "ca_file": certs.ca,
            "cert_file": certs.client_cert, "key_file": certs.client_key, **changes}


async def test_mqtts_with_a_client_certificate_publishes(broker: Broker, certs: Certs) -> None:
    async with _observer(broker) as received, \
            _connected(broker, certs, **_tls(broker, certs)) as transport:  # type: ignore[arg-type]
        await transport.publish(TOPIC, b"over TLS")
        async with asyncio.timeout(5):
            assert await received.get() == b"over TLS"


@pytest.mark.parametrize("case", ["other CA", "host name", "missing CA file"])
async def test_mqtts_broker_identity_mismatch_is_not_retriable(broker: Broker, certs: Certs,
                                                               case: str) -> None:
    changes = {"other CA": {"ca_file": certs.other_ca}, "host name": {"host": "localhost"},
               "missing CA file": {"ca_file": "absent.pem"}}[case]
    transport = MqttTransport(_settings(broker, **_tls(broker, certs, **changes)),
                              cert_dir=certs.dir, timeouts=FAST)
    with pytest.raises(TransportError) as caught:
        await transport.connect()
    await transport.close()
    assert caught.value.failure is Failure.TRUST and not caught.value.retriable


async def test_mqtts_without_a_client_certificate_is_refused(broker: Broker,
                                                             certs: Certs) -> None:
    transport = MqttTransport(_settings(broker, **_tls(broker, certs, cert_file="",
                                                       key_file="")),
                              cert_dir=certs.dir, timeouts=Timeouts(connect_s=2, operation_s=2))
    with pytest.raises(TransportError) as caught:
        await transport.connect()
    await transport.close()
    # TLS 1.3: mosquitto closes after the handshake, before CONNACK (see mqtt.py's docstring).
    assert caught.value.failure is Failure.TIMEOUT
    assert "client certificate" in str(caught.value)


async def test_publish_without_connection_fails_retriably(broker: Broker, certs: Certs) -> None:
    transport = MqttTransport(_settings(broker), cert_dir=certs.dir, timeouts=FAST)
    with pytest.raises(TransportError) as caught:
        await transport.publish(TOPIC, b"x")
    assert caught.value.retriable
