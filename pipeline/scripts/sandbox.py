"""One script's Lua 5.4 state (lupa), sandboxed and limited (docs/behaviour.md §9.3).

- The state keeps the base functions, `string` (without `dump`), `table`, `math`, `utf8`,
  `coroutine`, `os.time`, `os.clock`, `os.date`, `collectgarbage("count")` and `wd`; `io`, the rest
  of `os`, `require`, `package`, `debug`, `load`, `loadstring`, `dofile`, `loadfile`, `warn` and
  lupa's `python` module are gone before the script's first instruction. The script is compiled
  as text only (`mode="t"`): precompiled bytecode is refused.
- No Python object is ever reachable from Lua: `wd` is made of Lua closures over the host's
  callbacks (upvalues, out of reach without `debug`), the callbacks never raise (they answer
  `false, message` and the closure raises a Lua string), and they hand back only numbers,
  strings, booleans and Lua tables. Strings cross as bytes (`encoding=None`), so a string that is
  not UTF-8 is an ordinary value, never a conversion error escaping into Lua.
- `setmetatable` refuses a metatable holding `__gc`: Lua runs finalizers with hooks off, so a
  looping finalizer could never be stopped (a `__gc` added to the metatable later is never called,
  by Lua's rule).
- Limits: lupa's `max_memory` caps the state (16 MB); a count hook, installed with
  `debug.sethook` before `debug` goes, asks Python every `hook_every` instructions whether the
  call is over its instruction budget or wall clock, and every `wd` call asks about the wall
  clock when it returns (time spent in the gateway counts at once). The hook is per Lua thread, so coroutines
  are created with it too. Once a limit is hit, `pcall`, `xpcall` and `coroutine.resume` raise
  the overrun again instead of returning it, so a script cannot catch its way past a limit; a
  memory error caught by `pcall` is an overrun as well. An `xpcall` message handler is not called
  once a limit is hit: Lua runs the handler of an error raised in the hook with hooks off; for
  the same reason `coroutine.close` refuses once a limit is hit (a coroutine the hook stopped
  would run its `__close` metamethods with hooks off).
- A call made of one long C function (a pathological `string.find`) cannot be interrupted by the
  hook; it overruns its wall clock only as long as that function runs, in the Lua thread, never in
  the event loop (docs/spec-notes.md, Lua scripts).

All methods must be called from the one Lua thread (`runner._LuaThread`).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import lupa.lua54 as lupa

from store.events import JsonValue

MEMORY_ERROR: Final = "not enough memory"
INSTRUCTIONS: Final = "instruction budget exceeded"
TIME: Final = "time limit exceeded"
MEMORY: Final = "memory limit exceeded"

#: docs/behaviour.md §9.4: JSON nesting and result size.
MAX_DEPTH: Final = 32
MAX_RESULT_BYTES: Final = 64 * 1024

_PRELUDE: Final = rb"""
local py, HOOK_EVERY = ...
local check, check_clock, note_stop = py.check, py.check_clock, py.note_stop
local sethook, getinfo = debug.sethook, debug.getinfo
local error, type, tostring, select, rawget = error, type, tostring, select, rawget
local pack, unpack, concat = table.pack, table.unpack, table.concat
local raw_pcall, raw_xpcall = pcall, xpcall
local co_create, co_resume = coroutine.create, coroutine.resume
local MEMORY_ERROR = "not enough memory"
local stop = nil

local function hook()
  if stop == nil then stop = check() end
  if stop ~= nil then error(stop, 0) end
end
sethook(hook, "", HOOK_EVERY)

-- After every call into the gateway: the time spent there counts against the wall clock at
-- once. The count hook alone would look next only 1,000 instructions later, which is
-- dozens of slow `wd` calls (a `wd.save` of a huge table takes 0.2 s): seconds past the limit.
local function spent()
  if stop == nil then stop = check_clock() end
  if stop ~= nil then error(stop, 0) end
