"""Malformed commands from a file server or a broker (docs/behaviour.md §4.5, docs/formats.md
§12.1, §14.4): whatever the bytes, the parsers give entries or error results and never raise; the
permanent MQTT connection answers a hostile message and keeps serving."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
from hypothesis import given, settings
from hypothesis import strategies as st
from mqtt_clients import session_subscribed, subscriber, wait_for
from peers import Broker

from config.model import ServerSettings, ServerType
from exporters.outbox import Outbox
from exporters.session import CollectingHandler, MqttSession
from exporters.session.commands import CMD_MAX_DEPTH, parse_command_file, parse_command_message
from exporters.transports import MqttTransport, Timeouts
from store.events import CommandReceived, CommandResult
from store.log import Log

# Surrogates included: a JSON `\\ud800` escape decodes to one, and no UTF-8 journal holds it.
_TEXT = st.text(st.characters(blacklist_categories=()))
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=20)


@given(st.binary(max_size=2000))
def test_any_bytes_give_entries_never_an_exception(data: bytes) -> None:
    entries = parse_command_file(data, "X_cmd.json")
    assert entries and all(isinstance(e, CommandReceived | CommandResult) for e in entries)
    for entry in entries:
        json.loads(entry.to_body().encode())  # every entry can be journaled
    message = parse_command_message(data, "plant/cmd")
    json.loads(message.to_body().encode())


@given(_JSON)
@settings(max_examples=300)
def test_any_json_document_gives_entries_that_can_be_journaled(doc: object) -> None:
    data = json.dumps(doc).encode()
    for entry in parse_command_file(data, "X_cmd.json"):
        json.loads(entry.to_body().encode())
    json.loads(parse_command_message(data, "plant/cmd").to_body().encode())


@given(st.integers(min_value=1, max_value=3000), st.sampled_from("[{"))
def test_nesting_of_any_depth_is_an_error_result_past_the_limit(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    inner = opener + ('"a":' if opener == "{" else "")
    data = (inner * depth + "1" + closer * depth).encode()
    entries = parse_command_file(data, "X_cmd.json")
    if depth > CMD_MAX_DEPTH:
        assert len(entries) == 1 and isinstance(entries[0], CommandResult)
        assert entries[0].error == (f"X_cmd.json: invalid JSON: nested deeper than "
                                    f"{CMD_MAX_DEPTH} levels")


def test_hostile_numbers_are_refused_with_one_line_errors() -> None:
    cases = {
        b'{"rpcName":"a.b","callerId":' + b"9" * 5000 + b"}":
            "invalid JSON: a number of more than 30 digits",
        b'{"rpcName":"a.b","parameters":{"v":NaN}}': "invalid JSON: NaN is not a JSON number",
        b'{"rpcName":"a.b","parameters":{"v":-Infinity}}':
            "invalid JSON: -Infinity is not a JSON number",
        b'{"rpcName":"a.b","parameters":{"v":1e400}}': "invalid JSON: 1e400 is out of range",
    }
    for data, text in cases.items():
        entry = parse_command_message(data, "plant/cmd")
        assert isinstance(entry, CommandResult) and entry.error == f"plant/cmd: {text}"
        (file_entry,) = parse_command_file(data, "X_cmd.json")
        assert isinstance(file_entry, CommandResult) and file_entry.error == f"X_cmd.json: {text}"
    # Large but sane numbers still pass.
    entry = parse_command_message(b'{"rpcName":"a.b","callerId":123456789012345678901234567890,'
                                  b'"parameters":{"v":1.5e300}}', "plant/cmd")
    assert isinstance(entry, CommandReceived) and entry.caller_id == 123456789012345678901234567890


def test_parameters_that_are_no_object_are_refused_not_run_without_them() -> None:
    """`"parameters": [1]` or `"x"` is a wrong parameter type: the command is answered with an
    error and not run (with `{}` a script function, `reboot` or `getParameters` would run);
    `null` is an absent member, as everywhere in JSON commands."""
    data = (b'[{"rpcName":"sunpm.reboot","parameters":"now","callerId":"c1"},'
            b'{"rpcName":"limit.set","parameters":[1],"callerId":2},'
            b'{"rpcName":"sunpm.getParameters","parameters":null,"callerId":"c3"}]')
    first, second, third = parse_command_file(data, "X_cmd.json")
    # No rpcName in the answer: the callerId is not taken, a corrected command may use it.
    assert first == CommandResult(channel=first.channel, caller_id="c1",
                                  error="X_cmd.json: entry 1: parameters must be an object")
    assert isinstance(second, CommandResult) and second.caller_id == 2
    assert second.error == "X_cmd.json: entry 2: parameters must be an object"
    assert isinstance(third, CommandReceived) and third.parameters == {}
    message = parse_command_message(b'{"rpcName":"limit.set","parameters":5,"callerId":"m"}',
                                    "plant/cmd")
    assert isinstance(message, CommandResult) and message.caller_id == "m"
    assert message.error == "plant/cmd: parameters must be an object"


def test_a_message_past_1_mib_is_refused_unread() -> None:
    entry = parse_command_message(b" " * ((1 << 20) + 1), "plant/cmd")
    assert isinstance(entry, CommandResult)
    assert entry.error == "plant/cmd: larger than 1 MiB; not executed"


async def test_hostile_messages_on_the_command_topic_are_answered_and_serving_goes_on(
        store: Log, broker: Broker, tmp_path: Path) -> None:
    s = ServerSettings(slot=2, type=ServerType.MQTT, host="127.0.0.1", port=broker.plain_port,
                       mqtt_client_id="sunpm-gw", topic_command="plant/cmd",
                       topic_result="plant/result", qos=1, keep_alive_s=30)
    handler = CollectingHandler(store)
    session = MqttSession(
        settings=s, outbox=Outbox(server=2, log=store, source=None,  # type: ignore[arg-type]
                                  directory=tmp_path / "outbox", streams=()),
        transport=MqttTransport(s, cert_dir=tmp_path,
                                timeouts=Timeouts(connect_s=5, operation_s=5)),
        log=store, commands=handler)
    hostile = [b"[" * 100_000, b'{"rpcName":"sunpm.log","callerId":' + b"9" * 5000 + b"}",
               b'{"rpcName":"sunpm.setRelay","parameters":{"state":NaN}}',
               b'{"rpcName":"sunpm.setRelay","callerId":"\\ud800"}']
    stop = asyncio.Event()
    async with subscriber(broker.plain_port, "plant/result") as got, asyncio.TaskGroup() as tg:
        tg.create_task(session.serve(stop), name="mqtt-serve")
        async with aiomqtt.Client("127.0.0.1", broker.plain_port, identifier="hostile") as c:
            await session_subscribed(2)
            for payload in hostile:
                await c.publish("plant/cmd", payload, qos=1)
            await c.publish("plant/cmd", b'{"rpcName":"sunpm.setRelay","parameters":'
                                         b'{"state":1},"callerId":"after"}', qos=1)
        await wait_for(got, 5)
        stop.set()
    assert [c.caller_id for c in handler.received] == ["after"]
    assert [json.loads(p)[0].get("error", "OK") for _, p in got] == [
        "plant/cmd: invalid JSON: nested deeper than 32 levels",
        "plant/cmd: invalid JSON: a number of more than 30 digits",
        "plant/cmd: invalid JSON: NaN is not a JSON number",
        "plant/cmd: invalid JSON: a \\u escape is a lone surrogate, not a character",
        "OK"]


def test_a_key_repeated_in_an_object_is_refused_not_the_last_one_run() -> None:
    """`json` keeps the last of two equal keys: a file showing `sunpm.connect` first would run
    `sunpm.factory`. The entry is answered with an error and not run; the others run."""
    data = (b'[{"rpcName":"sunpm.connect","rpcName":"sunpm.factory","callerId":"c1"},'
            b'{"rpcName":"sunpm.setRelay","parameters":{"state":1,"state":0},"callerId":"c2"},'
            b'{"rpcName":"sunpm.status","callerId":"c3","callerId":"c4"},'
            b'{"rpcName":"sunpm.getParameters","parameters":{"a":[{"b":1}]},"callerId":"c5"}]')
    first, second, third, fourth = parse_command_file(data, "X_cmd.json")
    assert first == CommandResult(channel=first.channel, caller_id="c1",
                                  error="X_cmd.json: entry 1: key 'rpcName' repeated in an object")
    assert second == CommandResult(channel=second.channel, caller_id="c2",
                                   error="X_cmd.json: entry 2: key 'state' repeated in an object")
    assert third == CommandResult(channel=third.channel, caller_id=None,
                                  error="X_cmd.json: entry 3: key 'callerId' repeated in an "
                                        "object")
    assert isinstance(fourth, CommandReceived) and fourth.caller_id == "c5"
    message = parse_command_message(b'{"rpcName":"a.b","rpcName":"sunpm.reboot"}', "plant/cmd")
    assert isinstance(message, CommandResult)
    assert message.error == "plant/cmd: key 'rpcName' repeated in an object"
