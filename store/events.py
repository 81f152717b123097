"""What every package trades in: journal event kinds, their bodies, and the store's watermark.

The store keeps each event's `body` as an opaque string (compact JSON); this module fixes the
fields of every kind that more than one package writes or reads. Writers build bodies with
`to_body()` (or `to_fields()`, the same fields as a mapping for `Log.append_journal`), readers
parse them with `from_body()`. A body is compact JSON (UTF-8, unescaped, keys in the order below,
optional keys left out when empty), so the same event always gives the same string. The `window`
and `delivered` bodies and the one delivery state replayed from them are in `store.delivery`.

The time of an event is the journal row's `ts` (UTC ns), never a body field: an alarm is journaled
with the time it is dated at (a `Power OFF` after an unclean stop carries the last heartbeat's
time), a `param` event with the time its last answer arrived, a `log` event with the time the line
was logged. Window membership and every view use that one time.

Fields, per kind (JSON key: meaning):

`alarm`, a gateway alarm (row `device` null, `def` null):
    source  "GATEWAY"
    alarm   the name as docs/formats.md §10 spells it (`Power ON`, `Storage full`)
    subject optional: device or script name of the extension alarms (`journal` for the journal)
    text    optional: `Script alarm` text, at most 64 characters
`alarm`, a device alarm (row `device` = daq index, `def` = the definition snapshot in force):
    source  "MODBUS", "IO" or "TIC"
    name    the device's daq `name` when raised
    var     the variable's Index
    value   the raw value's §9.3 text (a number's exact decimal, or the text of a text value)
    text    true when `value` is a text value (String, IP, IPV6, MAC, TIC data); omitted if false
`param` (row `device`, `def` as above): one parameter read (actions 1 and 9), its values as §9.3
    texts:
    values  {"<Index>": "<value text>" or null (missing)}, every parameter of the definition
    quality {"<Index>": <quality code>} for the missing ones only (docs/behaviour.md §2.2)
`log`: one gateway log line:
    level    DEBUG, INFO, WARNING or ERROR
    category docs/formats.md §11 (`session`, `config`, `script:<name>` ...); the category
             `sunspec` holds SunSpec detection log lines, which go to the `_SUNSPEC_` file only
    message  the message, CR/LF kept (the LOG view replaces them)
`command`: a command received:
    channel  "file", "mqtt", "sms" or "local"
    rpcName, parameters (object), callerId (string, integer or null)
`result`: a command's answer, journaled when it is known (ACK files and MQTT results follow
journal order = execution order):
    channel  as the command's
    rpcName  as received (null when the command could not be read)
    callerId string, integer or null
    result   any JSON (success), or
    error    one line, at most 500 characters (failure); exactly one of the two is present
    repeat   true for a stored answer sent again (a repeated callerId); omitted if false
`sync`: a configuration file exchanged with a file server (`SyncedFile`):
    server, file (tree path, `CONFIG/<uid>_daq.csv`), sha256
`config`: the configuration in force from this event on (`ConfigInForce`):
    snapshot the store's configuration hash (`Log.put_config`)
    origin   "local" or "server <slot>"
    files    the tree paths the change wrote (all the configuration's at a local start)
`scriptdata`: a script's whole `wd.save` data (`ScriptData`):
    script   the script's file name
    data     {"<key>": any JSON}
`s0`: the S0 counters of a Modbus I/O module, saved with each `IO` record (`S0Saved`):
    module   the module's daq index
    counters {"<channel>": [<module register value>, <running total>]}
`relay`: the state last commanded to the I/O relay (`setRelay`, scripts), restored at start
(`RelayCommanded`):
    state    0 or 1
`window`, `delivered`: `store.delivery`
`state`: `store.state.GatewayState.to_body()`, the replayed state, so older segments can go
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, TypeAlias

import pyarrow as pa

from config.errors import SunpmError

JsonValue: TypeAlias = (
    bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
)

CallerId: TypeAlias = str | int | None

#: Every journal kind (docs/architecture.md §1).
KINDS: Final = ("alarm", "heartbeat", "param", "command", "result", "config", "sync", "window",
                "delivered", "scriptdata", "s0", "relay", "log", "storage", "state")


@dataclass(frozen=True, slots=True, kw_only=True)
class Watermark:
    """How far the store had committed: per device the last record `seq`, and the journal's.

    Sequence numbers start at 1, so 0 (an empty journal) covers nothing; a device the
    watermark does not name had nothing committed. A `window` event keeps the watermark it was
    built at (`to_body`), which fixes its membership.
    """

    devices: Mapping[str, int] = field(default_factory=dict)
    journal: int = 0

    def record_limit(self, device: str) -> int | None:
        """The last record `seq` covered, None when the device had nothing committed."""
        return self.devices.get(device)

    def covers_record(self, device: str, seq: int) -> bool:
        limit = self.devices.get(device)
        return limit is not None and seq <= limit

    def covers_event(self, seq: int) -> bool:
        return seq <= self.journal

    def to_body(self) -> dict[str, object]:
        return {"devices": dict(sorted(self.devices.items())), "journal": self.journal}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Watermark:
        devices = {str(k): int(v) for k, v in dict(body.get("devices") or {}).items()}
        return cls(devices=devices, journal=int(body.get("journal", 0)))


class EventBodyError(SunpmError, ValueError):
    """A journal body that does not hold its kind's fields (a corrupted or foreign event)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"journal {kind} event: {detail}")


