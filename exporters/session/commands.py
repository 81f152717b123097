"""Commands from a server: the command file of docs/formats.md §12.1 and the command-topic
messages of §14.4, read strictly and never raising (docs/behaviour.md §4.5), and where they go.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Sequence
from typing import Final, Protocol

from exporters.outbox import JournalLog
from store.events import Channel, CommandReceived, CommandResult

CMD_MAX_BYTES: Final = 1 << 20          # docs/formats.md §12.1
#: Commands in one file or message (**Decision**, docs/spec-notes.md): 1 MiB of `{}` would
#: otherwise be 300,000 results to journal and send back.
CMD_MAX_ENTRIES: Final = 1000
#: How deep parameters may nest (**Decision**): deeper JSON would not survive being journaled
#: again (the encoder recurses) and no command needs it.
CMD_MAX_DEPTH: Final = 32
_MAX_INT_DIGITS: Final = 30


#: One entry of a command file or message: the command, or the error result its entry gave.
CommandEntry = CommandReceived | CommandResult


class JournalSignal:
    """Tells who publishes events (command results, alarms) that one was journaled, so that it
    goes out on its MQTT topic at once rather than at the next look at the journal.

    Take `next()` before reading the journal, then wait on it: an event journaled in between
    sets it, none is missed.
    """

    def __init__(self) -> None:
        self._next = asyncio.Event()

    def next(self) -> asyncio.Event:
        """Set once the next event is journaled."""
        return self._next

    def journaled(self) -> None:
        done, self._next = self._next, asyncio.Event()
        done.set()


class CommandHandler(Protocol):
    """Where received commands go; the gateway service implements it (docs/behaviour.md §7).

    `submit` queues and returns: results are journaled by the handler as `result` events and go
    up in the next ACK file (or on the MQTT result topic). The commands are journaled already.
    An entry that is a `CommandResult` is the answer to an entry that could not be read: the
    handler journals it in its turn, so that the answers of a file keep its order
    (docs/formats.md §12.1 "in file order", §12.2). `answers` is fired after each result is
    journaled.
    """

    @property
    def answers(self) -> JournalSignal: ...

    async def submit(self, commands: Sequence[CommandEntry]) -> None: ...


class _Unreadable(ValueError):
    """Why a command document cannot be used, worded after `<file>: invalid JSON: `."""


def _reject_constant(name: str) -> object:
    raise _Unreadable(f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _Unreadable(f"a number of more than {_MAX_INT_DIGITS} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Unreadable(f"{text[:20]} is out of range")
    return value


def _depth_exceeds(doc: object, limit: int) -> bool:
    """Whether containers nest deeper than `limit` (iterative: no recursion to exhaust)."""
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        children = (node.values() if isinstance(node, dict) else
                    node if isinstance(node, list) else None)
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


#: A `\uD800`..`\uDFFF` escape: the only way a surrogate gets into text decoded from UTF-8.
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")


def _lone_surrogate(doc: object) -> bool:
    """Whether a string (or key) holds a surrogate no pair made a character: no UTF-8 text can
    hold it, so neither can the journal (iterative, as `_depth_exceeds`)."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


class _RepeatedKey(dict[str, object]):
    """An object of the document holding a key twice: `json` keeps the last silently, so
    `{"rpcName": "sunpm.connect", "rpcName": "sunpm.factory"}` would run what a reader of the
    file may not see. Marked here, refused by the entry it is in."""

    repeated: str = ""


def _object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    doc = dict(pairs)
    if len(doc) == len(pairs):
        return doc
    marked = _RepeatedKey(doc)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.repeated = key
            break
        seen.add(key)
    return marked


