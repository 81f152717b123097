"""`mqtt` and `mqtts`: MQTT 3.1.1 with aiomqtt (docs/formats.md §14.1).

Client id `MQTT_ClientId`, keep-alive `MQTT_KeepAlive`, clean session off so the broker keeps the
command subscription and the QoS flows across reconnects, every publish at `MQTT_Qos` with retain
off. `mqtts` checks the broker certificate and host name against `MQTT_CaFile` or the system CAs and
presents `MQTT_CertFile`/`MQTT_KeyFile` when set.

`publish` returns only once the message is delivered in the sense of docs/formats.md §14.1: PUBACK
for QoS 1, PUBCOMP for QoS 2, written to the socket for QoS 0. At most `MAX_IN_FLIGHT` (10) publishes
wait at once (docs/behaviour.md §4.4); further callers wait for a place. They wait 60 s without
progress, progress being 1 KiB more of the connection acknowledged by the broker's TCP (Linux
`TCP_INFO`), not 60 s each: ten large documents queued on a slow link are not cut while moving.

Peer quirks handled here:
- aiomqtt does not fail a publish waiting for its PUBACK when the connection drops (paho keeps the
  message for a resend that only a reconnect of the same client object would do). A reader task
  watches the connection through the public message iterator, and a lost connection fails every
  waiting publish at once as retriable. The outbox sends them again after reconnecting; the
  broker may then see a duplicate, which QoS 1 allows.
- aiomqtt reports a failed TCP or TLS connect as a bare `MqttError` carrying the socket error's
  text only; the text is classified (refused, certificate, timeout).
- A broker that closes the connection right after its CONNACK is not noticed by aiomqtt 2.5
  (`__aenter__` replaces the finished "disconnected" future with a new one): the client would
  look connected for ever, with no reader ever failing. paho's own state is checked once
  connected, and such a connection is reported lost (retriable).
- Clean session off keeps at the broker the subscription to a command topic changed since,
  and the broker still delivers it: only messages matching the configured command topic are
  passed on, others are ignored with a WARNING.
- MQTT 3.1.1 has no way to tell the broker a maximum packet size (5.0's CONNECT property), and
  paho reads each packet whole into memory, up to 256 MB, before handing it over. Its socket
  reads are refused once a packet's announced length passes 16 MiB (`PACKET_MAX_BYTES`), before
  any of the body is read; paho then reports the connection lost, with that reason
  (docs/behaviour.md §4.5). The gateway keeps to 3.1.1, the protocol docs/formats.md §14.1 names.
- A broker with a packet limit (`max_packet_size`) drops the connection in the middle of a
  publish larger than it, at each try. A message whose packet would pass 16 MiB
  (`MESSAGE_MAX_BYTES`) is not sent: `publish` raises `MessageTooLarge`, and the caller sets it
  aside so that the messages after it go (docs/spec-notes.md, *MQTT message over 16 MiB*).
- A broker that refuses the client certificate after a TLS 1.3 handshake (mosquitto with
  `require_certificate true`) just closes the socket: paho sees no CONNACK and aiomqtt times out.
  The connect timeout is reported, retriable, as "no CONNACK", since it cannot be told apart from
  a broker that is merely slow.
- A connect that ends before the CONNACK (timed out, or cancelled: the service stopping as the
  connection is made) leaves aiomqtt's socket open and read. It is closed at once here: it was
  kept until the broker dropped it, and reading that close raised in an event loop callback
  (`Exception in callback ... CancelledError` on standard error after a stop). The TCP connect
  (paho's, in aiomqtt's executor thread) is made here, to end within a tenth of a second once
  given up: toward a host that drops the SYNs, the thread, and a stop waiting for it, waited
  out the whole connect timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from config.model import ServerSettings, ServerType

from ._base import (
    DEFAULT_TIMEOUTS,
    MAX_IN_FLIGHT,
    MESSAGE_MAX_BYTES,
    PROGRESS_BYTES,
    Failure,
    InboundMessage,
    MessageTooLarge,
    Timeouts,
    TransportError,
    publish_packet_bytes,
    size_text,
    tcp_bytes_acked,
    tls_context,
)

if TYPE_CHECKING:  # the client library under aiomqtt, whose callbacks are wrapped here
    import paho.mqtt.client as mqtt

log = logging.getLogger("sunpm.session")  # docs/formats.md §11: connection logs

DEFAULT_PORT: Final = 1883
DEFAULT_TLS_PORT: Final = 8883
# Bounded: commands are typed by an operator; if the handler stops taking them, the reader waits,
# aiomqtt's own queue (bounded below) fills, and paho then drops with a warning rather than grow.
# Each waiting message keeps at most MESSAGE_KEPT_BYTES: 128 MiB for both queues at the worst.
_COMMAND_QUEUE: Final = 64
_INCOMING_QUEUE: Final = 64
_PROGRESS_POLL_S: Final = 1.0
# A command is at most 1 MiB (docs/behaviour.md §4.5), yet one somewhat larger must still be
# read, answered "larger than 1 MiB; not executed" and acknowledged: a packet refused unread is
# sent again by the broker at each reconnection (QoS 1 and 2, session kept). 16 MiB, as the
# configuration set of a session, is far past any command typed and small on a 512 MB box.
PACKET_MAX_BYTES: Final = 16 << 20
# What of a message is kept while it waits in the queues: a command larger than its 1 MiB is
# refused for its size alone, and the byte past the cap says so.
MESSAGE_KEPT_BYTES: Final = (1 << 20) + 1


class MqttTransport:
    """An MQTT broker in slot `settings.slot`; `mqtts` when `settings.type` says so."""

    def __init__(self, settings: ServerSettings, *, cert_dir: Path,
                 timeouts: Timeouts = DEFAULT_TIMEOUTS) -> None:
        self.server = settings.slot
        self._settings = settings
        self._cert_dir = cert_dir
        self._timeouts = timeouts
        self._tls = settings.type is ServerType.MQTTS
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._lost_reason = ""
        self._window = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._in_flight = 0
        self._commands: asyncio.Queue[InboundMessage] = asyncio.Queue(maxsize=_COMMAND_QUEUE)
        self._waiting: set[asyncio.Timeout] = set()  # deadlines of the publishes waiting
        self._watch: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        await self.close()
        context: ssl.SSLContext | None = None
        if self._tls:
            context = tls_context(self.server, self._cert_dir, self._settings.ca_file,
                                  cert_file=self._settings.cert_file,
                                  key_file=self._settings.key_file)
        port = self._settings.port or (DEFAULT_TLS_PORT if self._tls else DEFAULT_PORT)
        client = aiomqtt.Client(
            self._settings.host, port,
            username=self._settings.user or None, password=self._settings.password or None,
            identifier=self._settings.mqtt_client_id or f"sunpm-{self.server}",
            protocol=aiomqtt.ProtocolVersion.V311, clean_session=False,
            keepalive=self._settings.keep_alive_s, tls_context=context,
            timeout=self._timeouts.connect_s, max_inflight_messages=MAX_IN_FLIGHT,
            max_queued_incoming_messages=_INCOMING_QUEUE)
        # paho gives up a TCP connect or TLS handshake after 5 s by default; aiomqtt has no
        # parameter for it, and docs/behaviour.md §4.5 says 30 s.
        client._client.connect_timeout = self._timeouts.connect_s
        _bound_packets(client, self._refused_packet)
        _cut_messages(client)
        connect_given_up = _abortable_connect(client)
        self._lost = asyncio.Event()
        self._lost_reason = ""
        self._commands = asyncio.Queue(maxsize=_COMMAND_QUEUE)
        no_connack = f"no CONNACK from the broker after {self._timeouts.connect_s:g} s"
        if self._tls:
            no_connack += (" (also how a broker requiring a client certificate answers a missing"
                           " or unknown one)")
        dropped = client._disconnected
        try:
            try:
                async with asyncio.timeout(self._timeouts.connect_s + 1):
                    await client.__aenter__()
            except BaseException:
                connect_given_up.set()
                _abandon(client)
                raise
            if not client._client.is_connected():
                await _forget_dropped(client, dropped)
                raise TransportError(self.server, "connect", self._lost_reason or "connection "
                                     "closed by the broker right after CONNACK",
                                     failure=Failure.CONNECTION_LOST)
        except TimeoutError as err:
            raise TransportError(self.server, "connect", no_connack,
                                 failure=Failure.TIMEOUT) from err
        except aiomqtt.MqttError as err:
            failure, detail = classify(err)
            if failure is Failure.TIMEOUT:
                detail = no_connack
            raise TransportError(self.server, "connect", detail, failure=failure) from err
        self._client = client
        self._reader = asyncio.create_task(self._read(client), name=f"mqtt-reader:{self.server}")
        self._watch = asyncio.create_task(self._watch_progress(client),
                                          name=f"mqtt-progress:{self.server}")
        topic = self._settings.topic_command
        if topic:
            await self._subscribe(client, topic)

    async def _subscribe(self, client: aiomqtt.Client, topic: str) -> None:
        """Subscribe, the connection's loss ending the wait for the SUBACK (aiomqtt would wait
        on): a broker resending at once a message refused on the last connection drops this one
        before its SUBACK too, and says why."""
        subscribed = asyncio.ensure_future(client.subscribe(topic, qos=self._settings.qos,
                                                            timeout=math.inf))
        lost = asyncio.ensure_future(self._lost.wait())
        error: TransportError | None = None
        try:
            async with asyncio.timeout(self._timeouts.operation_s):
                await asyncio.wait({subscribed, lost}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError as err:
            error = self._error("subscribe", err)
        finally:
            for future in (subscribed, lost):
                future.cancel()
            await asyncio.gather(subscribed, lost, return_exceptions=True)
        if error is None and subscribed.done() and not subscribed.cancelled():
            failed = subscribed.exception()
            if failed is None:
                return
            error = self._error("subscribe", failed)
        if error is None:
            error = TransportError(self.server, "subscribe", self._lost_reason,
                                   failure=Failure.CONNECTION_LOST)
        await self.close()
        raise error

    async def _read(self, client: aiomqtt.Client) -> None:
        command_topic = self._settings.topic_command
        try:
            async for message in client.messages:
                if not command_topic or not message.topic.matches(command_topic):
                    # A subscription kept by the broker (clean session off) to a command topic
                    # changed since: whoever may publish there commands the gateway no more.
                    log.warning("server %d: message on %r, not the command topic; ignored",
                                self.server, str(message.topic)[:200])
                    continue
                payload = message.payload
                data = payload if isinstance(payload, bytes) else str(payload or "").encode()
                await self._commands.put(InboundMessage(topic=str(message.topic), payload=data))
        except aiomqtt.MqttError as err:
            cause = err.__cause__
            self._lost_reason = self._lost_reason or (str(cause) if cause is not None
                                                      else str(err))
        finally:
            self._lost_reason = self._lost_reason or "connection closed"
            self._lost.set()

    def _refused_packet(self, length: int) -> None:
        self._lost_reason = (f"a packet of {length} bytes from the broker, larger than "
                             f"{size_text(PACKET_MAX_BYTES)}; not read")

    async def _watch_progress(self, client: aiomqtt.Client) -> None:
        """Push back the deadline of every waiting publish each time 1 KiB more was taken by
        the broker's side: ten documents of 256 KiB on a slow link take minutes to be
        acknowledged, the last ones without an acknowledgement for longer than 60 s, yet never
        60 s without progress (docs/behaviour.md §4.5). Where the system does not tell, each
        publish keeps its 60 s."""
        sock = client._client.socket()
        last = tcp_bytes_acked(sock)
        if last is None:
            return
        loop = asyncio.get_running_loop()
        limit = self._timeouts.operation_s
        while True:
            await asyncio.sleep(min(_PROGRESS_POLL_S, limit / 4))
            acked = tcp_bytes_acked(sock)
            if acked is None:
                return
            if acked - last < PROGRESS_BYTES:
                continue
            last = acked
            for deadline in self._waiting:
                if not deadline.expired():  # an expiring timeout cannot be moved
                    deadline.reschedule(loop.time() + limit)

    @property
    def in_flight(self) -> int:
        """Publishes sent and waiting for their acknowledgement (at most `MAX_IN_FLIGHT`)."""
        return self._in_flight

    async def publish(self, topic: str, payload: bytes, qos: int | None = None) -> None:
        qos = self._settings.qos if qos is None else qos
        packet_bytes = publish_packet_bytes(topic, payload, qos)
        if packet_bytes > MESSAGE_MAX_BYTES:
            raise MessageTooLarge(self.server, topic, packet_bytes)
        async with self._window:
            self._in_flight += 1
            try:
                await self._publish(topic, payload, qos)
            finally:
                self._in_flight -= 1

    async def _publish(self, topic: str, payload: bytes, qos: int) -> None:
        client = self._require("publish")
        sent = asyncio.ensure_future(client.publish(topic, payload, qos=qos,
                                                    retain=False, timeout=math.inf))
        lost = asyncio.ensure_future(self._lost.wait())
        deadline = asyncio.timeout(self._timeouts.operation_s)
        self._waiting.add(deadline)
        try:
            async with deadline:
                await asyncio.wait({sent, lost}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError as err:
            raise TransportError(self.server, "publish", "no acknowledgement after "
                                 f"{self._timeouts.operation_s:g} s without progress",
                                 failure=Failure.TIMEOUT, path=topic) from err
        finally:
            self._waiting.discard(deadline)
            for future in (sent, lost):
                future.cancel()
            await asyncio.gather(sent, lost, return_exceptions=True)
        if sent.done() and not sent.cancelled() and sent.exception() is None:
            return
        if sent.done() and not sent.cancelled():
            raise self._error("publish", sent.exception(), topic) from sent.exception()
        raise TransportError(self.server, "publish", self._lost_reason,
                             failure=Failure.CONNECTION_LOST, path=topic)

    async def messages(self) -> AsyncIterator[InboundMessage]:
        while True:
            if self._commands.empty() and (self._lost.is_set() or self._client is None):
                raise TransportError(self.server, "receive", self._lost_reason or "not connected",
                                     failure=Failure.CONNECTION_LOST)
            get = asyncio.ensure_future(self._commands.get())
            lost = asyncio.ensure_future(self._lost.wait())
            try:
                await asyncio.wait({get, lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost.cancel()
                if not get.done():
                    get.cancel()
                await asyncio.gather(get, lost, return_exceptions=True)
            if get.done() and not get.cancelled():
                yield get.result()

    async def close(self) -> None:
        client, self._client = self._client, None
        reader, self._reader = self._reader, None
        watch, self._watch = self._watch, None
        for task in (reader, watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if client is None:
            return
        try:
            async with asyncio.timeout(min(5.0, self._timeouts.operation_s)):
                await client.__aexit__(None, None, None)
        except (TimeoutError, aiomqtt.MqttError) as err:
            log.debug("MQTT disconnect not acknowledged. server=%d reason=%s", self.server, err)

    def _require(self, op: str) -> aiomqtt.Client:
        if self._client is None or self._lost.is_set():
            raise TransportError(self.server, op, self._lost_reason or "not connected",
                                 failure=Failure.CONNECTION_LOST)
        return self._client

    def _error(self, op: str, err: BaseException | None, topic: str = "") -> TransportError:
        if isinstance(err, TimeoutError):
            return TransportError(self.server, op, "no answer from the broker after "
                                  f"{self._timeouts.operation_s:g} s", failure=Failure.TIMEOUT,
                                  path=topic)
        failure, detail = classify(err) if err is not None else (Failure.CONNECTION_LOST, "")
        return TransportError(self.server, op, detail, failure=failure, path=topic)


def _bound_packets(client: aiomqtt.Client, refused: Callable[[int], None]) -> None:
    """Refuse paho's socket reads for the body of a packet announced over `PACKET_MAX_BYTES`
    (see the module docstring): paho reads the failure as a lost connection and closes it."""
    paho = client._client
    receive = paho._sock_recv

    def bounded(bufsize: int) -> bytes:
        packet = paho._in_packet
        if packet["have_remaining"] and packet["remaining_length"] > PACKET_MAX_BYTES:
            refused(packet["remaining_length"])
            raise OSError(errno.EMSGSIZE, "packet too large")
        return receive(bufsize)
    paho._sock_recv = bounded  # type: ignore[method-assign]


def _cut_messages(client: aiomqtt.Client) -> None:
    """Keep at most `MESSAGE_KEPT_BYTES` of each message before aiomqtt queues it: 64 messages
    of 16 MiB waiting for a slow handler would be a gigabyte."""
    paho = client._client
    queue = paho.on_message
    if queue is None:
        return

    def cut(paho_client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if len(message.payload) > MESSAGE_KEPT_BYTES:
            message.payload = message.payload[:MESSAGE_KEPT_BYTES]
        queue(paho_client, userdata, message)
    paho.on_message = cut


def _abortable_connect(client: aiomqtt.Client) -> threading.Event:
    """paho's TCP connect (run by aiomqtt in an executor thread) made to end within a tenth of
    a second once the event returned is set. A connect given up (cancelled: the service
    stopping) to a broker whose host drops the SYNs kept that thread for the whole connect
    timeout (30 s), and the stop waited for it: the stop guard then ended the service with
    exit 1. The host's name is still resolved as paho does, which is not abortable."""
    paho = client._client
    given_up = threading.Event()
    through_a_proxy = paho._create_socket_connection

    def connect() -> socket.socket:
        if paho._get_proxy():  # `mqtt_proxy` in the environment, with PySocks installed
            return through_a_proxy()
        timeout_s = float(paho._connect_timeout)
        deadline = time.monotonic() + timeout_s
        error: OSError = OSError(f"{paho._host}: no address")
        for family, kind, proto, _, address in socket.getaddrinfo(
                paho._host, paho._port, type=socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                code = sock.connect_ex(address)
                waiting = select.poll()
                waiting.register(sock, select.POLLOUT)
                while code == errno.EINPROGRESS:
                    if given_up.is_set():
                        raise OSError(errno.ECANCELED, "connect given up")
                    left_s = deadline - time.monotonic()
                    if left_s <= 0:
                        raise TimeoutError("timed out")
                    if waiting.poll(min(100.0, left_s * 1000)):
                        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, os.strerror(code))
                sock.settimeout(timeout_s)  # as socket.create_connection leaves it
                return sock
            except OSError as err:
                sock.close()
                error = err
        raise error

    paho._create_socket_connection = connect  # type: ignore[method-assign]
    return given_up


