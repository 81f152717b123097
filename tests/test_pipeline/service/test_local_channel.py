"""The local command socket (`sunpm cmd`) of a running gateway reads requests as strictly as a
command from a server: what could not be journaled is answered with an error, never a
traceback on the console and a closed connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import time
from pathlib import Path

import pytest
from _service_plant import UID, running_gateway
from waiting import wait_until

from pipeline.cli import main
from pipeline.service.local import CONNECTIONS_MAX, SOCKET_NAME, LocalChannel


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
                           "enclosed in double quotes"),
                (b'{"rpcName": "sunpm.getParameters", "rpcName": "sunpm.reboot"}',
                 "local: key 'rpcName' repeated in an object")]:
            assert await _ask(sock, request) == {"error": error, "callerId": None}
        assert await _ask(sock, b'{"rpcName": "sunpm.getParameters", "callerId": "l-1"}') == {
            "result": "OK", "callerId": "l-1"}


async def test_silent_clients_time_out_and_connections_are_capped(tmp_path: Path) -> None:
    """A client that connects and says nothing is answered and dropped after the request
    timeout; past the cap a connection is refused at once; once the silent ones are gone, a
    request is served again."""
    async with running_gateway(tmp_path, inverters=0) as plant:
        assert plant.gateway.commands is not None
        sock = tmp_path / "extra.sock"
        channel = LocalChannel(sock, plant.gateway.commands, request_timeout_s=1.5,
                               connections_max=3)
        task = asyncio.create_task(channel.run())
        try:
            await wait_until(sock.exists, 10, what="socket")
            silent = [await asyncio.open_unix_connection(str(sock)) for _ in range(3)]
            started = time.monotonic()
            assert await _ask(sock, b'{"rpcName": "sunpm.getParameters"}') == {
                "error": "local: busy, 3 connections open", "callerId": None}
            assert time.monotonic() - started < 1.0   # refused at once, not after a timeout
            for reader, writer in silent:
                line = await asyncio.wait_for(reader.readline(), 10)
                assert json.loads(line) == {"error": "local: no request within 1.5 s",
                                            "callerId": None}
                assert await asyncio.wait_for(reader.read(), 10) == b""   # closed by the gateway
                writer.close()
            assert time.monotonic() - started >= 1.4
            assert await _ask(sock, b'{"rpcName": "sunpm.getParameters", "callerId": "c"}') == {
                "result": "OK", "callerId": "c"}
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_the_gateway_socket_caps_connections(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, inverters=0):
        sock = tmp_path / "data" / SOCKET_NAME
        silent = [await asyncio.open_unix_connection(str(sock)) for _ in range(CONNECTIONS_MAX)]
        assert await _ask(sock, b'{"rpcName": "sunpm.getParameters"}') == {
            "error": f"local: busy, {CONNECTIONS_MAX} connections open", "callerId": None}
        for _, writer in silent:
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(0.2)
        assert await _ask(sock, b'{"rpcName": "sunpm.getParameters", "callerId": "d"}') == {
            "result": "OK", "callerId": "d"}


BIG = {
    "SCRIPT/big.lua": b'header = {name = "big"}\n'
                      b"function value() return {1e20, 1e-7, 2.0, {0.5, 3}} end\n",
    f"CONFIG/{UID}_scl.ini": b"SCRIPT_File[0]=big.lua\n",
}


async def test_sunpm_cmd_prints_numbers_as_the_files_write_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/formats.md §9.3: plain notation, never `1e+20` (json's) in what `sunpm cmd` prints."""
    async with running_gateway(tmp_path, inverters=0, extra_files=BIG) as plant:
        await wait_until(lambda: len(plant.gateway._script_states()) == 1, 20, what="script")
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["cmd", "big.value", "--data",
                                              str(tmp_path / "data")])
        out = capsys.readouterr().out
    assert code == 0, out
    assert out == ('{\n  "result": [\n    100000000000000000000,\n    0.0000001,\n    2,\n'
                   '    [\n      0.5,\n      3\n    ]\n  ],\n  "callerId": null\n}\n')


async def test_the_socket_is_private_without_touching_the_process_umask(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The umask is the whole process's: set to 0177 while the socket was made, it took the x
    bit off the folders the store's worker threads created meanwhile (a configuration
    snapshot's, a device's), which the service user then could not write into."""
    async with running_gateway(tmp_path, inverters=0) as plant:
        assert plant.gateway.commands is not None
        umasks: list[int] = []
        real_umask = os.umask

        def watched(mask: int) -> int:
            umasks.append(mask)
            return real_umask(mask)
        monkeypatch.setattr(os, "umask", watched)
        sock = tmp_path / "extra.sock"
        task = asyncio.create_task(LocalChannel(sock, plant.gateway.commands).run())
        try:
            await wait_until(sock.exists, 10, what="socket")
            assert stat.S_IMODE(sock.stat().st_mode) == 0o600
            assert umasks == []
            assert await _ask(sock, b'{"rpcName": "sunpm.getParameters", "callerId": "u"}') == {
                "result": "OK", "callerId": "u"}
            assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".s")) == []
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.mark.parametrize("length", [107, 160])
async def test_sunpm_cmd_reaches_a_gateway_whose_socket_path_is_long(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], length: int) -> None:
    """A Unix socket's name holds 107 bytes: a socket path of exactly that was refused (it was
    bound in a staging folder some 10 bytes longer), and a longer one could not be made at all;
    `sunpm cmd` then had no gateway to reach."""
    base = tmp_path / "d"
    base = tmp_path / ("d" * (length - len(str(base / "data" / SOCKET_NAME)) + 1))
    assert len(str(base / "data" / SOCKET_NAME)) == length
    base.mkdir()
    async with running_gateway(base, inverters=0) as plant:
        sock = base / "data" / SOCKET_NAME
        await wait_until(sock.exists, 10, what="the socket")
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["cmd", "sunpm.getParameters", "--data",
                                              str(base / "data")])
        captured = capsys.readouterr()
        assert code == 0, captured
        assert '"result": "OK"' in captured.out
        assert plant.gateway.commands is not None
