"""MQTT sessions against a broker that misbehaves (raw_mqtt.py): one that drops every connection
right after accepting it, one that never acknowledges a publish (docs/behaviour.md §4.4, §4.5).
The permanent connection backs off and says so once; nothing is marked delivered that the broker
did not acknowledge."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest
from delivery_support import DAY, T0, DemoSource, fill
from peers import syn_dropping_port
from raw_mqtt import RawBroker, raw_broker
from waiting import wait_until

from config.model import ServerSettings, ServerType
from exporters.outbox import Outbox
from exporters.session import MqttSession, Trigger
from exporters.session import mqtt as mqtt_session
from exporters.transports import Failure, MqttTransport, Timeouts, TransportError
from exporters.transports._base import DEFAULT_TIMEOUTS
from store.delivery import DeliveryState, Stream
from store.events import JournalItem
from store.log import Log

H = 3600
CONNECT, SUBSCRIBE = 1, 8


def _session(store: Log, broker: RawBroker, tmp_path: Path, *, command_topic: str,
             operation_s: float = 5.0) -> MqttSession:
    s = ServerSettings(slot=2, type=ServerType.MQTT, host="127.0.0.1", port=broker.port,
                       mqtt_client_id="sunpm-gw", topic_alarm="plant/alarm",
                       topic_command=command_topic, qos=1, keep_alive_s=30)
    outbox = Outbox(server=2, log=store, source=DemoSource(store), directory=tmp_path / "outbox",
                    streams=(Stream.DATA,))

    def alarm_payload(item: JournalItem) -> bytes:
        return json.dumps({"seq": item.seq}).encode()

    transport = MqttTransport(s, cert_dir=tmp_path,
                              timeouts=Timeouts(connect_s=5, operation_s=operation_s))
    return MqttSession(settings=s, transport=transport, outbox=outbox, log=store,
                       alarm_payload=alarm_payload)


def _lines(caplog: pytest.LogCaptureFixture, level: str, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelname == level and text in r.getMessage()]


@pytest.mark.parametrize(("command_topic", "drop_after"),
                         [("plant/cmd", SUBSCRIBE), ("", CONNECT)],
                         ids=["after-suback", "after-connack-no-command-topic"])
async def test_a_broker_dropping_every_connection_gets_a_growing_backoff_and_one_warning(
        store: Log, tmp_path: Path, caplog: pytest.LogCaptureFixture, command_topic: str,
        drop_after: int) -> None:
    caplog.set_level(logging.INFO, logger="sunpm.session")
    async with raw_broker(drop_after=drop_after) as broker:
        session = _session(store, broker, tmp_path, command_topic=command_topic)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(session.serve(stop), name="mqtt-serve")
            await wait_until(lambda: broker.connections >= 1, what="first connection")
            first = loop.time()
            # Waits of 1, 2 and 4 s between the four connections: the backoff grew although
            # each connection was accepted (it resets only once one holds).
            await wait_until(lambda: broker.connections >= 4, 30, what="fourth connection")
            elapsed = loop.time() - first
            stop.set()
    assert elapsed >= 6, f"four connections in {elapsed:.1f} s: the backoff did not grow"
    assert len(_lines(caplog, "WARNING", "server 2: connection lost")) == 1, caplog.text
    assert _lines(caplog, "INFO", "connection restored") == []


async def test_a_connection_that_holds_ends_the_outage_with_one_info_line(
        store: Log, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="sunpm.session")
    monkeypatch.setattr(mqtt_session, "_STABLE_S", 0.5)
    async with raw_broker(drop_after=SUBSCRIBE) as broker:
        session = _session(store, broker, tmp_path, command_topic="plant/cmd")
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(session.serve(stop), name="mqtt-serve")
            await wait_until(lambda: broker.connections >= 2, what="second connection")
            # This connection or the next holds: the broker reads the flag when it is asked to
            # subscribe, which the second connection may not have done yet.
            broker.drop_after = None
            await wait_until(lambda: _lines(caplog, "INFO", "connection restored"),
                             what="connection restored")
            stop.set()
    assert broker.connections in (2, 3)
    [warning] = _lines(caplog, "WARNING", "connection lost")
    assert warning.startswith("server 2: connection lost: ") and warning.endswith("; reconnecting")
    assert _lines(caplog, "INFO", "connection restored") == ["server 2: connection restored"]


async def test_a_broker_that_never_acknowledges_fails_the_session_and_nothing_is_delivered(
        store: Log, tmp_path: Path) -> None:
    await fill(store, T0, T0 + DAY, alarm_every_s=6 * H)
    async with raw_broker() as broker:
        session = _session(store, broker, tmp_path, command_topic="", operation_s=2.0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await session.run(Trigger.RETRY)
        assert loop.time() - started < 15
    assert not result.ok and result.retriable, result
    assert "no acknowledgement after 2 s" in result.reason
    state = DeliveryState.from_table(store.journal(kinds=["state", "window", "delivered"]))
    assert state.events.get((2, Stream.ALARM), 0) == 0


async def test_a_connection_closed_right_after_connack_is_reported_lost(tmp_path: Path) -> None:
    async with raw_broker(drop_after=CONNECT) as broker:
        s = ServerSettings(slot=2, type=ServerType.MQTT, host="127.0.0.1", port=broker.port,
                           mqtt_client_id="sunpm-gw", topic_alarm="plant/alarm", qos=1)
        transport = MqttTransport(s, cert_dir=tmp_path, timeouts=Timeouts(connect_s=5,
                                                                          operation_s=5))
        with pytest.raises(TransportError) as caught:
            await transport.connect()
        await transport.close()
    assert caught.value.failure is Failure.CONNECTION_LOST and caught.value.retriable
    assert "closed by the broker right after CONNACK" in str(caught.value)


async def test_a_broker_that_never_acknowledges_an_alarm_is_one_outage(
        store: Log, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The publish times out after the operation timeout: the connection held that long, but
    # acknowledged nothing, so it ends no outage (the backoff keeps growing, no INFO).
    assert DEFAULT_TIMEOUTS.operation_s < mqtt_session._STABLE_S
    caplog.set_level(logging.INFO, logger="sunpm.session")
    monkeypatch.setattr(mqtt_session, "_RECONNECT_S", (0.2, 0.4, 0.8))
    await fill(store, T0, T0 + DAY, alarm_every_s=6 * H)
    async with raw_broker() as broker:
        session = _session(store, broker, tmp_path, command_topic="", operation_s=1.0)
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(session.serve(stop), name="mqtt-serve")
            await wait_until(lambda: broker.connections >= 4, 30, what="fourth connection")
            stop.set()
    [warning] = _lines(caplog, "WARNING", "connection lost")
    assert "no acknowledgement after 1 s" in warning
    assert _lines(caplog, "INFO", "connection restored") == []
    state = DeliveryState.from_table(store.journal(kinds=["state", "window", "delivered"]))
    assert state.events.get((2, Stream.ALARM), 0) == 0


HUGE_BYTES = 200 << 20
# A PUBLISH announcing 200 MB (QoS 0, topic "c"), of which 1 MiB comes.
HUGE_PUBLISH = (bytes([0x30]) + bytes(((HUGE_BYTES >> (7 * i)) & 0x7F) | (0x80 if i < 3 else 0)
                                      for i in range(4))
                + b"\0\x01c" + b"z" * (1 << 20))


def _command_transport(broker: RawBroker) -> MqttTransport:
    s = ServerSettings(slot=2, type=ServerType.MQTT, host="127.0.0.1", port=broker.port,
                       mqtt_client_id="sunpm-gw", topic_command="c", qos=1, keep_alive_s=30)
    return MqttTransport(s, cert_dir=Path("/nonexistent"),
                         timeouts=Timeouts(connect_s=5, operation_s=5))


async def test_a_broker_announcing_a_huge_packet_is_dropped_before_its_body_is_read() -> None:
    # paho would hold the connection open and the bytes in memory until all 200 MB came; the
    # transport drops it at once instead (docs/behaviour.md §4.5).
    length = HUGE_BYTES
    async with raw_broker(after_suback=HUGE_PUBLISH) as broker:
        transport = _command_transport(broker)
        await transport.connect()
        try:
            with pytest.raises(TransportError) as caught:
                async with asyncio.timeout(5):
                    await anext(transport.messages())
        finally:
            await transport.close()
    assert caught.value.failure is Failure.CONNECTION_LOST
    assert f"a packet of {length} bytes" in str(caught.value)


@pytest.mark.parametrize("where", ["after-connack", "instead-of-suback"])
async def test_a_connection_lost_before_the_suback_fails_connect_at_once_with_its_reason(
        where: str) -> None:
    # As mosquitto resending a refused packet on connecting, before the SUBACK: the loss ends
    # the subscription's wait at once and is told as such, not as a subscribe timeout later.
    async with raw_broker(**{where.replace("-", "_"): HUGE_PUBLISH}) as broker:
        transport = _command_transport(broker)
        started = time.monotonic()
        try:
            with pytest.raises(TransportError) as caught:
                await transport.connect()
        finally:
            await transport.close()
    assert time.monotonic() - started < 4
    assert caught.value.failure is Failure.CONNECTION_LOST and caught.value.retriable
    assert f"a packet of {HUGE_BYTES} bytes" in str(caught.value)


@pytest.mark.parametrize("how", ["cancelled", "timed out"])
async def test_a_connect_ended_before_the_connack_closes_its_socket(tmp_path: Path,
                                                                   how: str) -> None:
    """A broker that never answers CONNECT, and a connect that ends first: cancelled (the
    service stopping as it connects) or timed out. The socket is closed at once; aiomqtt kept
    it open and read, and the broker's close, read later, raised in an event loop callback
    (`Exception in callback ... CancelledError` after the gateway's stop)."""
    connect_sent, client_gone = asyncio.Event(), asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(4096):   # the CONNECT, unanswered; then the client's close
            connect_sent.set()
        client_gone.set()

    loop = asyncio.get_running_loop()
    raised: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: raised.append(context))
    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        s = ServerSettings(slot=2, type=ServerType.MQTT, host="127.0.0.1",
                           port=server.sockets[0].getsockname()[1], mqtt_client_id="sunpm-gw",
                           topic_alarm="plant/alarm", qos=1)
        connect_s = 60.0 if how == "cancelled" else 0.5
        transport = MqttTransport(s, cert_dir=tmp_path,
                                  timeouts=Timeouts(connect_s=connect_s, operation_s=5))
        connecting = asyncio.create_task(transport.connect())
        async with asyncio.timeout(10):
            await connect_sent.wait()   # the client waits for its CONNACK
        if how == "cancelled":
            connecting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await connecting
        else:
            with pytest.raises(TransportError) as caught:
                await connecting
            assert caught.value.failure is Failure.TIMEOUT
        async with asyncio.timeout(10):
            await client_gone.wait()
        for writer in writers:   # the broker's close, which nothing reads any more
            writer.close()
            await writer.wait_closed()
        await transport.close()
    finally:
        server.close()
        await server.wait_closed()
        loop.set_exception_handler(None)
    assert raised == []


def test_a_connect_given_up_while_the_broker_drops_syns_ends_at_once(tmp_path: Path) -> None:
    """A broker host that drops the SYNs (a listener whose queue is full: the kernel drops
    them), and a connect cancelled (the service stopping) while it waits: its thread ends at
    once, where it waited out the whole 30 s connect timeout, and the stop with it."""
    async def stopped_while_connecting(port: int) -> None:
        s = ServerSettings(slot=2, type=ServerType.MQTT, host="127.0.0.1",
                           port=port, mqtt_client_id="sunpm-gw",
                           topic_alarm="plant/alarm", qos=1)
        transport = MqttTransport(s, cert_dir=tmp_path,
                                  timeouts=Timeouts(connect_s=30, operation_s=5))
        connecting = asyncio.create_task(transport.connect())
        await asyncio.sleep(1)   # the connect under way
        assert not connecting.done(), "the connect did not wait: no SYN dropped here"
        connecting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await connecting

    with syn_dropping_port() as port:
        started = time.monotonic()
        asyncio.run(stopped_while_connecting(port))   # waits for the loop's executor threads
        assert time.monotonic() - started < 10
