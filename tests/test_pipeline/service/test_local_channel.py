"""The local command socket (`sunpm cmd`) of a running gateway reads requests as strictly as a
command from a server: what could not be journaled is answered with an error, never a
traceback on the console and a closed connection."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from _service_plant import running_gateway

from pipeline.service.local import SOCKET_NAME


async def _ask(socket_path: Path, request: bytes) -> dict[str, object]:
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    try:
        writer.write(request + b"\n")
        await writer.drain()
        answer = json.loads(await asyncio.wait_for(reader.readline(), 20))
    finally:
        writer.close()
        await writer.wait_closed()
    assert isinstance(answer, dict)
    return answer


async def test_requests_no_journal_can_hold_are_answered_with_an_error(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, inverters=0):
        sock = tmp_path / "data" / SOCKET_NAME
        deep = b'{"rpcName": "sunpm.status", "parameters": {"a": ' + b"[" * 50_000 + \
            b"]" * 50_000 + b"}}"
        for request, error in [
                (b'{"rpcName": "sunpm.setRelay", "parameters": {"state": NaN}}',
                 "local: invalid JSON: NaN is not a JSON number"),
                (b'{"rpcName": "sunpm.setRelay", "parameters": {"state": -1e999}}',
                 "local: invalid JSON: -1e999 is out of range"),
                (deep, "local: invalid JSON: nested deeper than 32 levels"),
                (b"{oops", "local: invalid JSON at line 1 column 2: Expecting property name "
                           "enclosed in double quotes")]:
            assert await _ask(sock, request) == {"error": error, "callerId": None}
        assert await _ask(sock, b'{"rpcName": "sunpm.getParameters", "callerId": "l-1"}') == {
            "result": "OK", "callerId": "l-1"}
