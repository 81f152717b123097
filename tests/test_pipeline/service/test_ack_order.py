"""The ACK file of a command file through the running gateway (docs/formats.md §12.1, §12.2):
one answer per entry in the file's order, those of entries that could not be read included, as
compact one-line JSON ending with LF."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from _service_plant import UID, running_gateway, wait_for

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
