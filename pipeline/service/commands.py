"""The command executor (docs/behaviour.md §7.2): one queue for every channel, in arrival order.

Channels hand in `CommandReceived` already journaled (the session for `/CMD` files, the MQTT
session for the command topic); the executor runs them one at a time and journals each answer as a
`result` event (acknowledged), which the ACK files and the MQTT result topic deliver. At most 100
commands wait (`<name>: busy, 100 commands waiting`); each gets 600 s.

A `callerId` answered in the last 7 days (any channel) is not run again: its stored answer is
journaled again for the repeat's channel. Every built-in of docs/formats.md §12.3 runs, from the
channels allowed to use it. `discoverDevices` runs in the background (other commands go on; a
second one while it runs is refused by the gateway's discovery lock) and has no 600 s limit;
`factory`, `reboot` and the install step of `updateFirmware` run once the commands queued with them
are answered (docs/behaviour.md §7.2).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Protocol

from config.config_ini import PORT_RANGE
from config.decimal_text import read_integer
from config.errors import SunpmError
from exporters.session import Trigger
from exporters.session.commands import CommandEntry, JournalSignal
from pipeline.clock import NS_PER_S, Clock
from pipeline.drivers._base import DiscoveryParams
from store.events import Channel, CommandReceived, CommandResult, JsonValue, journal_items
from store.log import Log

log = logging.getLogger("sunpm.command")

QUEUE_COMMANDS: Final = 100
COMMAND_TIMEOUT_S: Final = 600.0
CALLER_ID_DAYS: Final = 7

#: Built-ins per channel (docs/formats.md §12.3: F file, M MQTT, S SMS, L local).
_CHANNELS: Final[Mapping[str, str]] = {
    "connect": "SL", "status": "SL", "factory": "SL", "reboot": "SL", "updateFirmware": "MSL",
    "apn": "SL", "ftp": "SL", "log": "FMSL", "setRelay": "FMSL", "discoverDevices": "FMSL",
    "getParameters": "FMSL", "writeVariable": "FMSL",
}
#: Every built-in's name, as `sunpm cmd` checks a name before sending it.
BUILTIN_NAMES: Final = tuple(_CHANNELS)
#: Run in the background, without the 600 s limit (docs/behaviour.md §7.2).
_BACKGROUND: Final = "sunpm.discoverdevices"
#: `ftp` parameters -> config.ini key names without the server's prefix digit.
_FTP_KEYS: Final = (("type", "SERVER{n}_Type"), ("host", "FTP{n}_Host"), ("port", "FTP{n}_Port"),
                    ("user", "FTP{n}_User"), ("password", "FTP{n}_Password"),
                    ("rootDir", "FTP{n}_RootDir"))
_APN_KEYS: Final = (("apn", "MODEM_Apn"), ("user", "MODEM_User"), ("password", "MODEM_Password"),
                    ("pin", "MODEM_Pin"))
_LETTER: Final = {Channel.FILE: "F", Channel.MQTT: "M", Channel.SMS: "S", Channel.LOCAL: "L"}
_NAMES: Final = {"F": "file", "M": "mqtt", "S": "sms", "L": "local"}
ERROR_MAX_CHARS: Final = 500
_LINE_BREAKS: Final = re.compile(r"\r\n|\r|\n")


class CommandError(SunpmError):
    """A command's error answer; the text starts with the command's name."""


class GatewayControl(Protocol):
    """What the built-ins act on (the running `Gateway`)."""

    def request_parameters(self) -> int: ...

    async def set_relay(self, state: int) -> None: ...

    def request_session(self, slot: int, trigger: Trigger) -> bool: ...

    async def status(self) -> dict[str, object]: ...

    def start_trace(self, interface: str, duration_min: int) -> None: ...

    def restart(self) -> None: ...

    def factory_reset(self) -> None: ...

    async def write_variable(self, device: str, variable: str | int, value: str | Decimal,
                             raw: bool) -> dict[str, dict[str, object]]: ...

    async def call_script(self, rpc_name: str,
                          parameters: Mapping[str, JsonValue]) -> JsonValue: ...

    async def discover(self, params: DiscoveryParams) -> int: ...

    async def change_config(self, command: str, values: Mapping[str, str | None]) -> None: ...

    async def stage_firmware(self, url: str, login: str, password: str, checksum: str,
                             interface: str) -> str: ...

    async def staged_upload(self, package: str, checksum: str) -> str: ...

    def install_firmware(self, package: str) -> None: ...


Builtin = Callable[[Mapping[str, JsonValue]], Awaitable[JsonValue]]


@dataclass(frozen=True, slots=True)
class _Answer:
    result: JsonValue
    error: str | None


class CommandExecutor:
    """`exporters.session.CommandHandler` of the gateway; `run()` is its task."""

    def __init__(self, store: Log, control: GatewayControl, clock: Clock) -> None:
        self._store = store
        self._control = control
        self._clock = clock
        self._queue: asyncio.Queue[tuple[CommandEntry, asyncio.Future[CommandResult] | None]] \
            = asyncio.Queue(QUEUE_COMMANDS)
        self._answered: dict[str, _Answer] | None = None
        #: The journal as this executor found it: the commands a stop left unanswered are among
        #: these; one journaled since is queued, and runs from the queue once (the recovery at
        #: the start of `run` may read it before it is answered).
        self._recover_upto = store.watermark().journal
        #: What `reboot` (and later `factory`, `updateFirmware`) does once the commands queued
        #: with it are answered (docs/behaviour.md §7.2).
        self._after_batch: list[Callable[[], None]] = []
        self._builtins: dict[str, Builtin] = {
            "getparameters": self._get_parameters, "setrelay": self._set_relay,
            "connect": self._connect, "status": self._status, "log": self._log, "reboot": self._reboot,
            "writevariable": self._write_variable, "discoverdevices": self._discover,
            "ftp": self._ftp, "apn": self._apn, "factory": self._factory,
            "updatefirmware": self._update_firmware}
        self._background: set[asyncio.Task[None]] = set()
        #: Fired after each result is journaled: the MQTT result topics publish it at once.
        self.answers = JournalSignal()

    async def submit(self, commands: Sequence[CommandEntry]) -> None:
        """Queue a file's (or a message's) entries in their order; an entry that could not be
        read comes as its answer, journaled when its turn comes."""
        for command in commands:
            try:
                self._queue.put_nowait((command, None))
            except asyncio.QueueFull:
                if isinstance(command, CommandResult):
                    await self._refused(command)
                    continue
                await self._answer(command, _Answer(None, f"{_short(command.rpc_name)}: busy, "
                                                          f"{QUEUE_COMMANDS} commands waiting"))

    async def call(self, command: CommandReceived) -> CommandResult:
        """Journal a command of the local channel, queue it, and wait for its answer."""
        await self._store.append_journal("command", command.to_fields(),
                                         ts_ns=self._clock.wall_ns(), commit_now=True)
        answer: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((command, answer))
        except asyncio.QueueFull:
            return await self._answer(command, _Answer(
                None, f"{_short(command.rpc_name)}: busy, {QUEUE_COMMANDS} commands waiting"))
        return await answer

    async def run(self) -> None:
        try:
            await self._recover()
        except SunpmError as err:
            log.error("Commands left unanswered by a stop not recovered: %s", err)
        try:
            while True:
                command, answer = await self._queue.get()
                if isinstance(command, CommandResult):
                    await self._refused(command)
                elif command.rpc_name.lower() == _BACKGROUND:
                    task = asyncio.create_task(self._execute_for(command, answer),
                                               name="discoverDevices")
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
                    # Its lock is taken when it starts: let it, before the next command.
                    await asyncio.sleep(0)
                else:
                    await self._execute_for(command, answer)
                self._after_queue()
        finally:
            for task in list(self._background):
                task.cancel()

    async def _execute_for(self, command: CommandReceived,
                           answer: asyncio.Future[CommandResult] | None) -> None:
        try:
            result = await self.execute(command)
        except SunpmError as err:
            # Its answer could not be journaled (storage failing): the caller hears it.
            log.error("Command answer not stored. name=%s error=%s", command.rpc_name, err)
            result = CommandResult(channel=command.channel, caller_id=command.caller_id,
                                   rpc_name=command.rpc_name, server=command.server,
                                   error=error_text(f"{_short(command.rpc_name)}: {err}"))
        if answer is not None and not answer.done():
            answer.set_result(result)

    def _after_queue(self) -> None:
        if self._queue.empty() and self._after_batch:
            actions, self._after_batch = self._after_batch, []
            for action in actions:
                action()

    async def execute(self, command: CommandReceived) -> CommandResult:
        answered = await self._history()
        key = _caller_key(command)
        if key is not None and key in answered:
            log.info("Command repeated; its stored answer is sent again. name=%s callerId=%s "
                     "channel=%s", command.rpc_name, command.caller_id, command.channel)
            return await self._answer(command, answered[key], store=False)
        log.info("Command received. name=%s callerId=%s channel=%s", command.rpc_name,
                 command.caller_id, command.channel)
        limit = None if command.rpc_name.lower() == _BACKGROUND else COMMAND_TIMEOUT_S
        try:
            async with asyncio.timeout(limit):
                answer = _Answer(await self._run(command), None)
        except CommandError as err:
            answer = _Answer(None, error_text(str(err)))
        except TimeoutError:
            answer = _Answer(None, f"{_short(command.rpc_name)}: no result after "
                                   f"{COMMAND_TIMEOUT_S:.0f} s")
        except SunpmError as err:
            answer = _Answer(None, error_text(f"{_short(command.rpc_name)}: {err}"))
        except Exception as err:
            # A fault of ours on a remote command's parameters ended the executor, so the whole
            # gateway; journaled with a callerId, the command ran again at the next start: one
            # MQTT message kept the service in a crash loop. Answered, with its trace logged.
            log.exception("Command failed unexpectedly. name=%s callerId=%s", command.rpc_name,
                          command.caller_id)
            answer = _Answer(None, error_text(f"{_short(command.rpc_name)}: internal error "
                                              f"({type(err).__name__}); see the gateway log"))
        return await self._answer(command, answer)

    async def _run(self, command: CommandReceived) -> JsonValue:
        script, dot, name = command.rpc_name.partition(".")
        if not dot:
            raise CommandError(f"unknown script '{command.rpc_name}'")
        if script.lower() != "sunpm":
            return await self._control.call_script(command.rpc_name, command.parameters)
        canonical = next((n for n in _CHANNELS if n.lower() == name.lower()), None)
        if canonical is None:
            raise CommandError(f"unknown command '{command.rpc_name}'")
        allowed = _CHANNELS[canonical]
        if _LETTER[command.channel] not in allowed:
            raise CommandError(f"{canonical} is not available by {command.channel.value}; use "
                               + ", ".join(_NAMES[c] for c in allowed))
        if canonical == "updateFirmware" and "package" in command.parameters and \
                command.channel is not Channel.LOCAL:
            # A package on the box's disk is the web UI's upload; a remote channel names a URL.
            raise CommandError("updateFirmware: package is for the local channel; give url")
        builtin = self._builtins.get(canonical.lower())
        if builtin is None:
            raise CommandError(f"{canonical}: not available in this version of sunpm")
        return await builtin(command.parameters)

    async def _recover(self) -> None:
        """Commands journaled in the last 7 days that a crash left without an answer run now
        (docs/behaviour.md §4.2 step 7), in journal order. Only commands with a callerId can be
        matched with their answers; one without is lost in a crash between its journaling and
        its answer."""
        answered = await self._history()
        since = self._clock.wall_ns() - CALLER_ID_DAYS * 86_400 * NS_PER_S
        table = await asyncio.to_thread(self._store.journal, start_ns=since, kinds=["command"])
        for item in journal_items(table.sort_by("seq")):
            if item.seq > self._recover_upto:
                break
            command = CommandReceived.from_body(item.body)
            key = _caller_key(command)
            if key is not None and key not in answered:
                log.info("Command journaled before a stop and not answered; running it now. "
                         "name=%s callerId=%s", command.rpc_name, command.caller_id)
                await self.execute(command)

    async def _refused(self, result: CommandResult) -> None:
        """The answer to an entry that could not be read, journaled in its turn."""
        try:
            await self._store.append_journal("result", result.to_fields(),
                                             ts_ns=self._clock.wall_ns(), commit_now=True)
        except SunpmError as err:
            log.error("Command answer not stored. error=%s", err)
            return
        self.answers.journaled()
        log.info("Command refused. channel=%s callerId=%s error=%s", result.channel,
                 result.caller_id, result.error)

    async def _answer(self, command: CommandReceived, answer: _Answer, *,
                      store: bool = True) -> CommandResult:
        result = CommandResult(channel=command.channel, caller_id=command.caller_id,
                               rpc_name=command.rpc_name, result=answer.result,
                               error=answer.error, server=command.server)
        journaled = result if store else dataclasses.replace(result, repeat=True)
        await self._store.append_journal("result", journaled.to_fields(),
                                         ts_ns=self._clock.wall_ns(), commit_now=True)
        self.answers.journaled()
        if answer.error is not None:
            log.info("Command failed. name=%s callerId=%s error=%s", command.rpc_name,
                     command.caller_id, answer.error)
        else:
            log.info("Command done. name=%s callerId=%s", command.rpc_name, command.caller_id)
        key = _caller_key(command)
        if store and key is not None and self._answered is not None:
            self._answered[key] = answer
        return result

    async def _history(self) -> dict[str, _Answer]:
        """Answers of the last 7 days by callerId, read from the journal once."""
        if self._answered is None:
            since = self._clock.wall_ns() - CALLER_ID_DAYS * 86_400 * NS_PER_S
            table = await asyncio.to_thread(self._store.journal, start_ns=since,
                                            kinds=["result"])
            answered: dict[str, _Answer] = {}
            for item in journal_items(table.sort_by("seq")):
                result = CommandResult.from_body(item.body)
                if result.repeat:
                    continue
                if result.caller_id is not None and result.rpc_name is not None:
                    answered[json.dumps(result.caller_id)] = _Answer(result.result, result.error)
            self._answered = answered
        return self._answered

    # ----------------------------------------------------------------- built-ins

    async def _get_parameters(self, parameters: Mapping[str, JsonValue]) -> JsonValue:
        self._control.request_parameters()
        return "OK"

    async def _set_relay(self, parameters: Mapping[str, JsonValue]) -> JsonValue:
        state = parameters.get("state")
        # `1.0 in (0, 1)` holds: the type first, or a float passed into the relay's driver.
        if isinstance(state, bool) or not isinstance(state, int) or state not in (0, 1):
            raise CommandError(f"setRelay: state must be 0 or 1, got {json.dumps(state)}")
        await self._control.set_relay(state)
        return "OK"

    async def _connect(self, parameters: Mapping[str, JsonValue]) -> JsonValue:
        server = parameters.get("server", 1)
        if isinstance(server, bool) or not isinstance(server, int) or server not in (1, 2):
            raise CommandError(f"connect: server must be 1 or 2, got {json.dumps(server)}")
        if not self._control.request_session(server, Trigger.COMMAND):
            raise CommandError(f"connect: server {server} is not configured")
        return "OK"

    async def _log(self, parameters: Mapping[str, JsonValue]) -> JsonValue:
        interface = parameters.get("interface")
        duration = parameters.get("duration", 10)
        if not isinstance(interface, str):
            raise CommandError(f"log: interface must be a string, got {json.dumps(interface)}")
        if isinstance(duration, bool) or not isinstance(duration, int):
            raise CommandError(f"log: duration must be 0..1440 minutes, got "
                               f"{json.dumps(duration)}")
        self._control.start_trace(interface, duration)
        return "OK"

    async def _write_variable(self, parameters: Mapping[str, JsonValue]) -> JsonValue:
        device, variable = parameters.get("device"), parameters.get("variable")
        value, raw = parameters.get("value"), parameters.get("raw", False)
        if isinstance(device, int) and not isinstance(device, bool):
            device = str(device)
        if not isinstance(device, str) or not device:
            raise CommandError("writeVariable: device must be a name, an index or '*'")
        if isinstance(variable, bool) or not isinstance(variable, (str, int)) or variable == "":
            raise CommandError("writeVariable: variable must be an Index, a Name or a Tag")
        if not isinstance(raw, bool):
            raise CommandError(f"writeVariable: raw must be true or false, got {json.dumps(raw)}")
        number: str | Decimal
        if isinstance(value, str):
            number = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
            if not number.is_finite():
                raise CommandError(f"writeVariable: value must be a number, got {value}")
        else:
            raise CommandError(f"writeVariable: value must be a number (text for a String), "
                               f"got {json.dumps(value)}")
        answer = await self._control.write_variable(device, variable, number, raw)
        return json.loads(json.dumps(answer))  # type: ignore[no-any-return]

    async def _reboot(self, parameters: Mapping[str, JsonValue]) -> JsonValue:
        self._after_batch.append(self._control.restart)
        return "OK"

    async def _status(self, parameters: Mapping[str, JsonValue]) -> JsonValue:
        return json.loads(json.dumps(await self._control.status()))  # type: ignore[no-any-return]

    async def _discover(self, parameters: Mapping[str, JsonValue]) -> JsonValue:
        protocol = _text(parameters, "protocol", "discoverDevices") or "sunspec"
        if protocol.lower() not in ("sunspec", "tic"):
            raise CommandError(f"discoverDevices: protocol must be sunspec or tic, got "
                               f"'{protocol}'")
        interface = _text(parameters, "interface", "discoverDevices") or None
        ip = _text(parameters, "ip", "discoverDevices") or None
        numbers = {name: _integer(parameters, name, default, "discoverDevices")
                   for name, default in (("port", 502), ("firstAddress", 1),
                                         ("lastAddress", 240), ("maxDevices", 240),
                                         ("timeout", 1000))}
        if not 0 < numbers["port"] < 65536:
            raise CommandError(f"discoverDevices: port {numbers['port']} is outside 1..65535")
        if numbers["maxDevices"] < 1:
            raise CommandError(f"discoverDevices: maxDevices {numbers['maxDevices']} is below 1")
        if numbers["timeout"] < 1:
            raise CommandError(f"discoverDevices: timeout {numbers['timeout']} is below 1 ms")
        params = DiscoveryParams(protocol=protocol.lower(), interface=interface, ip=ip,
                                 port=numbers["port"], first_address=numbers["firstAddress"],
                                 last_address=numbers["lastAddress"],
                                 max_devices=numbers["maxDevices"], timeout_ms=numbers["timeout"])
        return await self._control.discover(params)

    async def _ftp(self, parameters: Mapping[str, JsonValue]) -> JsonValue:
        server = _integer(parameters, "server", 1, "ftp")
        if server not in (1, 2):
            raise CommandError(f"ftp: server must be 1 or 2, got {server}")
        kind = _text(parameters, "type", "ftp").lower()
        if kind not in ("", "ftp", "ftps", "sftp"):
            raise CommandError(f"ftp: type must be ftp, ftps or sftp, got '{kind}'")
        values: dict[str, str | None] = {}
        prefix = "" if server == 1 else "2"
        for name, key in _FTP_KEYS:
            key = key.format(n=prefix)
            text = kind if name == "type" else _port_text(parameters, key) if name == "port" \
                else _text(parameters, name, "ftp", number=True)
            values[key] = text or None
        await self._control.change_config("ftp", values)
        return "OK"

    async def _apn(self, parameters: Mapping[str, JsonValue]) -> JsonValue:
        values: dict[str, str | None] = {key: _text(parameters, name, "apn", number=True) or None
                                         for name, key in _APN_KEYS}
        await self._control.change_config("apn", values)
        return "OK"

    async def _factory(self, parameters: Mapping[str, JsonValue]) -> JsonValue:
        if parameters.get("confirm") is not True:
            raise CommandError("factory: confirm must be true")
        self._after_batch.append(self._control.factory_reset)
        return "OK"

    async def _update_firmware(self, parameters: Mapping[str, JsonValue]) -> JsonValue:
        url = _text(parameters, "url", "updateFirmware")
        uploaded = _text(parameters, "package", "updateFirmware")
        checksum = _text(parameters, "checksum", "updateFirmware")
        if uploaded and url:
            raise CommandError("updateFirmware: give url or package, not both")
        if uploaded:
            package = await self._control.staged_upload(uploaded, checksum)
            self._after_batch.append(lambda: self._control.install_firmware(package))
            return "OK"
        if not url:
            raise CommandError("updateFirmware: url is missing")
        package = await self._control.stage_firmware(
            url, _text(parameters, "login", "updateFirmware"),
            _text(parameters, "password", "updateFirmware"), checksum,
            _text(parameters, "interface", "updateFirmware"))
        self._after_batch.append(lambda: self._control.install_firmware(package))
        return "OK"


def _text(parameters: Mapping[str, JsonValue], name: str, command: str, *,
          number: bool = False) -> str:
    """A text parameter (absent or null: empty); `number` also takes an integer as its digits."""
    value = parameters.get(name)
    if value is None:
        return ""
    if number and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise CommandError(f"{command}: {name} must be a string, got {json.dumps(value)}")
    return value.strip()


def _port_text(parameters: Mapping[str, JsonValue], key: str) -> str:
    """`ftp`'s port as config.ini's text (checked there, by its key); a value no text of an
    integer can be (`22.5` from an SMS) is refused here in the same words."""
    value = parameters.get("port")
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    raise CommandError(f"ftp: {key}: '{json.dumps(value)}' is not {PORT_RANGE}")


def _integer(parameters: Mapping[str, JsonValue], name: str, default: int, command: str) -> int:
    """An integer parameter (absent or null: `default`); an integer's text is taken (SMS), in
    ASCII digits only (`int()` alone takes full-width digits and `1_000`)."""
    value = parameters.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, str) and (number := read_integer(value.strip())) is not None:
        return number
    if isinstance(value, bool) or not isinstance(value, int):
        raise CommandError(f"{command}: {name} must be an integer, got "
                           f"{json.dumps(value, ensure_ascii=False)}")
    return value


def _caller_key(command: CommandReceived) -> str | None:
    # `"7"` and `7` are different callerIds; JSON text keeps them apart.
    return None if command.caller_id is None else json.dumps(command.caller_id)


def error_text(text: str) -> str:
    """An error answer as docs/formats.md §12.2 has it: one line (each CR, LF or CRLF one
    space: a script's `error("a\\nb")` is two lines) of at most 500 characters."""
    return _LINE_BREAKS.sub(" ", text)[:ERROR_MAX_CHARS]


def _short(rpc_name: str) -> str:
    return rpc_name.partition(".")[2] or rpc_name
