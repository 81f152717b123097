"""MQTT sessions against a real mosquitto on loopback: data windows, alarms, commands, results."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest
from delivery_support import DAY, T0, DemoSource, fill
from mqtt_clients import session_subscribed, subscriber, wait_for
from peers import Broker
from waiting import wait_until

from config import parse_definition
from config.model import ServerSettings, ServerType
from exporters.outbox import Outbox
from exporters.session import CollectingHandler, MqttSession, Trigger
from exporters.session import mqtt as mqtt_session
from exporters.transports import MqttTransport, Timeouts
from exporters.views.context import ViewConfig
from exporters.views.mqtt import alarm_message
from exporters.views.windows import Rendered
from store import StoreIOError
from store.delivery import DeliveryState, Stream, WindowSpec
from store.events import DeviceAlarm, GatewayAlarm, JournalItem, Source
from store.log import Log
from store.options import StoreOptions

H = 3600


def settings(broker: Broker) -> ServerSettings:
    return ServerSettings(slot=2, type=ServerType.MQTT, host="127.0.0.1", port=broker.plain_port,
                          mqtt_client_id="sunpm-gw", topic_data="plant/data",
                          topic_alarm="plant/alarm", topic_command="plant/cmd",
                          topic_result="plant/result", qos=1, keep_alive_s=30)


def make_session(store: Log, broker: Broker, tmp: Path,
                 handler: CollectingHandler | None = None) -> MqttSession:
    s = settings(broker)
    outbox = Outbox(server=2, log=store, source=DemoSource(store), directory=tmp / "outbox" / "2",
                    streams=(Stream.DATA,))

    def alarm_payload(item: JournalItem) -> bytes:
        return json.dumps({"seq": item.seq, "ts": item.ts_ns}).encode()

    return MqttSession(settings=s, transport=MqttTransport(s, cert_dir=tmp, timeouts=Timeouts(
        connect_s=5, operation_s=5)), outbox=outbox, log=store, alarm_payload=alarm_payload,
                       commands=handler)


async def test_data_windows_and_alarms_go_oldest_first_once(
        store: Log, broker: Broker, tmp_path: Path) -> None:
    await fill(store, T0, T0 + 6 * DAY)
    cut = datetime.fromtimestamp(T0 + 5 * DAY + 9 * H, UTC)
    async with subscriber(broker.plain_port, "plant/data", "plant/alarm") as got:
        result = await make_session(store, broker, tmp_path).run(Trigger.SCHEDULE, started=cut)
        assert result.ok
        alarms = store.journal(kinds=["alarm"]).sort_by("seq")
        n_alarms = alarms.num_rows
        await wait_for(got, n_alarms + 6)
        await asyncio.sleep(0.3)
    # Every stored alarm, in journal order, once; then the six data windows, oldest first.
    assert [json.loads(p)["seq"] for t, p in got if t == "plant/alarm"] == \
        alarms.column("seq").to_pylist()
    data = [p for t, p in got if t == "plant/data"]
    state = DeliveryState.from_table(store.journal(kinds=["state", "window", "delivered"]))
    windows = state.stream(2, Stream.DATA).windows
    assert [w.spec.end_ns for w in windows] == sorted(w.spec.end_ns for w in windows)
    assert len(windows) == len(data) == 6
    assert state.stream(2, Stream.DATA).cursor_ns == (T0 + 5 * DAY + 9 * H) * 10**9
    # A second session sends nothing again.
    async with subscriber(broker.plain_port, "plant/data", "plant/alarm") as again:
        result = await make_session(store, broker, tmp_path).run(Trigger.SCHEDULE, started=cut)
        await asyncio.sleep(0.5)
    assert result.ok and result.files == 0 and again == []


async def test_command_topic_is_obeyed_and_answered_on_the_result_topic(
        store: Log, broker: Broker, tmp_path: Path) -> None:
    handler = CollectingHandler(store)
    session = make_session(store, broker, tmp_path, handler)
    stop = asyncio.Event()
    async with subscriber(broker.plain_port, "plant/result") as got, asyncio.TaskGroup() as tg:
        tg.create_task(session.serve(stop), name="mqtt-serve")
        async with aiomqtt.Client("127.0.0.1", broker.plain_port, identifier="is-cmd") as c:
            await session_subscribed(2)
            await c.publish("plant/cmd", b'{"rpcName":"sunpm.setRelay","parameters":'
                                         b'{"state":1},"callerId":"c-7"}', qos=1)
            await c.publish("plant/cmd", b'[{"rpcName":"x.y"}]', qos=1)
        await wait_for(got, 2)
        stop.set()
    assert [c.rpc_name for c in handler.received] == ["sunpm.setRelay"]
    assert [p for _, p in got] == [
        b'[{"result":"OK","callerId":"c-7"}]',
        (b'[{"error":"plant/cmd: one command object per message, got an array",'
         b'"callerId":null}]')]


async def test_a_store_error_in_the_permanent_connection_is_logged_and_it_reconnects(
        store: Log, broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    await fill(store, T0, T0 + DAY, alarm_every_s=6 * H)
    s = settings(broker)
    outbox = Outbox(server=2, log=store, source=DemoSource(store), directory=tmp_path / "outbox",
                    streams=(Stream.DATA,))
    faults = [StoreIOError("journal commit failed: [Errno 28] No space left on device")]

    def alarm_payload(item: JournalItem) -> bytes:
        if faults:          # the first event meets the full disk, the retry finds room
            raise faults.pop()
        return json.dumps({"seq": item.seq}).encode()

    session = MqttSession(settings=s, transport=MqttTransport(s, cert_dir=tmp_path, timeouts=Timeouts(
        connect_s=5, operation_s=5)), outbox=outbox, log=store, alarm_payload=alarm_payload)
    expected = store.journal(kinds=["alarm"]).sort_by("seq").column("seq").to_pylist()
    assert len(expected) == 4
    stop = asyncio.Event()
    async with subscriber(broker.plain_port, "plant/alarm") as got, asyncio.TaskGroup() as tg:
        serving = tg.create_task(session.serve(stop), name="mqtt-serve")
        await wait_for(got, len(expected))
        assert not serving.done()
        stop.set()
    assert [json.loads(p)["seq"] for _, p in got] == expected
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == [
        ("server 2: event delivery failed, reconnecting in 1 s: journal commit failed: "
         "[Errno 28] No space left on device")]
    assert errors[0].exc_info is not None


async def test_a_fault_that_repeats_is_one_error_and_its_end_one_info_line(
        store: Log, broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="sunpm.session")
    monkeypatch.setattr(mqtt_session, "_STABLE_S", 0.5)
    await fill(store, T0, T0 + DAY, alarm_every_s=6 * H)
    s = settings(broker)
    outbox = Outbox(server=2, log=store, source=DemoSource(store), directory=tmp_path / "outbox",
                    streams=(Stream.DATA,))
    full = "journal commit failed: [Errno 28] No space left on device"
    faults = [StoreIOError(full) for _ in range(3)]

    def alarm_payload(item: JournalItem) -> bytes:
        if faults:          # three reconnections meet the full disk, the fourth finds room
            raise faults.pop()
        return json.dumps({"seq": item.seq}).encode()

    session = MqttSession(settings=s, transport=MqttTransport(s, cert_dir=tmp_path, timeouts=Timeouts(
        connect_s=5, operation_s=5)), outbox=outbox, log=store, alarm_payload=alarm_payload)
    stop = asyncio.Event()
    async with subscriber(broker.plain_port, "plant/alarm") as got, asyncio.TaskGroup() as tg:
        tg.create_task(session.serve(stop), name="mqtt-serve")
        await wait_for(got, 4, timeout_s=30)
        await wait_until(lambda: any("works again" in r.getMessage() for r in caplog.records),
                         10, what="the end of the fault")
        stop.set()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records
             if "event delivery" in r.getMessage()]
    assert lines == [
        ("ERROR", f"server 2: event delivery failed, reconnecting in 1 s: {full}"),
        ("INFO", "server 2: event delivery works again after 3 failed attempts")]


async def test_broker_killed_mid_replay_fails_the_session_and_the_next_one_finishes(
        store: Log, broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    await fill(store, T0, T0 + 40 * DAY, alarm_every_s=40 * DAY)
    cut = datetime.fromtimestamp(T0 + 40 * DAY, UTC)
    session = make_session(store, broker, tmp_path)
    session._outbox._source = DemoSource(store, pad_bytes=256 * 1024)  # slow enough to cut

    async def data_delivered() -> bool:
        table = await asyncio.to_thread(store.journal, kinds=["delivered"])
        return any('"DATA"' in b for b in table.column("body").to_pylist())

    async def kill_after_first_delivery() -> None:
        await wait_until(data_delivered, 60, what="a first DATA delivery")
        broker.kill()

    killer = asyncio.create_task(kill_after_first_delivery(), name="broker-killer")
    result = await session.run(Trigger.RETRY, started=cut)
    await killer
    assert not result.ok and result.retriable
    assert [r.getMessage() for r in caplog.records
            if r.getMessage().startswith("server 2: session failed: ")]
    state = Outbox(server=2, log=store, source=DemoSource(store), directory=tmp_path / "x",
                   streams=(Stream.DATA,)).state()
    sd = state.stream(2, Stream.DATA)
    partial_cursor = sd.cursor_ns
    assert partial_cursor is not None and partial_cursor < (T0 + 40 * DAY) * 10**9

    broker.start()
    result = await make_session(store, broker, tmp_path).run(Trigger.RETRY, started=cut)
    assert result.ok
    state = Outbox(server=2, log=store, source=DemoSource(store), directory=tmp_path / "x",
                   streams=(Stream.DATA,)).state()
    assert state.stream(2, Stream.DATA).cursor_ns == (T0 + 40 * DAY) * 10**9


async def test_a_cancelled_session_disconnects_and_leaves_no_reader_task(
        store: Log, broker: Broker, tmp_path: Path) -> None:
    await fill(store, T0, T0 + 40 * DAY, alarm_every_s=H)
    cut = datetime.fromtimestamp(T0 + 40 * DAY, UTC)
    session = make_session(store, broker, tmp_path)
    run = asyncio.create_task(session.run(Trigger.SCHEDULE, started=cut), name="mqtt-session")
    await wait_until(lambda: store.journal(kinds=["delivered"]).num_rows, 10)  # alarms sent
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await wait_until(lambda: not [t for t in asyncio.all_tasks()
                                  if t.get_name().startswith("mqtt-") and not t.done()], 5)


async def test_an_alarm_burst_goes_out_at_once_not_one_alarm_a_group_commit(
        broker: Broker, tmp_path: Path) -> None:
    # docs/behaviour.md §8: alarms are published at once. With the default group commit (1 s), a
    # burst (many inputs flapping, a plant coming back) must not leave one alarm a second.
    async with await Log.open(tmp_path / "store", StoreOptions(flush_s=1.0)) as log:
        burst = 2 * mqtt_session.ACK_EVERY + 40
        seqs = await asyncio.gather(*(log.append_journal(
            "alarm", {"source": "GATEWAY", "alarm": f"Script alarm {k}"}) for k in range(burst)))
        session = make_session(log, broker, tmp_path)
        stop = asyncio.Event()
        async with subscriber(broker.plain_port, "plant/alarm") as got, \
                asyncio.TaskGroup() as tg:
            tg.create_task(session.serve(stop), name="mqtt-serve")
            # One alarm per commit would take 240 s.
            await wait_for(got, burst, timeout_s=30)
            stop.set()
        assert [json.loads(p)["seq"] for _, p in got] == sorted(seqs)
        # Acknowledged every ACK_EVERY and at the end: a stop in the middle of a long backlog
        # sends few again, and a new session none.
        acks = [json.loads(b)["event"] for b in log.journal(kinds=["delivered"]).sort_by(
            "seq").column("body").to_pylist()]
        every = mqtt_session.ACK_EVERY
        assert acks == [sorted(seqs)[every - 1], sorted(seqs)[2 * every - 1], max(seqs)]
        state = DeliveryState.from_table(log.journal(kinds=["state", "window", "delivered"]))
        assert state.events[(2, Stream.ALARM)] == max(seqs)


METER = parse_definition(b"modbusRTU;Meter;ACME;M3\n1;4;0;I32_W;;V_L1;;0.1;0;V;4\n",
                         "meter_small.csv").value


async def test_an_alarm_that_cannot_be_rendered_is_set_aside_and_the_later_ones_go(
        store: Log, broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An alarm whose variable Index is not in its definition snapshot can never be rendered:
    retried, it held every later alarm back for ever. It is set aside once, journaled, and
    stays in the store; the later alarms go, and a new session does not try it again."""
    assert METER is not None
    good = DeviceAlarm(source=Source.MODBUS, name="meter_1", var=1, value="2305")
    poison = DeviceAlarm(source=Source.MODBUS, name="meter_1", var=99, value="1")
    seqs = [await store.append_journal("alarm", GatewayAlarm(alarm="Power ON").to_fields(),
                                       ts_ns=(T0 + 60) * 10**9)]
    for k, alarm in enumerate((poison, good)):
        seqs.append(await store.append_journal("alarm", alarm.to_fields(), device="2",
                                               def_=METER.snapshot_id,
                                               ts_ns=(T0 + 120 + k) * 10**9))
    view = ViewConfig(uid="WPMTEST01")

    def make() -> MqttSession:
        s = settings(broker)
        outbox = Outbox(server=2, log=store, source=DemoSource(store),
                        directory=tmp_path / "outbox", streams=(Stream.DATA,))
        return MqttSession(
            settings=s, transport=MqttTransport(s, cert_dir=tmp_path, timeouts=Timeouts(
                connect_s=5, operation_s=5)), outbox=outbox, log=store,
            alarm_payload=lambda item: alarm_message(item, {METER.snapshot_id: METER}, view))

    stop = asyncio.Event()
    async with subscriber(broker.plain_port, "plant/alarm") as got, asyncio.TaskGroup() as tg:
        tg.create_task(make().serve(stop), name="mqtt-serve")
        await wait_for(got, 2, timeout_s=30)
        # An alarm journaled later goes out too: the connection is not stuck.
        seqs.append(await store.append_journal(
            "alarm", GatewayAlarm(alarm="Power OFF").to_fields(), commit_now=True))
        await wait_for(got, 3, timeout_s=30)
        stop.set()
    alarms = [json.loads(p) for _, p in got]
    assert [a["alarmsDevice"][0]["type"] if a["alarmsDevice"] else a["alarms"][0]["value"]
            for a in alarms] == ["POWER ON", "230.5", "POWER OFF"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        f"server 2: alarm event {seqs[1]} (2021-02-01T00:02:00Z) cannot be sent: alarm of "
        "meter_1: Index 99 is not in meter_small.csv; set aside, the later ones go on"]
    set_aside = [json.loads(b) for b in store.journal(kinds=["delivered"]).column(
        "body").to_pylist() if "setAside" in json.loads(b)]
    assert set_aside == [{"server": 2, "stream": "ALARM", "event": seqs[1],
                          "setAside": "alarm of meter_1: Index 99 is not in meter_small.csv"}]
    # Still in the store, and not tried again by the next session.
    assert seqs[1] in store.journal(kinds=["alarm"]).column("seq").to_pylist()
    caplog.clear()
    async with subscriber(broker.plain_port, "plant/alarm") as again:
        result = await make().run(Trigger.SCHEDULE)
        await asyncio.sleep(0.5)
    assert result.ok and again == []
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def limit_packets(broker: Broker) -> None:
    """Restart the broker with a 16 MiB packet limit: a client that sends more is disconnected
    (mosquitto `max_packet_size`; EMQX and others default to less)."""
    broker.stop()
    with (broker.dir / "mosquitto.conf").open("a") as conf:
        conf.write("max_packet_size 16777216\n")
    broker.start()