end

-- error(message, level) for the function calling raise, unless the frame `level` names is this
-- prelude's: the script tail-called (`return wd.get(...)`) and left no frame of its own, so the
-- message goes without a position rather than with a line of the prelude.
local function raise(message, level)
  local info = getinfo(level + 1, "S")
  if info == nil or info.source == "=sunpm" then error(message, 0) end
  error(message, level + 1)
end

local function after_catch(r)
  if stop == nil and not r[1] and r[2] == MEMORY_ERROR then
    stop = "memory limit exceeded"
    note_stop(stop)
  end
  if stop ~= nil then error(stop, 0) end
  return unpack(r, 1, r.n)
end
pcall = function(...) return after_catch(pack(raw_pcall(...))) end
-- Lua calls the message handler of an error the count hook raised with hooks off: the script's
-- handler would then run unlimited (a loop in it never stopped), so once a limit is hit it is
-- not called.
xpcall = function(f, handler, ...)
  if type(handler) ~= "function" then
    raise("bad argument #2 to 'xpcall' (function expected, got " .. type(handler) .. ")", 2)
  end
  return after_catch(pack(raw_xpcall(f, function(m)
    if stop ~= nil then return m end
    return handler(m)
  end, ...)))
end
coroutine.create = function(f)
  local co = co_create(f)
  sethook(co, hook, "", HOOK_EVERY)
  return co
end
coroutine.resume = function(...) return after_catch(pack(co_resume(...))) end
-- A coroutine the hook stopped keeps hooks off: closing it would run its `__close`
-- metamethods unlimited (a `__close` of the caller, run as the stop unwinds, could ask).
local co_close = coroutine.close
coroutine.close = function(co)
  if stop ~= nil then error(stop, 0) end
  return co_close(co)
end
coroutine.wrap = function(f)
  local co = coroutine.create(f)
  return function(...)
    local r = pack(co_resume(co, ...))
    if r[1] then return unpack(r, 2, r.n) end
    after_catch(r)
    error(r[2], 0)
  end
end

-- Lua runs finalizers with hooks off: a looping __gc could never be stopped. A metatable is
-- marked for finalization only if it has __gc when set, so refusing it here is enough.
local raw_setmetatable, raw_rawget = setmetatable, rawget
setmetatable = function(t, mt)
  if type(mt) == "table" and raw_rawget(mt, "__gc") ~= nil then
    raise("setmetatable: __gc metamethods are not available", 2)
  end
  return raw_setmetatable(t, mt)
end
string.dump = nil
local os_time, os_clock, os_date = os.time, os.clock, os.date
os = { time = os_time, clock = os_clock, date = os_date }
local gc = collectgarbage
collectgarbage = function(what)
  if what == "count" then return gc("count") end
  raise("collectgarbage: only collectgarbage(\"count\") is available", 2)
end
io, require, package, debug, load, loadstring, dofile, loadfile, warn, python =
  nil, nil, nil, nil, nil, nil, nil, nil, nil, nil

local function api(name)
  local fn = py[name]
  return function(...)
    local r = pack(fn(...))
    spent()
    if not r[1] then raise(r[2], 2) end
    return unpack(r, 2, r.n)
  end
end

local timers = {}
local py_every, py_after, py_cancel, py_log = py.every, py.after, py.cancel, py.log
local function timer(start, s, fn)
  local r = pack(start(s, type(fn) == "function"))
  spent()
  if not r[1] then raise(r[2], 3) end
  timers[r[2]] = fn
  return r[2]
end
local function log(text)
  local r = pack(py_log(text))
  spent()
  if not r[1] then raise(r[2], 3) end