def dump_json(value: JsonValue | Mapping[str, JsonValue]) -> str:
    """Compact JSON, UTF-8 unescaped: the form of bodies, ACK files and MQTT payloads."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _load(kind: str, body: str) -> dict[str, JsonValue]:
    try:
        data = json.loads(body)
    except json.JSONDecodeError as err:
        raise EventBodyError(kind, f"body is not JSON ({err})") from err
    if not isinstance(data, dict):
        raise EventBodyError(kind, "body is not a JSON object")
    return data


def _str(kind: str, data: Mapping[str, JsonValue], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise EventBodyError(kind, f"'{key}' must be a string")
    return value


def _opt_str(kind: str, data: Mapping[str, JsonValue], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise EventBodyError(kind, f"'{key}' must be a string")
    return value


def _int(kind: str, data: Mapping[str, JsonValue], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise EventBodyError(kind, f"'{key}' must be an integer")
    return value


def _opt_server(kind: str, data: Mapping[str, JsonValue]) -> int | None:
    return None if data.get("server") is None else _int(kind, data, "server")


def _caller_id(kind: str, data: Mapping[str, JsonValue]) -> CallerId:
    value = data.get("callerId")
    if value is None or isinstance(value, str) or (
            isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise EventBodyError(kind, "'callerId' must be a string, an integer or null")


class Source(StrEnum):
    GATEWAY = "GATEWAY"
    MODBUS = "MODBUS"
    IO = "IO"
    TIC = "TIC"


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayAlarm:
    """A GATEWAY alarm (`Power ON`, `Storage full` ...)."""

    alarm: str
    subject: str | None = None
    text: str | None = None

    def to_fields(self) -> dict[str, JsonValue]:
        data: dict[str, JsonValue] = {"source": Source.GATEWAY.value, "alarm": self.alarm}
        if self.subject is not None:
            data["subject"] = self.subject
        if self.text is not None:
            data["text"] = self.text
        return data

    def to_body(self) -> str:
        return dump_json(self.to_fields())


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceAlarm:
    """A device alarm: a change of an action 8 or 9 variable."""

    source: Source
    name: str
    var: int
    value: str
    is_text: bool = False

    def to_fields(self) -> dict[str, JsonValue]:
        data: dict[str, JsonValue] = {"source": self.source.value, "name": self.name,
                                      "var": self.var, "value": self.value}
        if self.is_text:
            data["text"] = True
        return data

    def to_body(self) -> str:
        return dump_json(self.to_fields())


AlarmBody: TypeAlias = GatewayAlarm | DeviceAlarm


def alarm_from_body(body: str) -> AlarmBody:
    kind = "alarm"
    data = _load(kind, body)
    source = _str(kind, data, "source")
    if source == Source.GATEWAY:
        return GatewayAlarm(alarm=_str(kind, data, "alarm"),
                            subject=_opt_str(kind, data, "subject"),
                            text=_opt_str(kind, data, "text"))
    try:
        device_source = Source(source)
    except ValueError as err:
        raise EventBodyError(kind, f"unknown source {source!r}") from err
    is_text = data.get("text", False)
    if not isinstance(is_text, bool):
        raise EventBodyError(kind, "'text' must be true or false")
    return DeviceAlarm(source=device_source, name=_str(kind, data, "name"),
                       var=_int(kind, data, "var"), value=_str(kind, data, "value"),
                       is_text=is_text)


@dataclass(frozen=True, slots=True, kw_only=True)
class ParamRead:
    """One parameter read of a device: Index -> §9.3 value text, None when missing."""

    values: Mapping[int, str | None]
    quality: Mapping[int, int] = field(default_factory=dict)

    def to_fields(self) -> dict[str, JsonValue]:
        values: dict[str, JsonValue] = {str(k): self.values[k] for k in sorted(self.values)}
        data: dict[str, JsonValue] = {"values": values}
        if self.quality:
            data["quality"] = {str(k): self.quality[k] for k in sorted(self.quality)}
        return data

    def to_body(self) -> str:
        return dump_json(self.to_fields())

    @classmethod
    def from_body(cls, body: str) -> ParamRead:
        kind = "param"
        data = _load(kind, body)
        raw_values = data.get("values")
        raw_quality = data.get("quality", {})
        if not isinstance(raw_values, dict) or not isinstance(raw_quality, dict):
            raise EventBodyError(kind, "'values' and 'quality' must be objects")
        values: dict[int, str | None] = {}
        for key, value in raw_values.items():
            if not key.isdigit() or not (value is None or isinstance(value, str)):
                raise EventBodyError(kind, f"bad value for Index {key!r}")
            values[int(key)] = value
        quality: dict[int, int] = {}
        for key, code in raw_quality.items():
            if not key.isdigit() or not isinstance(code, int) or isinstance(code, bool):
                raise EventBodyError(kind, f"bad quality for Index {key!r}")
            quality[int(key)] = code
        return cls(values=values, quality=quality)


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


#: Category of SunSpec detection lines (their own `_SUNSPEC_` file, docs/formats.md §11).
SUNSPEC_CATEGORY: Final = "sunspec"


@dataclass(frozen=True, slots=True, kw_only=True)
class LogLine:
    level: LogLevel
    category: str
    message: str

    def to_fields(self) -> dict[str, JsonValue]:
        return {"level": self.level.value, "category": self.category,
                          "message": self.message}

    def to_body(self) -> str:
        return dump_json(self.to_fields())

    @classmethod
    def from_body(cls, body: str) -> LogLine:
        kind = "log"
        data = _load(kind, body)
        try:
            level = LogLevel(_str(kind, data, "level"))
        except ValueError as err:
            raise EventBodyError(kind, f"unknown level {data.get('level')!r}") from err
        return cls(level=level, category=_str(kind, data, "category"),
                   message=_str(kind, data, "message"))


class Channel(StrEnum):
    FILE = "file"
    MQTT = "mqtt"
    SMS = "sms"
    LOCAL = "local"


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandReceived:
    channel: Channel
    rpc_name: str
    parameters: Mapping[str, JsonValue] = field(default_factory=dict)
    caller_id: CallerId = None
    #: The server whose MQTT command topic it came from: its result goes to that server's result
    #: topic only (docs/behaviour.md §7.2). None on the other channels.
    server: int | None = None

    def to_fields(self) -> dict[str, JsonValue]:
        data: dict[str, JsonValue] = {"channel": self.channel.value, "rpcName": self.rpc_name,
                                      "parameters": dict(self.parameters),
                                      "callerId": self.caller_id}
        if self.server is not None:
            data["server"] = self.server
        return data

    def to_body(self) -> str:
        return dump_json(self.to_fields())

    @classmethod
    def from_body(cls, body: str) -> CommandReceived:
        kind = "command"
        data = _load(kind, body)
        parameters = data.get("parameters", {})
        if not isinstance(parameters, dict):
            raise EventBodyError(kind, "'parameters' must be an object")
        try:
            channel = Channel(_str(kind, data, "channel"))
        except ValueError as err:
            raise EventBodyError(kind, f"unknown channel {data.get('channel')!r}") from err
        return cls(channel=channel, rpc_name=_str(kind, data, "rpcName"),
                   parameters=parameters, caller_id=_caller_id(kind, data),
                   server=_opt_server(kind, data))


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandResult:
    """A command's answer: `error` set for a failure, else `result` (any JSON, null included)."""

    channel: Channel
    caller_id: CallerId
    rpc_name: str | None = None
    result: JsonValue = None
    error: str | None = None
    #: A stored answer sent again for a repeated callerId: not an execution, so it never
    #: extends the 7 days its callerId is remembered.
    repeat: bool = False
    #: The server whose MQTT command topic the command came from (`CommandReceived.server`).
    server: int | None = None

    def entry(self) -> dict[str, JsonValue]:
        """The result entry of ACK files and MQTT results (docs/formats.md §12.2), keys in order."""
        if self.error is not None:
            return {"error": self.error, "callerId": self.caller_id}
        return {"result": self.result, "callerId": self.caller_id}

    def to_fields(self) -> dict[str, JsonValue]:
        data: dict[str, JsonValue] = {"channel": self.channel.value, "rpcName": self.rpc_name,
                                      "callerId": self.caller_id}
        if self.error is not None:
            data["error"] = self.error
        else:
            data["result"] = self.result
        if self.repeat:
            data["repeat"] = True
        if self.server is not None:
            data["server"] = self.server
        return data

    def to_body(self) -> str:
        return dump_json(self.to_fields())

    @classmethod
    def from_body(cls, body: str) -> CommandResult:
        kind = "result"
        data = _load(kind, body)
        try:
            channel = Channel(_str(kind, data, "channel"))
        except ValueError as err:
            raise EventBodyError(kind, f"unknown channel {data.get('channel')!r}") from err
        has_error = "error" in data
        if has_error == ("result" in data):
            raise EventBodyError(kind, "exactly one of 'result' and 'error' must be present")
        return cls(channel=channel, caller_id=_caller_id(kind, data),
                   rpc_name=_opt_str(kind, data, "rpcName"),
                   result=data.get("result"),
                   error=_str(kind, data, "error") if has_error else None,
                   repeat=data.get("repeat") is True, server=_opt_server(kind, data))


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncedFile:
    """A configuration file both sides hold the same bytes of, after a session (`sync`)."""

    server: int
    file: str           # tree path: CONFIG/<uid>_daq.csv, DEF/<name>, SCRIPT/<name>
    sha256: str

    def to_fields(self) -> dict[str, JsonValue]:
        return {"server": self.server, "file": self.file, "sha256": self.sha256}

    @classmethod
    def from_fields(cls, data: Mapping[str, object]) -> SyncedFile:
        kind = "sync"
        server = data.get("server")
        if not isinstance(server, int) or isinstance(server, bool):
            raise EventBodyError(kind, "'server' must be an integer")
        file, sha = data.get("file"), data.get("sha256")
        if not isinstance(file, str) or not isinstance(sha, str):
            raise EventBodyError(kind, "'file' and 'sha256' must be strings")
        return cls(server=server, file=file, sha256=sha)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigInForce:
    """The configuration in force from this event on (`config`): windows ending after it render
    with its snapshot."""

    snapshot: str
    origin: str         # "local" or "server <slot>"
    files: tuple[str, ...] = ()

    def to_fields(self) -> dict[str, JsonValue]:
        return {"snapshot": self.snapshot, "origin": self.origin, "files": list(self.files)}

    @staticmethod
    def snapshot_in(body: str) -> str | None:
        """The snapshot a `config` body names; None for a body that names none (not JSON, or
        foreign), which readers pass over."""
        try:
            data = json.loads(body)
        except json.JSONDecodeError:
            return None
        snapshot = data.get("snapshot") if isinstance(data, dict) else None
        return snapshot if isinstance(snapshot, str) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class ScriptData:
    """A script's whole `wd.save` data (`scriptdata`); the latest one per script is in force."""

    script: str
    data: Mapping[str, JsonValue]

    def to_fields(self) -> dict[str, JsonValue]:
        return {"script": self.script, "data": dict(self.data)}

    @classmethod
    def from_fields(cls, data: Mapping[str, object]) -> ScriptData:
        script, saved = data.get("script"), data.get("data")
        if not isinstance(script, str):
            raise EventBodyError("scriptdata", "'script' must be a string")
        if not isinstance(saved, dict):
            raise EventBodyError("scriptdata", "'data' must be an object")
        return cls(script=script, data=saved)


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayCommanded:
    """The state last commanded to the I/O relay (`relay`); the latest one is in force."""

    state: int

    def to_fields(self) -> dict[str, JsonValue]:
        return {"state": self.state}

    @classmethod
    def from_fields(cls, data: Mapping[str, object]) -> RelayCommanded:
        state = data.get("state")
        if state not in (0, 1) or isinstance(state, bool):
            raise EventBodyError("relay", "'state' must be 0 or 1")
        assert isinstance(state, int)
        return cls(state=state)


