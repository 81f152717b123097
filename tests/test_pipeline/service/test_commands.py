"""The command executor over a real store: built-ins and their channels, errors worded as
docs/formats.md §12, a repeated callerId answered from the journal (also after a restart) and
never run twice, results journaled in execution order."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import pytest
from waiting import wait_until

from exporters.session import Trigger
from pipeline.clock import NS_PER_S, ManualClock
from pipeline.drivers._base import DiscoveryParams
from pipeline.service.commands import CommandError, CommandExecutor
from store import Log, StoreOptions
from store.events import (
    Channel,
    CommandReceived,
    CommandResult,
    JsonValue,
    journal_items,
)

pytestmark = pytest.mark.usefixtures("no_task_left_behind")

T0 = 1_622_541_600 * NS_PER_S


class Plant:
    """The gateway side of the built-ins, counting what was asked of it."""

    def __init__(self) -> None:
        self.parameter_requests = 0
        self.relay: list[int] = []
        self.sessions: list[tuple[int, Trigger]] = []
        self.traces: list[tuple[str, int]] = []
        self.restarts: list[int] = []
        self.writes: list[tuple[str, str | int, str | Decimal, bool]] = []

    def request_parameters(self) -> int:
        self.parameter_requests += 1
        return 2

    async def set_relay(self, state: int) -> None:
        if not self.relay and state == 1:
            self.relay.append(state)
            return
        raise CommandError("setRelay: I/O backend failed")

    def request_session(self, slot: int, trigger: Trigger) -> bool:
        if slot == 2:
            return False
        self.sessions.append((slot, trigger))
        return True

    async def status(self) -> dict[str, object]:
        return {"uid": "WPMTEST01"}

    async def write_variable(self, device: str, variable: str | int, value: str | Decimal,
                             raw: bool) -> dict[str, dict[str, object]]:
        self.writes.append((device, variable, value, raw))
        return {"written": {device: 8}, "failed": {}}

    def restart(self) -> None:
        self.restarts.append(self.parameter_requests)

    async def call_script(self, rpc_name: str,
                          parameters: Mapping[str, JsonValue]) -> JsonValue:
        raise CommandError(f"unknown script '{rpc_name.partition('.')[0]}'")

    def start_trace(self, interface: str, duration_min: int) -> None:
        if interface != "ethernet":
            raise CommandError(f"log: unknown interface {interface!r}")
        self.traces.append((interface, duration_min))


def cmd(name: str, caller: str | int | None, channel: Channel = Channel.FILE,
        **parameters: object) -> CommandReceived:
    return CommandReceived(channel=channel, rpc_name=name, caller_id=caller,
                           parameters=parameters)  # type: ignore[arg-type]


def results(log: Log) -> list[dict[str, object]]:
    return [json.loads(CommandResult.from_body(i.body).to_body())
            for i in journal_items(log.journal(kinds=["result"]).sort_by("seq"))]


async def test_builtins_channels_errors_and_repeats(tmp_path: Path) -> None:
    plant = Plant()
    clock = ManualClock(T0)
    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        executor = CommandExecutor(log, plant, clock)
        for command in [
            cmd("sunpm.getParameters", "c-1"),
            cmd("SUNPM.GETPARAMETERS", "c-1"),                 # repeated: not run again
            cmd("sunpm.setRelay", "c-2", state=2),
            cmd("sunpm.setRelay", 7, state=1),
            cmd("sunpm.setRelay", "7", state=1),              # "7" is not 7: runs, fails
            cmd("sunpm.fly", None),
            cmd("foo.bar", None),
            cmd("sunpm.status", "c-3"),
            cmd("sunpm.status", "c-4", Channel.LOCAL),
            cmd("sunpm.connect", "c-5", Channel.SMS, server=2),
            cmd("sunpm.connect", "c-6", Channel.LOCAL),
            cmd("sunpm.reboot", "c-6b", Channel.LOCAL),
            cmd("sunpm.reboot", "c-6c", Channel.MQTT),
            cmd("sunpm.writeVariable", "c-7", Channel.MQTT),
            cmd("sunpm.writeVariable", "c-7b", Channel.MQTT, device=3, variable=12, value=0.8),
            cmd("sunpm.getParameters", None, Channel.MQTT),
            cmd("sunpm.getParameters", None, Channel.MQTT),   # null callerIds always run
            cmd("sunpm.log", "c-8", Channel.MQTT, interface="ethernet"),
            cmd("sunpm.log", "c-9", Channel.MQTT, interface="ethernet1", duration=5),
            cmd("sunpm.log", "c-10", Channel.MQTT, interface="ethernet", duration="5"),
        ]:
            await executor.execute(command)
        got = results(log)
    assert [(r["channel"], r["callerId"], r.get("result"), r.get("error")) for r in got] == [
        ("file", "c-1", "OK", None),
        ("file", "c-1", "OK", None),
        ("file", "c-2", None, "setRelay: state must be 0 or 1, got 2"),
        ("file", 7, "OK", None),
        ("file", "7", None, "setRelay: I/O backend failed"),
        ("file", None, None, "unknown command 'sunpm.fly'"),
        ("file", None, None, "unknown script 'foo'"),
        ("file", "c-3", None, "status is not available by file; use sms, local"),
        ("local", "c-4", {"uid": "WPMTEST01"}, None),
        ("sms", "c-5", None, "connect: server 2 is not configured"),
        ("local", "c-6", "OK", None),
        ("local", "c-6b", "OK", None),
        ("mqtt", "c-6c", None, "reboot is not available by mqtt; use sms, local"),
        ("mqtt", "c-7", None, "writeVariable: device must be a name, an index or '*'"),
        ("mqtt", "c-7b", {"written": {"3": 8}, "failed": {}}, None),
        ("mqtt", None, "OK", None),
        ("mqtt", None, "OK", None),
        ("mqtt", "c-8", "OK", None),
        ("mqtt", "c-9", None, "log: unknown interface 'ethernet1'"),
        ("mqtt", "c-10", None, 'log: duration must be 0..1440 minutes, got "5"'),
    ]
    assert plant.traces == [("ethernet", 10)]
    assert plant.writes == [("3", 12, Decimal("0.8"), False)]
    assert plant.parameter_requests == 3
    assert plant.relay == [1]
    assert plant.sessions == [(1, Trigger.COMMAND)]

    # After a restart the answers of the last 7 days come from the journal.
    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        executor = CommandExecutor(log, plant, ManualClock(T0 + 6 * 86_400 * NS_PER_S))
        await executor.execute(cmd("sunpm.getParameters", "c-1", Channel.MQTT))
        await executor.execute(cmd("sunpm.setRelay", "c-2", Channel.MQTT, state=1))
        later = CommandExecutor(log, plant, ManualClock(T0 + 8 * 86_400 * NS_PER_S))
        await later.execute(cmd("sunpm.getParameters", "c-1", Channel.MQTT))
        got = results(log)[-3:]
    assert [(r["channel"], r["callerId"], r.get("result"), r.get("error")) for r in got] == [
        ("mqtt", "c-1", "OK", None),
        ("mqtt", "c-2", None, "setRelay: state must be 0 or 1, got 2"),
        ("mqtt", "c-1", "OK", None),
    ]
    assert plant.parameter_requests == 4       # run again only once the 7 days were over
    assert plant.relay == [1]


async def test_commands_left_unanswered_by_a_crash_run_at_start(tmp_path: Path) -> None:
    plant = Plant()
    clock = ManualClock(T0)
    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        # Journaled as the session journals them; the executor never ran (a crash).
        for command in (cmd("sunpm.getParameters", "k-1"), cmd("sunpm.setRelay", "k-2", state=1),
                        cmd("sunpm.getParameters", None)):
            await log.append_journal("command", json.loads(command.to_body()), ts_ns=T0)
        await CommandExecutor(log, plant, clock).execute(cmd("sunpm.getParameters", "k-0"))
    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        executor = CommandExecutor(log, plant, ManualClock(T0 + 60 * NS_PER_S))
        task = asyncio.create_task(executor.run())
        await wait_until(lambda: len(results(log)) >= 3, 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        got = results(log)
    assert [(r["callerId"], r.get("result")) for r in got] == [("k-0", "OK"), ("k-1", "OK"),
                                                              ("k-2", "OK")]
    assert plant.parameter_requests == 2 and plant.relay == [1]


async def test_reboot_runs_after_the_rest_of_its_batch_is_answered(tmp_path: Path) -> None:
    plant = Plant()
    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        executor = CommandExecutor(log, plant, ManualClock(T0))
        await executor.submit([cmd("sunpm.reboot", "b-1", Channel.SMS),
                               cmd("sunpm.getParameters", "b-2", Channel.SMS)])
        task = asyncio.create_task(executor.run())
        await wait_until(lambda: plant.restarts, 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        got = results(log)
    assert [(r["callerId"], r.get("result")) for r in got] == [("b-1", "OK"), ("b-2", "OK")]
    assert plant.restarts == [1]        # once, after getParameters was answered


class MaintenancePlant(Plant):
    """The gateway side of discovery and the configuration commands, recording what it got."""

    def __init__(self) -> None:
        super().__init__()
        self.discoveries: list[DiscoveryParams] = []
        self.changes: list[tuple[str, dict[str, str | None]]] = []
        self.factory_resets = 0

    async def discover(self, params: DiscoveryParams) -> int:
        self.discoveries.append(params)
        return 2

    async def change_config(self, command: str, values: Mapping[str, str | None]) -> None:
        self.changes.append((command, dict(values)))

    def factory_reset(self) -> None:
        self.factory_resets += 1

    async def stage_firmware(self, url: str, login: str, password: str, checksum: str,
                             interface: str) -> str:
        raise CommandError("updateFirmware: SYSTEM_UpdateCommand is not set")

    async def staged_upload(self, package: str, checksum: str) -> str:
        raise CommandError("updateFirmware: SYSTEM_UpdateCommand is not set")

    def install_firmware(self, package: str) -> None: ...


async def test_discovery_and_configuration_parameters(tmp_path: Path) -> None:
    plant = MaintenancePlant()
    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        executor = CommandExecutor(log, plant, ManualClock(T0))
        for command in [
            cmd("sunpm.discoverDevices", "d-1", ip="10.0.0.5", port="1502", lastAddress=9),
            cmd("sunpm.discoverDevices", "d-2", port="x"),
            cmd("sunpm.discoverDevices", "d-3", protocol="smanet"),
            cmd("sunpm.discoverDevices", "d-4", maxDevices=0),
            cmd("sunpm.discoverDevices", "d-5", ip=7),
            cmd("sunpm.ftp", "f-1", Channel.LOCAL, server=2, type="SFTP", host="h", port=22,
                user="", password="p"),
            cmd("sunpm.ftp", "f-2", Channel.LOCAL, server=3),
            cmd("sunpm.ftp", "f-3", Channel.LOCAL, type="webdav"),
            cmd("sunpm.ftp", "f-4", Channel.FILE, host="h"),
            cmd("sunpm.apn", "a-1", Channel.SMS, apn="plant.m2m", pin=1234),
            cmd("sunpm.factory", "x-1", Channel.LOCAL),
            cmd("sunpm.factory", "x-2", Channel.LOCAL, confirm=True),
            cmd("sunpm.updateFirmware", "u-1", Channel.MQTT),
            cmd("sunpm.updateFirmware", "u-2", Channel.MQTT, url="http://h/p.spm",
                checksum="0" * 32),
            # A package staged on the box is the web UI's upload, never a remote channel's.
            cmd("sunpm.updateFirmware", "u-3", Channel.MQTT, package="wgapp_1.0.spm",
                checksum="0" * 32),
            cmd("sunpm.updateFirmware", "u-4", Channel.SMS, package="wgapp_1.0.spm"),
            cmd("sunpm.updateFirmware", "u-5", Channel.LOCAL, package="wgapp_1.0.spm",
                url="http://h/p.spm"),
            cmd("sunpm.updateFirmware", "u-6", Channel.LOCAL, package="wgapp_1.0.spm",
                checksum="0" * 32),
        ]:
            await executor.execute(command)
        got = results(log)
    assert [(r["callerId"], r.get("result"), r.get("error")) for r in got] == [
        ("d-1", 2, None),
        ("d-2", None, 'discoverDevices: port must be an integer, got "x"'),
        ("d-3", None, "discoverDevices: protocol must be sunspec or tic, got 'smanet'"),
        ("d-4", None, "discoverDevices: maxDevices 0 is below 1"),
        ("d-5", None, "discoverDevices: ip must be a string, got 7"),
        ("f-1", "OK", None),
        ("f-2", None, "ftp: server must be 1 or 2, got 3"),
        ("f-3", None, "ftp: type must be ftp, ftps or sftp, got 'webdav'"),
        ("f-4", None, "ftp is not available by file; use sms, local"),
        ("a-1", "OK", None),
        ("x-1", None, "factory: confirm must be true"),
        ("x-2", "OK", None),
        ("u-1", None, "updateFirmware: url is missing"),
        ("u-2", None, "updateFirmware: SYSTEM_UpdateCommand is not set"),
        ("u-3", None, "updateFirmware: package is for the local channel; give url"),
        ("u-4", None, "updateFirmware: package is for the local channel; give url"),
        ("u-5", None, "updateFirmware: give url or package, not both"),
        ("u-6", None, "updateFirmware: SYSTEM_UpdateCommand is not set"),
    ]
    (params,) = plant.discoveries
    assert (params.ip, params.port, params.first_address, params.last_address,
            params.max_devices, params.timeout_ms, params.interface) == (
        "10.0.0.5", 1502, 1, 9, 240, 1000, None)
    assert plant.changes == [
        ("ftp", {"SERVER2_Type": "sftp", "FTP2_Host": "h", "FTP2_Port": "22", "FTP2_User": None,
                 "FTP2_Password": "p", "FTP2_RootDir": None}),
        ("apn", {"MODEM_Apn": "plant.m2m", "MODEM_User": None, "MODEM_Password": None,
                 "MODEM_Pin": "1234"})]
    # factory runs once the batch is answered, from the executor's loop (not from execute()).
    assert plant.factory_resets == 0


async def test_an_error_answer_is_one_line_of_at_most_500_characters(tmp_path: Path) -> None:
    # A script's `error("...\n...")` reaches the executor as a text of several lines; the ACK
    # entry, the MQTT result and the SMS reply carry it as one line (docs/formats.md §12.2).
    class Failing(Plant):
        async def call_script(self, rpc_name: str,
                              parameters: Mapping[str, JsonValue]) -> JsonValue:
            raise CommandError(f"{rpc_name}: limit.lua:3: no meter\r\nretry later\nor call"
                               + " x" * 400)

    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        executor = CommandExecutor(log, Failing(), ManualClock(T0))
        answer = await executor.execute(cmd("limit.set", "c-1"))
    assert answer.error is not None and len(answer.error) == 500
    assert answer.error.startswith("limit.set: limit.lua:3: no meter retry later or call x x")
    assert results(log)[0]["error"] == answer.error


async def test_integral_floats_are_refused_where_an_integer_is_asked(tmp_path: Path) -> None:
    """`{"state": 1.0}` passed `state in (0, 1)` and stopped at an assertion: the executor task
    ended, and the gateway with it."""
    plant = Plant()
    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        executor = CommandExecutor(log, plant, ManualClock(T0))
        for command in [cmd("sunpm.setRelay", "r-1", Channel.MQTT, state=1.0),
                        cmd("sunpm.connect", "r-2", Channel.LOCAL, server=1.0),
                        cmd("sunpm.setRelay", "r-3", Channel.MQTT, state=1)]:
            await executor.execute(command)
        got = results(log)
    assert [(r["callerId"], r.get("result"), r.get("error")) for r in got] == [
        ("r-1", None, "setRelay: state must be 0 or 1, got 1.0"),
        ("r-2", None, "connect: server must be 1 or 2, got 1.0"),
        ("r-3", "OK", None)]
    assert plant.relay == [1] and plant.sessions == []


async def test_an_unexpected_fault_answers_its_command_and_the_executor_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Faulty(Plant):
        async def write_variable(self, device: str, variable: str | int, value: str | Decimal,
                                 raw: bool) -> dict[str, dict[str, object]]:
            raise KeyError(device)

    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        executor = CommandExecutor(log, Faulty(), ManualClock(T0))
        running = asyncio.create_task(executor.run())
        try:
            # Bounded: with the executor gone, an answer never comes.
            async with asyncio.timeout(30):
                first = await executor.call(cmd("sunpm.writeVariable", "w-1", Channel.LOCAL,
                                                device="inv_a", variable=12, value=1))
                second = await executor.call(cmd("sunpm.getParameters", "w-2", Channel.LOCAL))
            assert not running.done()
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    assert first.error == "writeVariable: internal error (KeyError); see the gateway log"
    assert second.result == "OK"
    assert [r["callerId"] for r in results(log)] == ["w-1", "w-2"]
    assert any(r.exc_info and "Command failed unexpectedly" in r.getMessage()
               for r in caplog.records)


async def test_a_command_journaled_while_the_executor_starts_runs_once(tmp_path: Path) -> None:
    # Journaled (`call`) before the executor's recovery reads the journal, not answered yet:
    # it is no command a stop left unanswered, and runs once, from the queue.
    async with await Log.open(tmp_path, StoreOptions(flush_s=0.01)) as log:
        executor = CommandExecutor(log, Plant(), ManualClock(T0))
        calling = asyncio.create_task(executor.call(cmd("sunpm.getParameters", "g-1",
                                                        Channel.LOCAL)))
        await wait_until(lambda: log.watermark().journal > 0, 10, what="the command journaled")
        running = asyncio.create_task(executor.run())
        try:
            async with asyncio.timeout(30):
                assert (await calling).result == "OK"
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        assert [r["callerId"] for r in results(log)] == ["g-1"]