end
wd = {
  get = api("get"), getTag = api("getTag"), set = api("set"), setTag = api("setTag"),
  devices = api("devices"), setRelay = api("setRelay"), alarm = api("alarm"), now = api("now"),
  save = api("save"), load = api("load"),
  log = function(text) log(tostring(text)) end,
  every = function(s, fn) return (timer(py_every, s, fn)) end,
  after = function(s, fn) return (timer(py_after, s, fn)) end,
  cancel = function(id)
    local r = pack(py_cancel(id))
    spent()
    if not r[1] then raise(r[2], 2) end
    if r[2] then timers[id] = nil end
    return r[2]
  end,
}
print = function(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = tostring((select(i, ...))) end
  log(concat(parts, "\t"))
end

-- An error that reaches the host as a table, a boolean, a function or nil is named by its type,
-- as the Lua interpreter does (the host would see an empty message); userdata is the host's own
-- (a stop, a Python exception) and goes through. Nothing of the object is called: the handler
-- may run with hooks off.
local function named(m)
  local kind = type(m)
  if kind == "string" or kind == "number" or kind == "userdata" then return m end
  return "(error object is a " .. kind .. " value)"
end
local function guarded(f, ...)
  local r = pack(raw_xpcall(f, named, ...))
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

local entry = {}
function entry.run(chunk) guarded(chunk) end
function entry.call(name, arg)
  local f = rawget(_G, name)
  if type(f) ~= "function" then return false end
  return true, (guarded(f, arg))
end
function entry.fire(id, once)
  local fn = timers[id]
  if once then timers[id] = nil end
  if fn ~= nil then guarded(fn) end
end
function entry.header() return rawget(_G, "header") end
return entry
"""

_POSITION = re.compile(r"^(?P<chunk>[^\n:]+):(?P<line>\d+): ")


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Per call (chunk, wsInit, wsStop, timer, RPC) and per script: docs/behaviour.md §9.3."""

    instructions: int = 10_000_000
    seconds: float = 1.0
    memory_bytes: int = 16 * 2**20
    #: Instructions between two looks at the budget: small enough to stop a loop within a few
    #: milliseconds, large enough that the look costs nothing measurable. A loop of C calls whose
    #: work grows with their arguments (a 400 KB `string.rep`) runs few instructions: at 10,000
    #: it went on 0.6 s past its wall clock on a quiet box, seconds on a busy one; at 1,000,
    #: 0.08 s, and a 20 M-instruction loop takes no longer (0.25 s either way).
    hook_every: int = 1_000


class Overrun(Exception):
    """A call hit a limit; `str()` is the reason (`instruction budget exceeded`, ...)."""


class LuaCallError(Exception):
    """A Lua error; `message` is its first part (`file.lua:12: attempt to ...`), without the
    traceback, and `line` the line it names in the script (None: none)."""

    def __init__(self, message: str, line: int | None, *, syntax: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.syntax = syntax


class _Budget:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.instructions = 0
        self.deadline = 0.0
        self.stopped: str | None = None
        self.active = False

    def start(self) -> None:
        self.instructions = 0
        self.deadline = time.monotonic() + self.limits.seconds
        self.active = True

    def check(self) -> str | None:
        """Called by the count hook: the reason to stop, or None to go on."""
        if self.stopped is not None:
            return self.stopped
        if not self.active:
            # Finalizers run when the state closes, outside any call: they get nothing.
            self.stopped = INSTRUCTIONS
        else:
            self.instructions += self.limits.hook_every
            if self.instructions > self.limits.instructions:
                self.stopped = INSTRUCTIONS
            elif time.monotonic() > self.deadline:
                self.stopped = TIME
        return self.stopped

    def check_clock(self) -> str | None:
        """Called after every `wd` call: the reason to stop when the call is past its wall
        clock (instructions are the count hook's to count)."""
        if self.stopped is None and self.active and time.monotonic() > self.deadline:
            self.stopped = TIME
        return self.stopped

    def note_stop(self, reason: bytes) -> None:
        if self.stopped is None:
            self.stopped = reason.decode()


Callback = Callable[..., object]


class LuaState:
    """A compiled, sandboxed script; see the module docstring."""

    def __init__(self, chunk_name: str, callbacks: Mapping[str, Callback], limits: Limits) -> None:
        self.chunk_name = chunk_name
        self._budget = _Budget(limits)
        self.runtime = lupa.LuaRuntime(
            encoding=None, register_eval=False, register_builtins=False,
            unpack_returned_tuples=True, max_memory=limits.memory_bytes,
            attribute_filter=_no_attributes)
        py = dict(callbacks)
        py["check"] = self._budget.check
        py["check_clock"] = self._budget.check_clock
        py["note_stop"] = self._budget.note_stop
        table = self.runtime.table_from({k.encode(): v for k, v in py.items()})
        self._entry = self.runtime.execute(_PRELUDE, table, limits.hook_every,
                                           name=b"=sunpm", mode="t")

    @property
    def stopped(self) -> str | None:
        return self._budget.stopped

    def run_chunk(self, source: bytes) -> None:
        """Compile (text only) and run the top-level chunk."""
        try:
            chunk = self.runtime.compile(source, name=b"=" + self.chunk_name.encode(), mode="t")
        except lupa.LuaSyntaxError as err:
            raise self._error(err) from None
        except lupa.LuaError as err:
            raise self._error(err) from None
        self._invoke(self._entry.run, chunk)

    def header(self) -> object:
        # Through the budget like every call: the count hook may fire in any Lua code.
        return self._invoke(self._entry.header)[0]

    def call(self, name: str, argument: object = None) -> tuple[bool, object]:
        """Call the global function `name` with one argument: (False, None) when there is no
        such function, else (True, its first result)."""
        found, result = self._invoke(self._entry.call, name.encode(), argument)
        return bool(found), result

    def fire(self, timer: int, once: bool) -> None:
        self._invoke(self._entry.fire, timer, once)

    def _invoke(self, fn: Callable[..., object], *args: object) -> tuple[object, object]:
        self._budget.start()
        try:
            result = fn(*args)
        except lupa.LuaMemoryError:
            self._budget.note_stop(MEMORY.encode())
            raise Overrun(MEMORY) from None
        except lupa.LuaError as err:
            if self._budget.stopped is not None:
                raise Overrun(self._budget.stopped) from None
            failure = self._error(err)
            if failure.message.endswith(MEMORY_ERROR):
                self._budget.note_stop(MEMORY.encode())
                raise Overrun(MEMORY) from None
            raise failure from None
        finally:
            self._budget.active = False
        if self._budget.stopped is not None:
            raise Overrun(self._budget.stopped)
        if isinstance(result, tuple):
            first, second = (*result, None, None)[:2]
            return first, second
        return result, None

    def _error(self, err: Exception) -> LuaCallError:
        first = err.args[0] if err.args else ""
        text = first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)
        if isinstance(err, lupa.LuaSyntaxError):
            text = text.removeprefix("error loading code: ")
        text = text.split("\nstack traceback:", 1)[0].strip()
        match = _POSITION.match(text)
        line = int(match["line"]) if match and match["chunk"] == self.chunk_name else None
        return LuaCallError(text, line, syntax=isinstance(err, lupa.LuaSyntaxError))

    # ----------------------------------------------------------------- conversions

    def to_lua(self, value: JsonValue) -> object:
        """JSON -> Lua (docs/behaviour.md §9.4): objects string-keyed, arrays 1..n with `null` as
        holes, integers stay integers (beyond 64 bits: floats). Raises ValueError when nested
        too deep, or too large for the state's memory.

        The tables are made outside any Lua call, where running out of memory is a Lua panic
        that aborts the process: they are made with the limit raised by what they may cost
        (`_lua_cost`, at most the limit itself), and refused if the state is then over its
        limit."""
        limit = self.runtime.get_max_memory()
        too_large = ValueError(f"too large for the script's memory ({limit // 2**20} MB)")
        cost = _lua_cost(value)
        if cost > limit:
            raise too_large
        self.runtime.set_max_memory(limit + cost)
        try:
            converted = self._to_lua(value, 0)
            if self.runtime.get_memory_used() > limit:
                del converted
                self.runtime.gccollect()
                raise too_large
        finally:
            self.runtime.set_max_memory(limit)
        return converted

    def _to_lua(self, value: JsonValue, depth: int) -> object:
        if depth > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, bool) or value is None or isinstance(value, float):
            return value
        if isinstance(value, int):
            return value if lupa.LUA_MININTEGER <= value <= lupa.LUA_MAXINTEGER else float(value)
        if isinstance(value, list):
            return self.runtime.table_from({i: self._to_lua(v, depth + 1)
                                            for i, v in enumerate(value, 1) if v is not None})
        return self.runtime.table_from({k.encode(): self._to_lua(v, depth + 1)
                                        for k, v in value.items() if v is not None})

    def table(self, items: Mapping[object, object]) -> object:
        return self.runtime.table_from(dict(items))


