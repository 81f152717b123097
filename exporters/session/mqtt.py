"""A session with an MQTT broker in either slot (docs/behaviour.md §4.4): data windows at
sessions, alarms and results as they are journaled, commands from the command topic, and the
permanent connection that reconnects after 1, 2, 4 … 60 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from config.errors import SunpmError
from config.model import ServerSettings
from exporters.outbox import JournalLog, Outbox
from exporters.transports._base import MessageTooLarge, MessageTransport, TransportError
from exporters.views.context import ViewError
from exporters.views.mqtt import result_message
from exporters.views.numbers import NumberTextError
from exporters.views.windows import cut_of
from store.delivery import Stream, event_delivered_body
from store.events import (
    Channel,
    CommandReceived,
    CommandResult,
    EventBodyError,
    JournalItem,
    journal_items,
)

from .commands import CommandHandler, JournalSignal, parse_command_message
from .outcome import SessionResult, Trigger, reason_of, server_label

log = logging.getLogger("sunpm.session")


#: The payload of one journal event (an `alarm` or a `result`) on its topic.
EventPayload = Callable[[JournalItem], bytes]

_RECONNECT_S: Final = (1, 2, 4, 8, 16, 32, 60)
_EVENT_POLL_S: Final = 1.0
#: MQTT alarms and results published between two `delivered` events queued mid-batch.
ACK_EVERY: Final = 100
# A connection that lived this long ends an outage: the backoff starts again from 1 s. One
# that a broker drops at once (after CONNACK, before SUBACK) does not, or the reconnection
# would run every second for as long as the broker does that; nor one whose publishes go
# unacknowledged until the operation timeout (60 s) ends it, hence twice that.
_STABLE_S: Final = 120.0
_SUMMARY_EVERY_S: Final = 3600.0


class _Outage:
    """One WARNING when the permanent connection goes down, then one an hour while it stays
    down, INFO when a connection holds again (as the Modbus links, docs/behaviour.md §2.3)."""

    def __init__(self, server: int) -> None:
        self.server = server
        self.down = False
        self._failed = 0
        self._last_summary = 0.0

    def failed(self, reason: str) -> None:
        now = asyncio.get_running_loop().time()
        if not self.down:
            self.down = True
            self._failed = 0
            self._last_summary = now
            log.warning("server %d: connection lost: %s; reconnecting", self.server, reason)
            return
        self._failed += 1
        if now - self._last_summary >= _SUMMARY_EVERY_S:
            log.warning("server %d: still disconnected (%s); %d attempts failed in the last "
                        "hour", self.server, reason, self._failed)
            self._last_summary = now
            self._failed = 0

    def restored(self) -> None:
        if self.down:
            log.info("server %d: connection restored", self.server)
        self.down = False


class _DeliveryFault:
    """One ERROR (with its traceback) when events stop going out on a store fault (an event
    that cannot be rendered is set aside instead, `MqttSession._set_aside`),
    another only if the reason changes, a WARNING an hour while it lasts, INFO once a
    connection holds again: a full disk is one episode, not a line at every reconnection."""

    def __init__(self, server: int) -> None:
        self.server = server
        self.reason: str | None = None
        self._failed = 0
        self._last_summary = 0.0

    def failed(self, fault: BaseException, delay_s: int) -> None:
        reason = reason_of(fault)
        now = asyncio.get_running_loop().time()
        self._failed += 1
        if reason != self.reason:
            log.error("server %d: event delivery failed, reconnecting in %d s: %s", self.server,
                      delay_s, reason, exc_info=fault if self.reason is None else None)
            self.reason = reason
            self._last_summary = now
        elif now - self._last_summary >= _SUMMARY_EVERY_S:
            log.warning("server %d: event delivery still failing (%s); %d attempts in all",
                        self.server, reason, self._failed)
            self._last_summary = now

    def restored(self) -> None:
        if self.reason is not None:
            log.info("server %d: event delivery works again after %d failed attempts",
                     self.server, self._failed)
        self.reason = None
        self._failed = 0


def _utc_text(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def result_payload(item: JournalItem) -> bytes:
    """docs/formats.md §14.4: an array of the one result entry, compact JSON."""
    return result_message(CommandResult.from_body(item.body))


def _for_this_server(body: dict[str, object], channel: Channel, server: int) -> bool:
    """A result of `channel` answering this server's command (one journaled before results
    named their server goes to every result topic, as it did then)."""
    return body.get("channel") == channel.value and body.get("server") in (None, server)


class MqttSession:
    """A broker in either slot: data windows at sessions, alarms and results as they come,
    commands from the command topic (docs/behaviour.md §4.4)."""

    def __init__(self, *, settings: ServerSettings, transport: MessageTransport, outbox: Outbox,
                 log: JournalLog, alarm_payload: EventPayload | None = None,
                 commands: CommandHandler | None = None,
                 alarms_raised: JournalSignal | None = None) -> None:
        self.settings = settings
        self._alarms_raised = alarms_raised
        self.server = settings.slot
        self._transport = transport
        self._outbox = outbox
        self._log = log
        self._alarm_payload = alarm_payload
        self._commands = commands
        # One publisher of events at a time, so alarms and results keep journal order.
        self._events_lock = asyncio.Lock()
        # Per stream the last event seq acknowledged, read from the journal once.
        self._event_cursors: dict[Stream, int] = {}

    @property
    def permanent(self) -> bool:
        """An alarm or command topic keeps the connection open (docs/formats.md §14.1)."""
        return bool(self.settings.topic_alarm or self.settings.topic_command)

    async def run(self, trigger: Trigger, *, started: datetime | None = None,
                  keep_open: bool = False) -> SessionResult:
        """Connect, send pending alarms and results, then the data windows up to the cut."""
        started = started or datetime.now(UTC)
        log.info("server %d %s: session started (%s)", self.server, server_label(self.settings),
                 trigger)
        sent = 0
        try:
            await self._transport.connect()
            sent += await self.publish_events()
            if self.settings.topic_data:
                report = await self._outbox.deliver_messages(
                    self._transport, self.settings.topic_data, cut_of(started))
                sent += report.files
        except SunpmError as err:
            await self._transport.close()
            retriable = bool(getattr(err, "retriable", True))
            level = logging.WARNING if retriable else logging.ERROR
            log.log(level, "server %d: session failed: %s", self.server, reason_of(err))
            return SessionResult(ok=False, files=sent, reason=reason_of(err), retriable=retriable)
        except BaseException:
            # Cancelled (the service stopping): the connection and its reader task go too.
            await self._transport.close()
            raise
        if not keep_open:
            await self._transport.close()
        log.info("server %d: session ended OK (%d files uploaded, %d commands)", self.server,
                 sent, 0)
        return SessionResult(ok=True, files=sent)

    async def publish_events(self) -> int:
        """Alarms, then command results, not yet acknowledged, in journal order."""
        async with self._events_lock:
            sent = 0
            if self.settings.topic_alarm and self._alarm_payload is not None:
                sent += await self._publish_kind(Stream.ALARM, "alarm", self.settings.topic_alarm,
                                                 self._alarm_payload)
            if self.settings.topic_result:
                sent += await self._publish_kind(Stream.ACK, "result",
                                                 self.settings.topic_result, result_payload,
                                                 channel=Channel.MQTT)
            return sent

    async def _publish_kind(self, stream: Stream, kind: str, topic: str, payload: EventPayload,
                            channel: Channel | None = None) -> int:
        last = self._event_cursors.get(stream)
        if last is None:
            state = await asyncio.to_thread(self._outbox.state)
            # A slot newly configured starts at the oldest event stored (docs/behaviour.md §5.1).
            last = state.events.get((self.server, stream), 0)
        table = await asyncio.to_thread(self._log.journal, kinds=[kind], seq_from=last + 1)
        items = [i for i in journal_items(table.sort_by("seq")) if i.seq > last]
        self._event_cursors[stream] = last
        sent = 0
        published: int | None = None
        # Acknowledged by the batch (the state keeps the highest seq): one `delivered` each,
        # waited for, sent a burst one event a group commit. Every ACK_EVERY events one is
        # queued without waiting, so a stop in the middle of a long backlog repeats few.
        acks: list[asyncio.Future[int]] = []
        try:
            for item in items:
                if channel is None or _for_this_server(json.loads(item.body), channel,
                                                       self.server):
                    try:
                        message = payload(item)
                    except (ViewError, NumberTextError, EventBodyError) as err:
                        # Rendered again it fails again: retried, it would hold back every
                        # later event for ever. Set aside, said once, journaled.
                        await self._set_aside(stream, kind, item, reason_of(err))
                        self._event_cursors[stream] = item.seq
                        continue
                    try:
                        await self._transport.publish(topic, message)
                    except MessageTooLarge as err:
                        # A broker with a packet limit drops the connection at each try.
                        await self._set_aside(stream, kind, item, err.reason)
                        self._event_cursors[stream] = item.seq
                        continue
                    published = item.seq
                    sent += 1
                    if sent % ACK_EVERY == 0:
                        acks.append(asyncio.ensure_future(self._delivered(stream, item.seq)))
                # Other channels' and servers' results are skipped for good, not looked at again.
                self._event_cursors[stream] = item.seq
        finally:
            # What went out is acknowledged, also when a publish fails or the session stops.
            if published is not None:
                acks.append(asyncio.ensure_future(self._delivered(stream, published)))
            if acks:
                await asyncio.gather(*acks)
        return sent

    async def _delivered(self, stream: Stream, seq: int) -> int:
        return await self._log.append_journal(
            "delivered", event_delivered_body(self.server, stream, seq))

    async def _set_aside(self, stream: Stream, kind: str, item: JournalItem,
                         reason: str) -> None:
        """An event whose message cannot be built or sent (docs/spec-notes.md, "MQTT event set
        aside"): an ERROR naming it, and a `delivered` event marked `setAside` with the reason,
        so no later session tries it again; the event itself stays in the store (`sunpm sd`)."""
        log.error("server %d: %s event %d (%s) cannot be sent: %s; set aside, the later ones go "
                  "on", self.server, kind, item.seq, _utc_text(item.ts_ns), reason)
        await self._log.append_journal(
            "delivered", {**event_delivered_body(self.server, stream, item.seq),
                          "setAside": reason}, commit_now=True)

    async def serve(self, stop: asyncio.Event) -> None:
        """The permanent connection: commands in, alarms and results out, reconnecting after
        1, 2, 4 … 60 s, until `stop` is set."""
        attempt = 0
        outage = _Outage(self.server)
        fault = _DeliveryFault(self.server)

        async def settle() -> None:
            # Reached only while the connection holds: its tasks end with it.
            nonlocal attempt
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STABLE_S):
                    await stop.wait()
            if not stop.is_set():
                attempt = 0
                outage.restored()
                fault.restored()

        while not stop.is_set():
            try:
                await self._transport.connect()
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(settle(), name=f"mqtt-settle:{self.server}")
                    tg.create_task(self._pump_events(stop), name=f"mqtt-events:{self.server}")
                    tg.create_task(self._take_commands(stop), name=f"mqtt-commands:{self.server}")
            except* TransportError as group:
                outage.failed(reason_of(group.exceptions[0]))
            except* SunpmError as group:
                # A journal append or read failing (disk full, damaged segment): the permanent
                # connection outlives it. The connection is
                # renewed after the backoff, which keeps growing while the fault repeats;
                # unacknowledged events go again then.
                fault.failed(group.exceptions[0], _RECONNECT_S[min(attempt, len(_RECONNECT_S) - 1)])
            finally:
                await self._transport.close()
            if stop.is_set():
                break
            delay = _RECONNECT_S[min(attempt, len(_RECONNECT_S) - 1)]
            attempt += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()

    async def _pump_events(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # Taken before the journal is read: an event journaled meanwhile is not missed.
            signals = []
            if self._commands is not None and self.settings.topic_result:
                signals.append(self._commands.answers.next())
            if self._alarms_raised is not None and self.settings.topic_alarm:
                signals.append(self._alarms_raised.next())
            await self.publish_events()
            # A result or an alarm goes out as soon as it is journaled (docs/behaviour.md §4.4
            # step 3, §7.2); the journal is looked at every second besides.
            waits = [asyncio.ensure_future(stop.wait())]
            waits += [asyncio.ensure_future(signal.wait()) for signal in signals]
            try:
                await asyncio.wait(waits, timeout=_EVENT_POLL_S,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()

    async def _take_commands(self, stop: asyncio.Event) -> None:
        # Read even without a command topic: the reading is what notices a lost connection
        # while no alarm is due. The transport passes on only messages of the command topic.
        messages = self._transport.messages()
        while not stop.is_set():
            stopping = asyncio.ensure_future(stop.wait())
            nxt = asyncio.ensure_future(anext(messages))
            try:
                done, _ = await asyncio.wait({stopping, nxt}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                # Cancelled with its sibling's failure: the pending read would otherwise fail
                # with the closed connection as an exception nobody retrieves.
                nxt.cancel()
                raise
            finally:
                stopping.cancel()
            if nxt not in done:
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt
                return
            message = nxt.result()
            await self.take_command(message.payload, message.topic)

    async def take_command(self, payload: bytes, topic: str) -> None:
        """Journal a command-topic message and hand it on; an unreadable one is answered."""
        # Marked with this server: its answer goes to this server's result topic only.
        entry = dataclasses.replace(parse_command_message(payload, topic), server=self.server)
        if isinstance(entry, CommandReceived):
            await self._log.append_journal("command", entry.to_fields(),
                                           commit_now=True)
        elif self._commands is None:
            await self._log.append_journal("result", entry.to_fields(),
                                           commit_now=True)
            return
        if self._commands is not None:
            # An unreadable message is answered in its turn too: results in arrival order.
            await self._commands.submit([entry])
