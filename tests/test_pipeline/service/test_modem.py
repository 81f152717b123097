"""SMS commands through an AT-command modem (docs/formats.md §13.4): `AtModem` on the slave side of a
pty pair, a simulated modem answering AT commands in text mode on the master side. The PIN is
given when the SIM asks, unread messages are listed, run through the real command executor over a
real store, answered (`AT+CMGS`, text then Ctrl-Z) and deleted; a number not allowed gets nothing;
a modem answering ERROR is retried without ending the task."""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import pytest
from waiting import wait_until

from exporters.session import Trigger
from pipeline.clock import SystemClock
from pipeline.service.commands import CommandError, CommandExecutor
from pipeline.service.modem import AtModem
from pipeline.service.sms import SmsCommands
from store.events import JsonValue
from store.log import Log, StoreOptions

pytestmark = pytest.mark.usefixtures("no_task_left_behind")

ALLOWED = "+33612345678"


class SimulatedModem:
    """A text-mode modem on the master fd: a SIM with PIN 1234, a store of messages."""

    def __init__(self, fd: int, messages: list[tuple[str, str]], *, fail: bool = False) -> None:
        self.fd = fd
        self.messages = {k + 1: m for k, m in enumerate(messages)}
        self.fail = fail
        self.pin_ok = False
        self.commands: list[str] = []
        self.sent: list[tuple[str, str]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._serve())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self) -> bytes:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(self.fd, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            loop.remove_reader(self.fd)
        return os.read(self.fd, 4096)

    def _write(self, text: str) -> None:
        os.write(self.fd, text.encode())

    async def _serve(self) -> None:
        buffer = b""
        recipient: str | None = None
        while True:
            buffer += await self._read()
            while True:
                if recipient is not None:
                    end = buffer.find(b"\x1a")
                    if end < 0:
                        break
                    self.sent.append((recipient, buffer[:end].decode()))
                    buffer, recipient = buffer[end + 1:], None
                    self._write(f"\r\n+CMGS: {len(self.sent)}\r\n\r\nOK\r\n")
                    continue
                end = buffer.find(b"\r")
                if end < 0:
                    break
                line, buffer = buffer[:end].decode().strip(), buffer[end + 1:]
                if not line:
                    continue
                self.commands.append(line)
                recipient = self._answer(line)

    def _answer(self, line: str) -> str | None:
        if self.fail:
            self._write("\r\nERROR\r\n")
        elif line == "AT+CPIN?":
            self._write(f"\r\n+CPIN: {'READY' if self.pin_ok else 'SIM PIN'}\r\n\r\nOK\r\n")
        elif line.startswith("AT+CPIN="):
            self.pin_ok = line == 'AT+CPIN="1234"'
            self._write("\r\nOK\r\n" if self.pin_ok else "\r\n+CME ERROR: 16\r\n")
        elif line == 'AT+CMGL="REC UNREAD"':
            out = "".join(f'\r\n+CMGL: {k},"REC UNREAD","{sender}",,"26/12/06,04:00:00+04"\r\n'
                          f"{text}" for k, (sender, text) in self.messages.items())
            self._write(out + "\r\n\r\nOK\r\n")
        elif line.startswith("AT+CMGD="):
            self.messages.pop(int(line.split("=")[1]), None)
            self._write("\r\nOK\r\n")
        elif line.startswith("AT+CMGS="):
            self._write("\r\n> ")
            return line.split('"')[1]
        else:
            self._write("\r\nOK\r\n")
        return None


class Control:
    """The gateway side of the built-ins this test sends."""

    def __init__(self) -> None:
        self.sessions: list[int] = []

    def request_session(self, slot: int, trigger: Trigger) -> bool:
        self.sessions.append(slot)
        return slot == 1

    async def status(self) -> dict[str, object]:
        return {"uid": "WPMTEST01", "servers": [], "devices": []}

    async def set_relay(self, state: int) -> None:
        raise CommandError("setRelay: no IO device is configured")

    def request_parameters(self) -> int:
        return 0

    def start_trace(self, interface: str, duration_min: int) -> None: ...

    def restart(self) -> None: ...

    async def write_variable(self, device: str, variable: str | int, value: str | Decimal,
                             raw: bool) -> dict[str, dict[str, object]]:
        raise CommandError("writeVariable: unknown device")

    async def call_script(self, rpc_name: str,
                          parameters: Mapping[str, JsonValue]) -> JsonValue:
        raise CommandError("unknown script")


@pytest.fixture
def pty_pair() -> tuple[int, str]:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    # The slave stays open here too: a master whose slave has no opener reads EIO.
    yield master, os.ttyname(slave)  # type: ignore[misc]
    os.close(master)
    os.close(slave)


async def test_modem_answers_sms_commands(tmp_path: Path, pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    modem_sim = SimulatedModem(master, [(ALLOWED, "connect"), (ALLOWED, "setrelay=1"),
                                        ("+33700000000", "status"), (ALLOWED, "fly")])
    modem_sim.start()
    store = await Log.open(tmp_path / "store", StoreOptions(flush_s=0.05))
    control = Control()
    executor = CommandExecutor(store, control, SystemClock())  # type: ignore[arg-type]
    modem = AtModem(path, "1234", SmsCommands(lambda: [ALLOWED], executor), SystemClock())
    tasks = [asyncio.create_task(executor.run()), asyncio.create_task(modem.run())]
    try:
        try:
            await wait_until(lambda: modem.handled == 4 and not modem_sim.messages)
        except TimeoutError:
            raise AssertionError(f"{modem.state} {modem.handled} {modem_sim.commands} "
                                 f"{modem_sim.sent}") from None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await modem_sim.stop()
        await store.close()
    assert modem_sim.pin_ok and modem.state == "ready"
    assert modem_sim.commands[:5] == ["ATE0", "AT+CMEE=1", "AT+CPIN?", 'AT+CPIN="1234"',
                                      "AT+CMGF=1"]
    assert control.sessions == [1]
    # connect succeeds silently; the other number gets nothing; failures are answered.
    assert modem_sim.sent == [(ALLOWED, "setRelay: no IO device is configured"),
                              (ALLOWED, "unknown command 'fly'")]


async def test_a_failing_modem_is_retried_and_never_ends_the_task(
        tmp_path: Path, pty_pair: tuple[int, str], caplog: pytest.LogCaptureFixture) -> None:
    master, path = pty_pair
    modem_sim = SimulatedModem(master, [], fail=True)
    modem_sim.start()
    store = await Log.open(tmp_path / "store", StoreOptions(flush_s=0.05))
    executor = CommandExecutor(store, Control(), SystemClock())  # type: ignore[arg-type]
    modem = AtModem(path, "", SmsCommands(lambda: [ALLOWED], executor), SystemClock())
    task = asyncio.create_task(modem.run())
    try:
        await wait_until(lambda: "not usable: ATE0: ERROR" in caplog.text)
        assert not task.done() and modem.state == "none"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await modem_sim.stop()
        await store.close()
