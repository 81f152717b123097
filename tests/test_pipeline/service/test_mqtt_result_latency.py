"""An MQTT command's result goes out on the result topic as soon as the command is answered
(docs/behaviour.md §7.2, docs/formats.md §14.4), and an alarm on the alarm topic as it is raised
(§4.4 step 3), not at the next look at the journal, which is made long here so that only the
event itself can send it; with two MQTT servers, a result goes to the one commanded."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import aiomqtt
import pytest
from _service_plant import reconfigure, running_gateway
from mqtt_clients import session_subscribed, subscriber
from peers import Broker
from waiting import wait_until

from exporters.session import mqtt


async def test_results_go_out_when_answered(tmp_path: Path, broker: Broker,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mqtt, "_EVENT_POLL_S", 120.0)
    async with running_gateway(tmp_path, inverters=0) as plant:
        await reconfigure(plant, {
            "SERVER2_Type": "mqtt", "MQTT2_Host": "127.0.0.1", "MQTT2_Port": str(broker.plain_port),
            "MQTT2_TopicCommand": "t/cmd", "MQTT2_TopicResult": "t/res"})
        await session_subscribed(2)
        latencies: list[float] = []
        async with subscriber(broker.plain_port, "t/res") as got, \
                aiomqtt.Client("127.0.0.1", broker.plain_port, identifier="commander") as client:
            for n, (name, parameters) in enumerate([
                    ("log", {"interface": "tic", "duration": 0}), ("getParameters", {}),
                    ("log", {"interface": "nowhere"}), ("status", {}),
                    ("log", {"interface": "tic", "duration": 0}), ("getParameters", {})]):
                sent = time.monotonic()
                await client.publish("t/cmd", json.dumps(
                    {"rpcName": f"sunpm.{name}", "parameters": parameters,
                     "callerId": f"m-{n}"}).encode(), qos=1)
                await wait_until(lambda n=n: len(got) > n, 20, what=f"the result of {name}")
                latencies.append(time.monotonic() - sent)
    assert [json.loads(payload)[0]["callerId"] for _, payload in got] == \
        [f"m-{n}" for n in range(6)]
    assert json.loads(got[0][1]) == [{"result": "OK", "callerId": "m-0"}]
    # About 0.1 s on an idle machine; the journal is looked at every 120 s here.
    assert statistics.median(latencies) < 5, latencies


async def test_a_result_goes_to_the_result_topic_of_the_server_commanded(
        tmp_path: Path, broker: Broker) -> None:
    """Two MQTT servers: a command from server 2's command topic is answered on server 2's
    result topic only (docs/behaviour.md §7.2: "that server's result topic"), and one from
    server 1's on server 1's."""
    async with running_gateway(tmp_path, inverters=0) as plant:
        port = str(broker.plain_port)
        await reconfigure(plant, {
            "SERVER_Type": "mqtt", "MQTT_Host": "127.0.0.1", "MQTT_Port": port,
            "MQTT_TopicCommand": "one/cmd", "MQTT_TopicResult": "one/res",
            "SERVER2_Type": "mqtt", "MQTT2_Host": "127.0.0.1", "MQTT2_Port": port,
            "MQTT2_TopicCommand": "two/cmd", "MQTT2_TopicResult": "two/res"})
        await session_subscribed(1)
        await session_subscribed(2)
        async with subscriber(broker.plain_port, "one/res", "two/res") as got, \
                aiomqtt.Client("127.0.0.1", broker.plain_port, identifier="commander") as client:
            await client.publish("two/cmd", b'{"rpcName": "sunpm.getParameters", '
                                            b'"callerId": "to-2"}', qos=1)
            await wait_until(lambda: len(got) >= 1, 20, what="the answer of server 2's command")
            await client.publish("one/cmd", b"[1]", qos=1)
            await client.publish("one/cmd", b'{"rpcName": "sunpm.getParameters", '
                                            b'"callerId": "to-1"}', qos=1)
            await wait_until(lambda: len(got) >= 3, 20, what="the answers of server 1's")
            # Time for a stray copy on the other topic to arrive.
            await asyncio.sleep(1.5)
    assert [(topic, json.loads(payload)) for topic, payload in got] == [
        ("two/res", [{"result": "OK", "callerId": "to-2"}]),
        ("one/res", [{"error": "one/cmd: one command object per message, got an array",
                      "callerId": None}]),
        ("one/res", [{"result": "OK", "callerId": "to-1"}])]


async def test_alarms_go_out_when_raised(tmp_path: Path, broker: Broker,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/behaviour.md §4.4 step 3: an alarm goes out on the alarm topic as it is raised."""
    monkeypatch.setattr(mqtt, "_EVENT_POLL_S", 120.0)
    async with running_gateway(tmp_path, inverters=0) as plant:
        gateway = plant.gateway
        await reconfigure(plant, {
            "SERVER2_Type": "mqtt", "MQTT2_Host": "127.0.0.1", "MQTT2_Port": str(broker.plain_port),
            "MQTT2_TopicAlarm": "t/alarm"})
        await session_subscribed(2)
        assert gateway.alarms is not None
        async with subscriber(broker.plain_port, "t/alarm") as got:
            await asyncio.sleep(0.3)       # the connection's first look at the journal is done
            for n in range(3):
                raised = time.monotonic()
                await gateway.alarms.gateway("Loss of ICT accessory", subject=f"a-{n}")
                await wait_until(lambda n=n: len(got) > n, 20, what=f"alarm {n}")
                assert time.monotonic() - raised < 5
    subjects = [json.loads(payload)["alarmsDevice"][0]["subject"] for _, payload in got]
    assert subjects == ["a-0", "a-1", "a-2"]