BIG = 16 << 20   # a payload this large makes a packet just over 16 MiB


async def test_an_alarm_message_over_16_mib_is_set_aside_and_the_later_ones_go(
        store: Log, broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Sent, the broker drops the connection at each try and no later alarm ever goes: the
    message is set aside once, journaled, and the later alarms go in the same session."""
    limit_packets(broker)
    seqs = [await store.append_journal("alarm", GatewayAlarm(alarm=name).to_fields(),
                                       ts_ns=(T0 + 60 + k) * 10**9)
            for k, name in enumerate(("Power ON", "Power OFF", "Power ON"))]
    s = settings(broker)

    def alarm_payload(item: JournalItem) -> bytes:
        return b"x" * BIG if item.seq == seqs[1] else json.dumps({"seq": item.seq}).encode()

    def make() -> MqttSession:
        outbox = Outbox(server=2, log=store, source=DemoSource(store),
                        directory=tmp_path / "outbox", streams=(Stream.DATA,))
        return MqttSession(settings=s, transport=MqttTransport(s, cert_dir=tmp_path, timeouts=(
            Timeouts(connect_s=5, operation_s=5))), outbox=outbox, log=store,
            alarm_payload=alarm_payload)

    async with subscriber(broker.plain_port, "plant/alarm") as got:
        result = await make().run(Trigger.SCHEDULE)
        await wait_for(got, 2)
    assert result.ok, result.reason
    assert [json.loads(p)["seq"] for _, p in got] == [seqs[0], seqs[2]]
    reason = f"a message of {BIG + 5 + len('plant/alarm') + 4} bytes, larger than 16 MiB"
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"server 2: alarm event {seqs[1]} (2021-02-01T00:01:01Z) cannot be sent: "
                      f"{reason}; set aside, the later ones go on"]
    set_aside = [json.loads(b) for b in store.journal(kinds=["delivered"]).column(
        "body").to_pylist() if "setAside" in json.loads(b)]
    assert set_aside == [{"server": 2, "stream": "ALARM", "event": seqs[1], "setAside": reason}]
    async with subscriber(broker.plain_port, "plant/alarm") as again:
        result = await make().run(Trigger.SCHEDULE)
        await asyncio.sleep(0.5)
    assert result.ok and again == []


class _OneBigWindow(DemoSource):
    """A window's document of more than 16 MiB (incompressible), the others small."""

    def __init__(self, log: Log, big_end_ns: int) -> None:
        super().__init__(log)
        self.big_end_ns = big_end_ns

    def render(self, spec: WindowSpec) -> list[Rendered]:
        self.pad_bytes = BIG if spec.end_ns == self.big_end_ns else 0
        return super().render(spec)


async def test_a_data_message_over_16_mib_is_set_aside_and_the_later_windows_go(
        store: Log, broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    limit_packets(broker)
    await fill(store, T0, T0 + 3 * DAY)
    cut = datetime.fromtimestamp(T0 + 2 * DAY + 9 * H, UTC)
    big_end_ns = (T0 + 2 * DAY) * 10**9   # the second window, of the second day
    s = settings(broker)

    def make() -> MqttSession:
        outbox = Outbox(server=2, log=store, source=_OneBigWindow(store, big_end_ns),
                        directory=tmp_path / "outbox", streams=(Stream.DATA,))
        return MqttSession(settings=s, transport=MqttTransport(s, cert_dir=tmp_path, timeouts=(
            Timeouts(connect_s=5, operation_s=5))), outbox=outbox, log=store,
            alarm_payload=None)

    async with subscriber(broker.plain_port, "plant/data") as got:
        result = await make().run(Trigger.SCHEDULE, started=cut)
        await wait_for(got, 2)
        await asyncio.sleep(0.3)
    assert result.ok, result.reason
    assert len(got) == 2 and result.files == 2
    state = DeliveryState.from_table(store.journal(kinds=["state", "window", "delivered"]))
    windows = state.stream(2, Stream.DATA).windows
    assert [w.spec.end_ns for w in windows] == [big_end_ns - DAY * 10**9, big_end_ns,
                                                int(cut.timestamp()) * 10**9]
    big = windows[1].files[0].name
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith(
        f"server 2: MQTT message {big} cannot be sent: a message of ")
    assert errors[0].endswith(" bytes, larger than 16 MiB; set aside, the later ones go on")
    set_aside = [json.loads(b) for b in store.journal(kinds=["delivered"]).column(
        "body").to_pylist() if "setAside" in json.loads(b)]
    assert [(b["file"], b["end"]) for b in set_aside] == [(big, big_end_ns)]
    assert state.stream(2, Stream.DATA).cursor_ns == int(cut.timestamp()) * 10**9
    async with subscriber(broker.plain_port, "plant/data") as again:
        result = await make().run(Trigger.SCHEDULE, started=cut)
        await asyncio.sleep(0.5)
    assert result.ok and result.files == 0 and again == []
