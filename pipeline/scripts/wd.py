"""The Python side of one script's `wd` table (docs/behaviour.md §9.2).

Each callback runs in the Lua thread, takes Lua values (strings as bytes) and answers
`(True, results...)` or `(False, message)`; the Lua closure in `sandbox._PRELUDE` turns the latter
into a Lua error. Reads use the host's thread-safe readers; what acts on the gateway (writes, the
relay, alarms, timers, saved data) is queued as `Effect`s that the runner carries out on the event
loop when the call returns.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

import lupa.lua54 as lupa

from config.decimal_text import read_integer
from config.model import DataType, DefinitionFile, Protocol, Quality, Variable
from pipeline.drivers._base import RawValue, Reading, tic_number
from pipeline.drivers.modbus import codec
from pipeline.scripts.host import ScriptDevice, ScriptHost, age_s
from pipeline.scripts.sandbox import LuaState
from store.events import JsonValue

MAX_TIMERS: Final = 32
MAX_ALARMS_PER_MINUTE: Final = 10
MAX_LOG_LINES_PER_MINUTE: Final = 100
LOG_CUT: Final = 1000
ALARM_CUT: Final = 64
MAX_DATA_BYTES: Final = 64 * 1024
STALE_PERIODS: Final = 3
SCRIPT_ALARM: Final = "Script alarm"


class WdError(Exception):
    """A bad argument or refused action; `str()` starts with the function's name."""


@dataclass(frozen=True, slots=True)
class Write:
    device: ScriptDevice
    var: Variable
    raw: RawValue


@dataclass(frozen=True, slots=True)
class Relay:
    state: int


@dataclass(frozen=True, slots=True)
class Alarm:
    text: str


@dataclass(frozen=True, slots=True)
class StartTimer:
    timer: int
    seconds: float
    once: bool


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer: int


Effect = Write | Relay | Alarm | StartTimer | CancelTimer


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def lua_number(value: Decimal | float) -> int | float:
    """Lua integers when exact, floats otherwise (docs/behaviour.md §9.2)."""
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if lupa.LUA_MININTEGER <= value <= lupa.LUA_MAXINTEGER else float(value)
    if value == value.to_integral_value():
        return lua_number(int(value))
    return float(value)


def scaled_for_lua(device: ScriptDevice, var: Variable, raw: RawValue) -> int | float | bytes:
    scaled = codec.scaled_value(var, raw)
    if isinstance(scaled, str):
        if device.definition is not None and device.definition.protocol is Protocol.TIC:
            number = tic_number(scaled)
            if number is not None:
                return lua_number(codec.scaled_value(var, number))  # type: ignore[arg-type]
        return scaled.encode()
    return lua_number(scaled)