def _abandon(client: aiomqtt.Client) -> None:
    """Close the socket of a client whose `__aenter__` did not finish (no CONNACK in time, or
    cancelled: the service stopping). aiomqtt leaves it open and read: a broker that answers no
    more kept it for good, and the broker's close, read later, raised in an event loop callback
    (its "connected" future, cancelled, asked for its exception)."""
    client._client._sock_close()


async def _forget_dropped(client: aiomqtt.Client, dropped: asyncio.Future[None]) -> None:
    """Release a client whose connection the broker closed between CONNACK and the end of
    aiomqtt's `__aenter__` (see the module docstring)."""
    if dropped.done() and not dropped.cancelled():
        dropped.exception()  # retrieved: aiomqtt replaced it before anyone could see it
    if not client._disconnected.done():
        client._disconnected.set_result(None)  # paho is disconnected already: nothing to send
    with contextlib.suppress(aiomqtt.MqttError):
        await client.__aexit__(None, None, None)


def classify(err: BaseException) -> tuple[Failure, str]:
    """Map an aiomqtt error to a failure and a one-line detail."""
    detail = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, MqttConnectError):
        code = getattr(err.rc, "value", err.rc)
        if code in (4, 5, 134, 135):  # bad user name or password, not authorised (3.1.1, 5)
            return Failure.AUTHENTICATION, detail
        if code == 3:  # server unavailable
            return Failure.SERVER_BUSY, detail
        return Failure.PROTOCOL, detail
    lowered = detail.lower()
    if "timed out" in lowered:  # before the TLS words: "The handshake operation timed out"
        return Failure.TIMEOUT, detail
    if any(word in lowered for word in ("certificate", "handshake", "alert", "wrong version")):
        return Failure.TRUST, detail
    if "refused" in lowered or "unreachable" in lowered or "name or service" in lowered:
        return Failure.UNREACHABLE, detail
    return Failure.CONNECTION_LOST, detail