def repeated_key(doc: object) -> str | None:
    """The first key found twice in one object of `doc`, as `load_command_json` marked it
    (iterative, as `_depth_exceeds`)."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, _RepeatedKey):
            return node.repeated
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def load_command_json(data: bytes, where: str) -> tuple[object, str | None]:
    """(document, None) or (None, the error text) for command JSON from any channel:
    strict JSON (no NaN or Infinity), numbers and nesting bounded, and nothing but an error text
    ever comes out of it, whatever the bytes (docs/behaviour.md §4.5)."""
    try:
        doc = json.loads(data.decode("utf-8-sig"), parse_constant=_reject_constant,
                         parse_int=_bounded_int, parse_float=_finite_float,
                         object_pairs_hook=_object)
    except UnicodeDecodeError as err:
        return None, f"{where}: invalid JSON at line 1 column {err.start + 1}: not valid UTF-8"
    except json.JSONDecodeError as err:
        return None, f"{where}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
    except _Unreadable as err:
        return None, f"{where}: invalid JSON: {err}"
    except RecursionError:
        return None, f"{where}: invalid JSON: nested deeper than {CMD_MAX_DEPTH} levels"
    except ValueError as err:  # what else the decoder may refuse; one line, bounded
        return None, f"{where}: invalid JSON: {' '.join(str(err).split())[:200]}"
    if _depth_exceeds(doc, CMD_MAX_DEPTH):
        return None, f"{where}: invalid JSON: nested deeper than {CMD_MAX_DEPTH} levels"
    # Journaled as it came, such a string failed the store's whole group commit, and the
    # command file stayed on the server to fail every session the same way.
    if _SURROGATE_ESCAPE.search(data) is not None and _lone_surrogate(doc):
        return None, f"{where}: invalid JSON: a \\u escape is a lone surrogate, not a character"
    return doc, None


def parse_command_file(data: bytes, file_name: str) -> list[CommandEntry]:
    """The entries of `/CMD/<uid>_cmd.json` in file order; unreadable ones as error results worded
    as docs/formats.md §12.1. Never raises, whatever the bytes."""
    def fail(text: str) -> list[CommandEntry]:
        return [CommandResult(channel=Channel.FILE, caller_id=None, error=text)]

    if len(data) > CMD_MAX_BYTES:
        return fail(f"{file_name}: larger than 1 MiB; not executed")
    doc, problem = load_command_json(data, file_name)
    if problem is not None:
        return fail(problem)
    entries = doc if isinstance(doc, list) else [doc]
    if len(entries) > CMD_MAX_ENTRIES:
        return fail(f"{file_name}: more than {CMD_MAX_ENTRIES} commands; not executed")
    return [_command_entry(entry, f"{file_name}: entry {k}: ", Channel.FILE)
            for k, entry in enumerate(entries, start=1)]


def parse_command_message(payload: bytes, topic: str) -> CommandEntry:
    """A command-topic message (docs/formats.md §14.4): one object, errors without `entry <k>: `.
    Never raises, whatever the bytes."""
    def fail(text: str) -> CommandEntry:
        return CommandResult(channel=Channel.MQTT, caller_id=None, error=text)

    if len(payload) > CMD_MAX_BYTES:
        return fail(f"{topic}: larger than 1 MiB; not executed")
    doc, problem = load_command_json(payload, topic)
    if problem is not None:
        return fail(problem)
    if isinstance(doc, list):
        return fail(f"{topic}: one command object per message, got an array")
    return _command_entry(doc, f"{topic}: ", Channel.MQTT)


def _command_entry(entry: object, prefix: str, channel: Channel) -> CommandEntry:
    if not isinstance(entry, dict):
        return CommandResult(channel=channel, caller_id=None, error=f"{prefix}not a command object")
    repeated = repeated_key(entry)
    caller = entry.get("callerId")
    if caller is not None and (isinstance(caller, bool) or not isinstance(caller, (str, int))):
        return CommandResult(channel=channel, caller_id=None,
                             error=f"{prefix}callerId must be a string or an integer")
    if repeated is not None:
        # Neither value is taken for the one meant: the command does not run. A repeated
        # callerId is not echoed (which one?).
        shown = repeated if len(repeated) <= 40 else repeated[:37] + "..."
        return CommandResult(channel=channel,
                             caller_id=None if repeated == "callerId" else caller,
                             error=f"{prefix}key '{shown}' repeated in an object")
    rpc = entry.get("rpcName")
    if not isinstance(rpc, str):
        return CommandResult(channel=channel, caller_id=caller,
                             error=f"{prefix}rpcName is missing")
    params = entry.get("parameters")
    if params is not None and not isinstance(params, dict):
        # Not run with `{}`: a wrong parameter type changes nothing (docs/behaviour.md §7.2).
        return CommandResult(channel=channel, caller_id=caller,
                             error=f"{prefix}parameters must be an object")
    return CommandReceived(channel=channel, rpc_name=rpc, caller_id=caller,
                           parameters=params or {})


class CollectingHandler:
    """A CommandHandler that keeps what it is given and answers each with "OK"."""

    def __init__(self, log: JournalLog) -> None:
        self._log = log
        self.received: list[CommandReceived] = []
        self.answers = JournalSignal()

    async def submit(self, commands: Sequence[CommandEntry]) -> None:
        for command in commands:
            if isinstance(command, CommandResult):
                await self._log.append_journal("result", command.to_fields())
                self.answers.journaled()
                continue
            self.received.append(command)
            result = CommandResult(channel=command.channel, caller_id=command.caller_id,
                                   rpc_name=command.rpc_name, result="OK")
            await self._log.append_journal("result", result.to_fields())
            self.answers.journaled()