class Wd:
    """One script's `wd` callbacks and what they queued; see the module docstring."""

    def __init__(self, host: ScriptHost, name: str, data: Mapping[str, JsonValue]) -> None:
        self.host = host
        self.name = name
        self.log = logging.getLogger(f"sunpm.script.{name}")
        self.state: LuaState | None = None
        self.data: dict[str, JsonValue] = dict(data)
        self.data_changed = False
        self.effects: list[Effect] = []
        self.timers: set[int] = set()
        self._next_timer = 1
        self._alarms: deque[float] = deque()
        self._lines: deque[float] = deque()
        self.suppressed = 0

    def callbacks(self) -> dict[str, Callable[..., object]]:
        calls: dict[str, Callable[..., tuple[object, ...]]] = {
            "get": self.get, "getTag": self.get_tag, "set": self.set, "setTag": self.set_tag,
            "devices": self.devices, "setRelay": self.set_relay, "every": self.every,
            "after": self.after, "cancel": self.cancel, "alarm": self.alarm, "now": self.now,
            "save": self.save, "load": self.load, "log": self.write_log}
        return {name: _guarded(f"wd.{name}", fn) for name, fn in calls.items()}

    def take_effects(self) -> list[Effect]:
        effects, self.effects = self.effects, []
        return effects

    def _table(self, items: Mapping[object, object]) -> object:
        assert self.state is not None
        return self.state.table(items)

    # ----------------------------------------------------------------- look-ups

    def _device(self, fn: str, key: object) -> ScriptDevice:
        devices = self.host.devices()
        if isinstance(key, bytes):
            text = key.decode("utf-8", "replace")
            found = next((d for d in devices if d.device.name == text), None) or \
                next((d for d in devices if d.device.index == text), None)
        elif isinstance(key, (int, float)) and not isinstance(key, bool) and \
                float(key).is_integer():
            text = str(int(key))
            found = next((d for d in devices if d.device.index == text), None)
        else:
            raise WdError(f"{fn}: device must be a name or an index, got {_lua_type(key)}")
        if found is None:
            raise WdError(f"{fn}: unknown device '{text}'")
        return found

    def _variable(self, fn: str, device: ScriptDevice, key: object) -> Variable:
        definition = device.definition
        if definition is None:
            raise WdError(f"{fn}: {device.device.name} is not polled")
        var = find_variable(definition, key)
        if var is None:
            raise WdError(f"{fn}: {device.device.name}: unknown variable '{_text(key)}'")
        return var

    def _value(self, device: ScriptDevice, var: Variable) -> tuple[object, float] | None:
        good = self.host.last_good(device.device.index, var.index)
        if good is None:
            return None
        age = age_s(self.host, good)
        if age > STALE_PERIODS * device.poll_period_s:
            return None
        return scaled_for_lua(device, var, good.raw), age

    # ----------------------------------------------------------------- reads

    def get(self, device_key: object = None, variable: object = None) -> tuple[object, ...]:
        device = self._device("wd.get", device_key)
        var = self._variable("wd.get", device, variable)
        value = self._value(device, var)
        return (True, None) if value is None else (True, *value)

    def get_tag(self, tag: object = None) -> tuple[object, ...]:
        if not isinstance(tag, bytes):
            raise WdError(f"wd.getTag: tag must be a string, got {_lua_type(tag)}")
        text = tag.decode("utf-8", "replace")
        rows: dict[object, object] = {}
        for device in self.host.devices():
            var = _tagged(device.definition, text)
            if var is None:
                continue
            good = self.host.last_good(device.device.index, var.index)
            row: dict[object, object] = {b"device": device.device.name.encode(),
                                         b"index": var.index}
            value = self._value(device, var)
            if value is not None:
                row[b"value"] = value[0]
            if good is not None:
                row[b"age"] = age_s(self.host, good)
            rows[len(rows) + 1] = self._table(row)
        return True, self._table(rows)

    def devices(self) -> tuple[object, ...]:
        rows: dict[object, object] = {}
        for device in self.host.devices():
            row = device.device
            definition = device.definition
            index: object = row.numeric_index if row.numeric_index is not None else \
                row.index.encode()
            category = row.category or (definition.category if definition else "")
            model = row.model or (definition.model if definition else "")
            rows[len(rows) + 1] = self._table({
                b"index": index, b"name": row.name.encode(), b"category": category.encode(),
                b"model": model.encode(), b"state": device.state.encode()})
        return True, self._table(rows)

    def now(self) -> tuple[object, ...]:
        return True, (self.host.wall_ns() // 1_000_000) / 1000

    # ----------------------------------------------------------------- writes

    def _raw(self, fn: str, device: ScriptDevice, var: Variable, value: object) -> RawValue:
        """Validate a scaled value as the driver will (docs/formats.md §8.3, docs/behaviour.md
        §2.7)."""
        name = device.device.name
        point = var.modbus
        if point is not None and point.data_type is DataType.STRING:
            if not isinstance(value, bytes):
                raise WdError(f"{fn}: {name}: {var.key} takes a string")
            raw: RawValue = value.decode("utf-8", "replace")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise WdError(f"{fn}: {name}: value must be a number, got {_lua_type(value)}")
            if isinstance(value, float) and not math.isfinite(value):
                raise WdError(f"{fn}: {name}: value must be a finite number")
            number = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
            try:
                raw = codec.scaled_to_raw(var, number)
            except codec.EncodeError as err:
                raise WdError(f"{fn}: {name}: {err}") from None
        if point is None:
            return raw
        sf: int | None = None
        if var.scale_factor_index is not None:
            good = self.host.last_good(device.device.index, var.scale_factor_index)
            sf = codec.decode_scale_factor(Reading(good.raw, Quality.GOOD)) if good else None
            if sf is None:
                raise WdError(f"{fn}: {name}: scale factor {var.info4} not read yet")
        try:
            codec.encode_value(point, codec.raw_to_register_value(raw, sf))
        except codec.EncodeError as err:
            raise WdError(f"{fn}: {name}: {err}") from None
        return raw

    def set(self, device_key: object = None, variable: object = None,
            value: object = None) -> tuple[object, ...]:
        device = self._device("wd.set", device_key)
        var = self._variable("wd.set", device, variable)
        raw = self._raw("wd.set", device, var, value)
        self.effects.append(Write(device, var, raw))
        return True, _raw_for_lua(raw)

    def set_tag(self, tag: object = None, value: object = None) -> tuple[object, ...]:
        if not isinstance(tag, bytes):
            raise WdError(f"wd.setTag: tag must be a string, got {_lua_type(tag)}")
        text = tag.decode("utf-8", "replace")
        queued: dict[object, object] = {}
        rejected: dict[object, object] = {}
        for device in self.host.devices():
            var = _tagged(device.definition, text)
            if var is None:
                continue
            try:
                raw = self._raw("wd.setTag", device, var, value)
            except WdError as err:
                rejected[device.device.name.encode()] = str(err).encode()
                continue
            self.effects.append(Write(device, var, raw))
            queued[device.device.name.encode()] = _raw_for_lua(raw)
        if not queued and not rejected:
            raise WdError(f"wd.setTag: no device has the tag '{text}'")
        return True, self._table({b"queued": self._table(queued),
                                  b"rejected": self._table(rejected)})

    def set_relay(self, state: object = None) -> tuple[object, ...]:
        if isinstance(state, bool) or (state in (0, 1) and isinstance(state, (int, float))):
            level = int(state)
        else:
            raise WdError(f"wd.setRelay: state must be 0, 1 or a boolean, got {_show(state)}")
        self.effects.append(Relay(level))
        return (True,)

    # ----------------------------------------------------------------- timers

    def _timer(self, fn: str, seconds: object, is_function: object, low: float,
               once: bool) -> tuple[object, ...]:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or \
                not low <= seconds <= 86400:
            raise WdError(f"{fn}: seconds must be a number in {low:g}..86400, got "
                          f"{_show(seconds)}")
        if is_function is not True:
            raise WdError(f"{fn}: the second argument must be a function")
        if len(self.timers) >= MAX_TIMERS:
            raise WdError(f"{fn}: more than {MAX_TIMERS} timers")
        timer = self._next_timer
        self._next_timer += 1
        self.timers.add(timer)
        self.effects.append(StartTimer(timer, float(seconds), once))
        return True, timer

    def every(self, seconds: object = None, is_function: object = None) -> tuple[object, ...]:
        return self._timer("wd.every", seconds, is_function, 0.5, once=False)

    def after(self, seconds: object = None, is_function: object = None) -> tuple[object, ...]:
        return self._timer("wd.after", seconds, is_function, 0.0, once=True)

    def cancel(self, timer: object = None) -> tuple[object, ...]:
        if not isinstance(timer, int) or timer not in self.timers:
            return True, False
        self.timers.discard(timer)
        self.effects.append(CancelTimer(timer))
        return True, True

    # ----------------------------------------------------------------- alarms, log

    def alarm(self, text: object = None) -> tuple[object, ...]:
        if not isinstance(text, (bytes, int, float)) or isinstance(text, bool):
            raise WdError(f"wd.alarm: text must be a string, got {_lua_type(text)}")
        now = time.monotonic()
        while self._alarms and now - self._alarms[0] >= 60:
            self._alarms.popleft()
        if len(self._alarms) >= MAX_ALARMS_PER_MINUTE:
            return True, False
        self._alarms.append(now)
        self.effects.append(Alarm(_text(text)[:ALARM_CUT]))
        return True, True

    def write_log(self, text: object = None) -> tuple[object, ...]:
        now = time.monotonic()
        while self._lines and now - self._lines[0] >= 60:
            self._lines.popleft()
        if len(self._lines) >= MAX_LOG_LINES_PER_MINUTE:
            self.suppressed += 1
            return (True,)
        if self.suppressed:
            self.log.warning("%d script log lines suppressed (more than %d a minute)",
                             self.suppressed, MAX_LOG_LINES_PER_MINUTE)
            self.suppressed = 0
        self._lines.append(now)
        self.log.info("%s", _text(text)[:LOG_CUT])
        return (True,)

    # ----------------------------------------------------------------- persistence

    def save(self, key: object = None, value: object = None) -> tuple[object, ...]:
        name = _key("wd.save", key)
        data = dict(self.data)
        if value is None:
            data.pop(name, None)
        else:
            data[name] = _saved_value(value)
        size = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_DATA_BYTES:
            raise WdError(f"wd.save: saved data would take {size} bytes, more than "
                          f"{MAX_DATA_BYTES // 1024} KB per script")
        self.data = data
        self.data_changed = True
        return (True,)

    def load(self, key: object = None) -> tuple[object, ...]:
        value = self.data.get(_key("wd.load", key))
        if isinstance(value, list):
            return True, self._table({i: _plain_to_lua(v) for i, v in enumerate(value, 1)
                                      if v is not None})
        if isinstance(value, dict):
            return True, self._table({k.encode(): _plain_to_lua(v) for k, v in value.items()
                                      if v is not None})
        return True, _plain_to_lua(value)


def find_variable(definition: DefinitionFile, key: object) -> Variable | None:
    """An Index (a number or ASCII digits), else a Name (repeated Names as `<Name>_<Index>`), else a
    Tag (docs/behaviour.md §9.2)."""
    if isinstance(key, (int, float)) and not isinstance(key, bool):
        if not float(key).is_integer():
            return None
        index = int(key)
        return next((v for v in definition.variables if v.index == index), None)
    if not isinstance(key, bytes):
        return None
    text = key.decode("utf-8", "replace")
    # ASCII digits only (docs/formats.md §1.1): `"²".isdigit()` holds and `int("²")` raises.
    digits = read_integer(text, max_digits=10)
    if digits is not None and digits >= 0:
        return next((v for v in definition.variables if v.index == digits), None)
    return next((v for v in definition.variables if (v.key or v.name) == text), None) or \
        next((v for v in definition.variables if v.name == text), None) or \
        _tagged(definition, text)


def _tagged(definition: DefinitionFile | None, tag: str) -> Variable | None:
    if definition is None or not tag:
        return None
    return next((v for v in definition.variables if v.tag == tag), None)


def _raw_for_lua(raw: RawValue) -> object:
    if isinstance(raw, str):
        return raw.encode()
    return lua_number(raw)


def _key(fn: str, key: object) -> str:
    if not isinstance(key, bytes) or not 1 <= len(key.decode("utf-8", "replace")) <= 64:
        raise WdError(f"{fn}: key must be a string of 1..64 characters, got {_show(key)}")
    return key.decode("utf-8", "replace")


def _plain(fn: str, value: object) -> JsonValue:
    if isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise WdError(f"{fn}: NaN and infinities cannot be saved")
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise WdError(f"{fn}: a string is not valid UTF-8") from None
    raise WdError(f"{fn}: value must be nil, a boolean, a number, a string or a flat table of "
                  f"those, got {_lua_type(value)}")


def _saved_value(value: object) -> JsonValue:
    if lupa.lua_type(value) != "table":
        return _plain("wd.save", value)
    items = list(value.items())  # type: ignore[attr-defined]
    keys = [k for k, _ in items]
    if items and all(isinstance(k, int) and not isinstance(k, bool) for k in keys) and \
            sorted(keys) == list(range(1, len(keys) + 1)):
        return [_plain("wd.save", v) for _, v in sorted(items, key=lambda kv: int(kv[0]))]
    if all(isinstance(k, bytes) for k in keys):
        return {_plain("wd.save", k): _plain("wd.save", v)  # type: ignore[misc]
                for k, v in items}
    raise WdError("wd.save: a table must have keys 1..n or only string keys")


def _plain_to_lua(value: JsonValue) -> object:
    if isinstance(value, str):
        return value.encode()
    return value


def _lua_type(value: object) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, bytes):
        return "string"
    return lupa.lua_type(value) or "userdata"


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return repr(value.decode("utf-8", "replace"))
    if isinstance(value, bool):
        return str(value).lower()
    if value is None or lupa.lua_type(value) is not None:
        return _lua_type(value)
    return str(value)


def _guarded(fn_name: str, fn: Callable[..., tuple[object, ...]]) -> Callable[..., object]:
    """The callback as Lua sees it: never raises (a Python exception would reach Lua as a Python
    object); errors become `(False, message)`. Arguments past the function's are dropped, as Lua
    drops them for its own functions."""
    takes = len(inspect.signature(fn).parameters)

    def call(*args: object) -> object:
        try:
            return fn(*args[:takes])
        except WdError as err:
            return False, str(err).encode()
        except Exception as err:
            logging.getLogger("sunpm.script").exception("%s failed", fn_name)
            return False, f"{fn_name}: internal error: {err}".encode()
    return call
