"""SMS commands (docs/formats.md §13) through the `SMS_InboxDir` folder.

Each incoming `<SMS_InboxDir>/*.sms` (UTF-8; line 1 the sender, the rest the text) is handled in
name order and deleted; a reply goes to `<SMS_InboxDir>/out/<name>.<k>.sms` (line 1 the
recipient). Only numbers of `SMS_AllowedNumbers` (compared without spaces) are obeyed. Replies:
none on success (the manual) except `status` (six parts, §13.3) and `discoverdevices`; a failure
replies its error cut to 160 characters. `SmsCommands` is what both transports share: the
inbox folder here, the AT-command modem on `MODEM_Port` in `modem.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from config.decimal_text import read_decimal
from fsio import write_file_durably
from pipeline.clock import Clock
from pipeline.service.commands import CommandExecutor
from store.events import Channel, CommandReceived, JsonValue

log = logging.getLogger("sunpm.sms")

CHECK_EVERY_S: Final = 2.0
REPLY_MAX: Final = 160

#: SMS command -> (built-in, parameter names in argument order).
_COMMANDS: Final[Mapping[str, tuple[str, tuple[str, ...]]]] = {
    "connect": ("connect", ("server",)),
    "status": ("status", ()),
    "factory": ("factory", ()),
    "reboot": ("reboot", ()),
    "getparameters": ("getParameters", ()),
    "updatefirmware": ("updateFirmware", ("url", "login", "password", "checksum", "interface")),
    "apn": ("apn", ("apn", "user", "password", "pin")),
    "ftp": ("ftp", ("server", "type", "host", "port", "user", "password", "rootDir")),
    "log": ("log", ("interface", "duration")),
    "setrelay": ("setRelay", ("state",)),
    "discoverdevices": ("discoverDevices", ("interface", "ip", "port", "firstAddress",
                                            "lastAddress", "maxDevices", "timeout")),
    "writevariable": ("writeVariable", ("device", "variable", "value", "raw")),
}
_NUMBERS: Final = frozenset({"server", "port", "duration", "state", "firstAddress",
                             "lastAddress", "maxDevices", "timeout"})


#: Digits before the point of a number an SMS argument may be (as a command file's, formats.md
#: §12.1: 30 digits at most).
_NUMBER_DIGITS: Final = 30


class SmsError(ValueError):
    pass


def split_arguments(text: str) -> list[str]:
    """`a:b\\:c:d\\\\` -> ["a", "b:c", "d\\"]: `:` separates, `\\:` and `\\\\` escape."""
    parts, current, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in ":\\":
            current.append(text[i + 1])
            i += 2
            continue
        if c == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return parts


def parse_sms(text: str) -> tuple[str, dict[str, JsonValue]]:
    """(rpcName, parameters) of an SMS text; `SmsError` for an unknown command or too many
    arguments."""
    body = text.strip()
    name, sep, rest = body.partition("=")
    key = name.strip().lower()
    if key not in _COMMANDS:
        raise SmsError(f"unknown command '{name.strip()}'")
    builtin, names = _COMMANDS[key]
    args: list[str] = []
    if sep:
        args = _firmware_arguments(rest) if key == "updatefirmware" else split_arguments(rest)
    while args and args[-1] == "":
        args.pop()
    if len(args) > len(names):
        raise SmsError(f"{builtin}: too many arguments ({len(args)}, at most {len(names)})")
    parameters: dict[str, JsonValue] = {}
    for field, value in zip(names, args, strict=False):
        if value == "":
            continue
        parameters[field] = _value(field, value, key)
    if key == "factory":
        parameters["confirm"] = True
    if key == "discoverdevices":
        parameters["protocol"] = "sunspec"
    return f"sunpm.{builtin}", parameters


def _firmware_arguments(rest: str) -> list[str]:
    """`<url>[:<login>[:<password>[:<checksum>[:<interface>]]]]`: the URL keeps its own `:`
    (scheme, credentials, port) up to its path, and ends at the first `:` after it; the
    fields after it split as any arguments. Without `://` and a path, the last four `:`
    separate the fields."""
    scheme = rest.find("://")
    path = rest.find("/", scheme + 3) if scheme > 0 else -1
    if path < 0:
        head, *tail = rest.rsplit(":", 4)
        return [head, *tail]
    end = rest.find(":", path)
    if end < 0:
        return [rest]
    return [rest[:end], *split_arguments(rest[end + 1:])]


def _value(field: str, value: str, command: str) -> JsonValue:
    if field in _NUMBERS or (command == "writevariable" and field == "value"):
        number = read_decimal(value.strip(" \t"))
        if number is None or number.adjusted() > _NUMBER_DIGITS:
            # Kept as text, for the command to refuse by name: a number is written as in files
            # (docs/formats.md §1.1: `Decimal()` alone takes `1_000`, full-width digits, `nan`), NaN or
            # Infinity could not be journaled, and `int()` of `1e999999999` would build a
            # billion-digit integer.
            return value
        return int(number) if number == number.to_integral_value() else float(number)
    if field == "raw":
        return value == "1"
    if field in ("interface", "type"):
        return value.lower()
    return value


def status_parts(status: Mapping[str, object]) -> list[str]:
    """The six messages of docs/formats.md §13.3 from the status object."""
    servers = {int(str(s["srv"])): s for s in status.get("servers", [])  # type: ignore[attr-defined]
               if isinstance(s, dict)}
    devices = [d for d in status.get("devices", []) if isinstance(d, dict)]  # type: ignore[attr-defined]
    store_mb = sum(int(str(d.get("storeBytes", 0))) for d in devices)
    quota_mb = sum(int(str(d.get("quotaBytes", 0))) for d in devices)
    clock = status.get("clock") if isinstance(status.get("clock"), dict) else {}
    assert isinstance(clock, dict)
    modem = status.get("modem") if isinstance(status.get("modem"), dict) else {}
    assert isinstance(modem, dict)
    scripts = [s for s in status.get("scripts", []) if isinstance(s, dict)]  # type: ignore[attr-defined]
    tic = next((d for d in devices if d.get("index") == "TIC1"), None)
    rssi = modem.get("rssiDbm")

    def server(slot: int) -> list[str]:
        s = servers.get(slot)
        if s is None:
            return [f"srv={slot}", "status=disabled", "type=none", "mode=none", "addr=",
                    "port=", "last=never"]
        kind = str(s["type"])
        port = "" if kind == "dir" else str(s["port"])
        return [f"srv={slot}", f"status={s['status']}", f"type={kind}",
                f"mode={s.get('mode', 'none')}",
                f"addr={s['addr']}", f"port={port}", f"last={str(s['last'])[:52] or 'never'}"]

    parts = [
        [f"uid={status.get('uid', '')}", f"ver={status.get('version', '')}",
         f"time={status.get('date', '')}", f"tz={status.get('timeZone', '')}",
         f"up={status.get('uptimeS', '')}"],
        [f"clock={'synced' if clock.get('synced', True) else 'unsynchronised'}",
         f"ntp={clock.get('ntp', '')}", f"modem={modem.get('state', 'none')}",
         f"rssi={'' if rssi is None else rssi}", f"ip={status.get('ip', '')}"],
        [f"devices={len(devices)}", f"ok={sum(d.get('state') == 'ok' for d in devices)}",
         f"fail={sum(d.get('state') != 'ok' for d in devices)}",
         f"tic={'none' if tic is None else 'ok' if tic.get('state') == 'ok' else 'absent'}",
         f"scripts={sum(s.get('enabled') is True for s in scripts)}/{len(scripts)}"],
        [f"store={-(-store_mb // 2**20)}/{-(-quota_mb // 2**20)}",
         f"full={sum(d.get('state') == 'full' for d in devices)}",
         f"backlog1={servers[1]['backlog'] if 1 in servers else 0}",
         f"backlog2={servers[2]['backlog'] if 2 in servers else 0}",
         f"alarms={status.get('alarms24h', 0)}"],
        server(1), server(2)]
    return [_fit(f"{k}/6", lines) for k, lines in enumerate(parts, start=1)]


def _fit(title: str, lines: list[str]) -> str:
    """`title` and the `key=value` lines in one message of at most 160 characters: the longest
    value is cut at its end (§13.3), never a key after it (a long `dir` path dropped `port` and
    `last`)."""
    lines = list(lines)
    while len(text := "\n".join([title, *lines])) > REPLY_MAX:
        longest = max(range(len(lines)), key=lambda i: len(lines[i].partition("=")[2]))
        key, _, value = lines[longest].partition("=")
        if not value:
            return _cut(text)
        lines[longest] = f"{key}={value[:max(0, len(value) - (len(text) - REPLY_MAX))]}"
    return text


def _cut(text: str) -> str:
    return text if len(text) <= REPLY_MAX else text[:REPLY_MAX]


class SmsCommands:
    """One received SMS to its replies: the sender checked, the text parsed and executed.

    `allowed` gives `SMS_AllowedNumbers` as the configuration in force has it at each message,
    so that a number struck from the list is refused from the reload on."""

    def __init__(self, allowed: Callable[[], Sequence[str]], commands: CommandExecutor) -> None:
        self._allowed = allowed
        self._commands = commands

    async def replies(self, sender: str, text: str) -> list[str]:
        """The messages to send back to `sender` (none on success, docs/formats.md §13.2)."""
        allowed = {n.replace(" ", "") for n in self._allowed()}
        if not allowed or sender not in allowed:
            log.warning("message from %s ignored: number not allowed", sender)
            return []
        try:
            rpc, parameters = parse_sms(text)
        except SmsError as err:
            return [_cut(str(err))]
        result = await self._commands.call(CommandReceived(
            channel=Channel.SMS, rpc_name=rpc, parameters=parameters, caller_id=None))
        if result.error is not None:
            return [_cut(result.error)]
        if rpc == "sunpm.status" and isinstance(result.result, dict):
            return status_parts(result.result)
        if rpc == "sunpm.discoverDevices":
            return [f"discoverdevices: {result.result} devices found"]
        return []


class SmsInbox:
    """Watches `SMS_InboxDir` and answers in `out/`.

    `settings` gives `(SMS_InboxDir, SMS_AllowedNumbers)` of the configuration in force, read
    at every turn: a reload that sets, moves or clears the folder, or changes the numbers, applies
    without a restart (neither key is one of docs/behaviour.md §10.2's restart keys)."""

    def __init__(self, settings: Callable[[], tuple[str, Sequence[str]]],
                 commands: CommandExecutor, clock: Clock) -> None:
        self._settings = settings
        self._sms = SmsCommands(lambda: settings()[1], commands)
        self._clock = clock
        self.inbox: Path | None = None

    async def run(self) -> None:
        while True:
            folder = self._settings()[0]
            inbox = Path(folder) if folder else None
            if inbox != self.inbox:
                self.inbox = inbox
                if inbox is not None:
                    log.info("SMS inbox watched. folder=%s", inbox)
            if inbox is not None:
                try:
                    await asyncio.to_thread((inbox / "out").mkdir, parents=True, exist_ok=True)
                    waiting = await asyncio.to_thread(_waiting, inbox)
                except OSError as err:
                    log.warning("SMS inbox %s not usable: %s", inbox, err.strerror or err)
                    waiting = []
                for path in waiting:
                    await self.handle(inbox, path)
            await self._clock.sleep(CHECK_EVERY_S)

    async def handle(self, inbox: Path, path: Path) -> None:
        try:
            raw = await asyncio.to_thread(path.read_bytes)
        except OSError as err:
            log.warning("SMS file unreadable: %s: %s", path.name, err)
            return
        sender, _, text = raw.decode("utf-8", errors="replace").partition("\n")
        sender = sender.strip().replace(" ", "")
        try:
            await self._answer(inbox, path.stem, sender, text.strip())
        except Exception as err:  # one bad message must not stop the inbox
            log.error("SMS not handled: %s: %s", path.name, err, exc_info=err)
        finally:
            await asyncio.to_thread(_unlink, path)

    async def _answer(self, inbox: Path, name: str, sender: str, text: str) -> None:
        messages = await self._sms.replies(sender, text)
        for k, message in enumerate(messages, start=1):
            await asyncio.to_thread(write_file_durably, inbox / "out" / f"{name}.{k}.sms",
                                    f"{sender}\n{message}\n".encode())


def _waiting(inbox: Path) -> list[Path]:
    return sorted(inbox.glob("*.sms"))


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
