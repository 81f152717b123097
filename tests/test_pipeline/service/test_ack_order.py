"""The answers of commands through the running gateway in their order: the ACK file of a command
file (docs/formats.md §12.1, §12.2), one answer per entry in the file's order, those of entries
that could not be read included, as compact one-line JSON ending with LF; MQTT results in
arrival order (§14.4)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiomqtt
from _service_plant import UID, reconfigure, running_gateway, wait_for
from mqtt_clients import session_subscribed, subscriber
from mqtt_clients import wait_for as mqtt_wait_for
from peers import Broker

from exporters.session import Trigger

COMMANDS = ('[{"rpcName": "sunpm.getParameters", "callerId": "c-1"},'
            ' 7,'
            ' {"rpcName": "sunpm.setRelay", "parameters": {"state": 2}, "callerId": "c-3"},'
            ' {"callerId": "c-4"},'
            ' {"rpcName": "sunpm.fly", "callerId": "é"},'
            ' {"rpcName": "sunpm.status", "callerId": [1]},'
            ' {"rpcName": "sunpm.getParameters", "callerId": 7}]')


async def test_the_ack_file_answers_in_the_file_order(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, inverters=0) as plant:
        gateway = plant.gateway
        command_file = plant.server_dir / "CMD" / f"{UID}_cmd.json"
        command_file.write_text(COMMANDS)
        assert gateway.request_session(1, Trigger.COMMAND)
        await wait_for(lambda: not command_file.exists(), 20, "the command file fetched")
        assert gateway.store is not None
        store = gateway.store
        await wait_for(lambda: store.journal(kinds=["result"]).num_rows == 7, 20,
                       "every entry answered")
        # A session's cut is its start truncated to the second: the answers go with a session
        # that starts in a later second.
        await asyncio.sleep(1.05 - time.time() % 1)
        assert gateway.request_session(1, Trigger.COMMAND)
        acks = plant.server_dir / "CMD"
        await wait_for(lambda: any(acks.glob(f"{UID}_ACK_*.json")), 20, "the ACK file")
    (ack,) = acks.glob(f"{UID}_ACK_*.json")
    data = ack.read_bytes()
    name = f"{UID}_cmd.json"
    expected = [
        {"result": "OK", "callerId": "c-1"},
        {"error": f"{name}: entry 2: not a command object", "callerId": None},
        {"error": "setRelay: state must be 0 or 1, got 2", "callerId": "c-3"},
        {"error": f"{name}: entry 4: rpcName is missing", "callerId": "c-4"},
        {"error": "unknown command 'sunpm.fly'", "callerId": "é"},
        {"error": f"{name}: entry 6: callerId must be a string or an integer", "callerId": None},
        {"result": "OK", "callerId": 7}]
    assert data == json.dumps(expected, ensure_ascii=False, separators=(",", ":")).encode() + \
        b"\n"


SLOW = {
    "SCRIPT/slow.lua": b'header = {name = "slow"}\n'
                       b"function wait() local t = os.clock() while os.clock() - t < 0.3 do end"
                       b" return 1 end\n",
    f"CONFIG/{UID}_scl.ini": b"SCRIPT_File[0]=slow.lua\n",
}


async def test_mqtt_answers_go_in_arrival_order(tmp_path: Path, broker: Broker) -> None:
    """An unreadable message after a command still running is answered after it (docs/formats.md
    §14.4: arrival order), not ahead of it."""
    async with running_gateway(tmp_path, inverters=0, extra_files=SLOW) as plant:
        gateway = plant.gateway
        await reconfigure(plant, {
            "SERVER2_Type": "mqtt", "MQTT2_Host": "127.0.0.1", "MQTT2_Port": str(broker.plain_port),
            "MQTT2_TopicCommand": "t/cmd", "MQTT2_TopicResult": "t/res"})
        await wait_for(lambda: len(gateway._script_states()) == 1, 20, "the script")
        await session_subscribed(2)
        async with subscriber(broker.plain_port, "t/res") as got, \
                aiomqtt.Client("127.0.0.1", broker.plain_port, identifier="commander") as client:
            await client.publish("t/cmd", b'{"rpcName": "slow.wait", "callerId": "s-1"}', qos=1)
            await client.publish("t/cmd", b"[1]", qos=1)
            await mqtt_wait_for(got, 2)
    assert [json.loads(payload) for _, payload in got] == [
        [{"result": 1, "callerId": "s-1"}],
        [{"error": "t/cmd: one command object per message, got an array", "callerId": None}]]