#: What one table, one member (key and value slots, hash parts grown by doubling) and one
#: string (its header) of a JSON value may cost as Lua values, in bytes: upper bounds (measured
#: with Lua 5.4: 56, 32 and 24 or so).
_TABLE_BYTES: Final = 160
_MEMBER_BYTES: Final = 80
_STRING_BYTES: Final = 48


def _lua_cost(value: JsonValue) -> int:
    """At most what `value` takes as Lua values (iterative: any depth is walked)."""
    cost, stack = 0, [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            cost += _STRING_BYTES + len(node.encode())
        elif isinstance(node, list):
            cost += _TABLE_BYTES + _MEMBER_BYTES * len(node)
            stack.extend(node)
        elif isinstance(node, dict):
            cost += _TABLE_BYTES + _MEMBER_BYTES * len(node)
            for key, member in node.items():
                cost += _STRING_BYTES + len(key.encode())
                stack.append(member)
    return cost


def _no_attributes(obj: object, name: object, is_setting: bool) -> str:
    raise AttributeError("Python objects are not available to scripts")


def from_lua(value: object, what: str = "result", depth: int = 0,
             room: list[int] | None = None) -> JsonValue:
    """Lua -> JSON (docs/behaviour.md §9.4); raises ValueError with `<what>: <problem>`."""
    room = room if room is not None else [MAX_RESULT_BYTES]
    room[0] -= 8
    if room[0] < 0:
        raise ValueError(f"{what}: larger than {MAX_RESULT_BYTES // 1024} KB")
    if depth > MAX_DEPTH:
        raise ValueError(f"{what}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what}: NaN and infinities cannot be sent")
        return value
    if isinstance(value, bytes):
        room[0] -= len(value)
        if room[0] < 0:
            raise ValueError(f"{what}: larger than {MAX_RESULT_BYTES // 1024} KB")
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{what}: a string is not valid UTF-8") from None
    kind = lupa.lua_type(value)
    if kind != "table":
        raise ValueError(f"{what}: a {kind or type(value).__name__} cannot be sent")
    items = list(value.items())  # type: ignore[attr-defined]
    if not items:
        return {}
    keys = [k for k, _ in items]
    if all(isinstance(k, int) and not isinstance(k, bool) for k in keys) and \
            sorted(keys) == list(range(1, len(keys) + 1)):
        ordered = sorted(items, key=lambda kv: int(kv[0]))
        return [from_lua(v, what, depth + 1, room) for _, v in ordered]
    if all(isinstance(k, bytes) for k in keys):
        out: dict[str, JsonValue] = {}
        for k, v in items:
            key = from_lua(k, what, depth + 1, room)
            assert isinstance(key, str)
            out[key] = from_lua(v, what, depth + 1, room)
        return out
    raise ValueError(f"{what}: table mixes array and object keys")