#: An S0 channel's saved pair: the module's register value and the running total.
S0Pair: TypeAlias = tuple[int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class S0Saved:
    """The S0 counters of a Modbus I/O module (`s0`), per counter channel."""

    module: str
    counters: Mapping[int, S0Pair]

    def to_fields(self) -> dict[str, JsonValue]:
        return {"module": self.module,
                "counters": {str(ch): [value, total] for ch, (value, total)
                             in self.counters.items()}}

    @classmethod
    def from_fields(cls, data: Mapping[str, object]) -> S0Saved:
        module = data.get("module")
        if not isinstance(module, str):
            raise EventBodyError("s0", "'module' must be a string")
        return cls(module=module, counters=s0_counters(data.get("counters")))


def s0_counters(value: object) -> dict[int, S0Pair]:
    """The counters of an `s0` body (or of a `state` event's copy): channels whose pair is not
    two integers are left out."""
    if not isinstance(value, dict):
        raise EventBodyError("s0", "'counters' must be an object")
    out: dict[int, S0Pair] = {}
    for channel, pair in value.items():
        if isinstance(pair, list) and len(pair) == 2 and \
                all(isinstance(v, int) and not isinstance(v, bool) for v in pair) and \
                str(channel).isdigit():
            out[int(channel)] = (pair[0], pair[1])
    return out


# --------------------------------------------------------------------------- journal rows


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalItem:
    """One journal row as the views read it (store/schema.py JOURNAL_SCHEMA)."""

    ts_ns: int
    seq: int
    kind: str
    device: str | None
    def_id: str | None
    body: str


def journal_items(table: pa.Table | pa.RecordBatch) -> list[JournalItem]:
    """Rows of a journal table or batch (JOURNAL_SCHEMA) as `JournalItem`s, in row order."""
    ts = table.column("ts").cast(pa.int64()).to_pylist()
    columns = [table.column(name).to_pylist() for name in ("seq", "kind", "device", "def", "body")]
    return [JournalItem(ts_ns=t, seq=s, kind=k, device=d, def_id=f, body=b)
            for t, s, k, d, f, b in zip(ts, *columns, strict=True)]


def def_file_name(def_id: str) -> str:
    """The file name of a `<sha256>:<file name>` snapshot id (docs/architecture.md §1)."""
    _, sep, name = def_id.partition(":")
    return name if sep else def_id
