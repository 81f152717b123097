"""SMS commands through an AT-command modem on `MODEM_Port` (docs/formats.md §13.4, text mode).

The modem is opened 115200 8N1; after `ATE0` (no echo), `AT+CMEE=1`, the PIN when the SIM asks for
one (`AT+CPIN?` -> `+CPIN: SIM PIN` -> `AT+CPIN="<MODEM_Pin>"`) and `AT+CMGF=1` (text mode), it
lists the unread messages every 2 s (`AT+CMGL="REC UNREAD"`), hands each to the same handler as
the inbox folder (`SmsCommands`: allowed numbers, parsing, the executor), sends the replies
(`AT+CMGS="<number>"`, the text after the `>` prompt, Ctrl-Z) and deletes the message
(`AT+CMGD=<index>`). A modem that does not answer, answers `ERROR`, or whose port cannot be opened
is a WARNING (at most hourly) and is tried again after 30 s; the service goes on.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Final

import serial_asyncio

from pipeline.clock import Clock
from pipeline.service.sms import SmsCommands

log = logging.getLogger("sunpm.sms")

BAUD: Final = 115200
POLL_S: Final = 2.0
RETRY_S: Final = 30.0
REPLY_S: Final = 10.0
#: A modem has 60 s to accept a message (the network may be slow).
SEND_S: Final = 60.0
WARNING_EVERY_S: Final = 3600.0
_LISTED: Final = re.compile(r'^\+CMGL:\s*(\d+)\s*,\s*"[^"]*"\s*,\s*"([^"]*)"')
_FINAL_ERROR: Final = re.compile(r"^(ERROR|\+CMS ERROR:.*|\+CME ERROR:.*)$")

Opener = Callable[..., Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class ModemError(Exception):
    """The modem refused a command or did not answer in time."""


class AtModem:
    """`run()` serves the modem until cancelled."""

    def __init__(self, path: str, pin: str, sms: SmsCommands, clock: Clock, *,
                 opener: Opener = serial_asyncio.open_serial_connection) -> None:
        self.path = path
        self.pin = pin
        self._sms = sms
        self._clock = clock
        self._opener = opener
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_warning = -WARNING_EVERY_S
        self.state = "none"
        self.handled = 0

    async def run(self) -> None:
        while True:
            try:
                self._reader, self._writer = await self._opener(url=self.path, baudrate=BAUD)
                await self._serve()
            except (OSError, ModemError, TimeoutError) as err:
                self.state = "none"
                now = time.monotonic()
                if now - self._last_warning >= WARNING_EVERY_S:
                    self._last_warning = now
                    log.warning("modem %s not usable: %s; trying again every %.0f s",
                                self.path, err or "no answer", RETRY_S)
            finally:
                if self._writer is not None:
                    self._writer.close()
                self._reader = self._writer = None
            await self._clock.sleep(RETRY_S)

    async def _serve(self) -> None:
        await self.command("ATE0")
        await self.command("AT+CMEE=1")
        status = await self.command("AT+CPIN?")
        if any("SIM PIN" in line for line in status):
            if not self.pin:
                self.state = "pin-error"
                raise ModemError("the SIM asks for a PIN and MODEM_Pin is empty")
            await self.command(f'AT+CPIN="{self.pin}"')
        await self.command("AT+CMGF=1")
        self.state = "ready"
        log.info("modem %s ready", self.path)
        while True:
            for index, sender, text in await self.unread():
                try:
                    for reply in await self._sms.replies(sender.replace(" ", ""), text.strip()):
                        await self.send(sender, reply)
                finally:
                    await self.command(f"AT+CMGD={index}")
                    self.handled += 1
            await self._clock.sleep(POLL_S)

    async def unread(self) -> list[tuple[int, str, str]]:
        """(index, sender, text) of each unread message."""
        lines = await self.command('AT+CMGL="REC UNREAD"')
        messages: list[tuple[int, str, str]] = []
        current: tuple[int, str] | None = None
        body: list[str] = []
        for line in lines:
            listed = _LISTED.match(line)
            if listed is not None:
                if current is not None:
                    messages.append((*current, "\n".join(body)))
                current, body = (int(listed.group(1)), listed.group(2)), []
            elif current is not None:
                body.append(line)
        if current is not None:
            messages.append((*current, "\n".join(body)))
        return messages

    async def send(self, number: str, text: str) -> None:
        writer, reader = self._streams()
        writer.write(f'AT+CMGS="{number}"\r'.encode())
        await writer.drain()
        async with asyncio.timeout(REPLY_S):
            seen = b""
            while b">" not in seen:
                chunk = await reader.read(1)
                if not chunk:
                    raise ModemError("port closed")
                seen += chunk
                if seen.endswith(b"ERROR\r\n"):
                    raise ModemError(f"AT+CMGS refused: {seen.decode(errors='replace').strip()}")
        # Ctrl-Z ends the text; text mode takes the GSM alphabet, so other characters go as '?'.
        writer.write(text.encode("ascii", errors="replace") + b"\x1a")
        await writer.drain()
        await self._final(f'AT+CMGS="{number}"', SEND_S)

    async def command(self, text: str) -> list[str]:
        """The lines the modem answered before `OK`; `ModemError` on an error answer."""
        writer, _ = self._streams()
        writer.write(text.encode() + b"\r")
        await writer.drain()
        return await self._final(text, REPLY_S)

    async def _final(self, sent: str, limit_s: float) -> list[str]:
        _, reader = self._streams()
        lines: list[str] = []
        async with asyncio.timeout(limit_s):
            while True:
                raw = await reader.readline()
                if not raw:
                    raise ModemError("port closed")
                line = raw.decode(errors="replace").strip()
                if not line or line == sent:       # blank lines, an echo before ATE0 took
                    continue
                if line == "OK":
                    return lines
                if _FINAL_ERROR.match(line):
                    raise ModemError(f"{sent.split('=')[0]}: {line}")
                lines.append(line)

    def _streams(self) -> tuple[asyncio.StreamWriter, asyncio.StreamReader]:
        if self._writer is None or self._reader is None:
            raise ModemError("not open")
        return self._writer, self._reader
