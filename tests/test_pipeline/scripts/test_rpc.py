"""RPC `<name>.<function>` (docs/behaviour.md §9.4): JSON in, JSON out, and the error answers; saved
data across a restart of the store and the runner."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from _script_plant import bare_host, running

from pipeline.scripts import ScriptError, ScriptRunner, ScriptSource
from store.events import JsonValue
from store.log import Log

pytestmark = pytest.mark.usefixtures("no_task_left_behind")

CONVERT = ScriptSource(file="convert test.lua", source=b"""
local saved = wd.load("calls") or 0
function echo(p) return p end
function kinds(p)
  local out = {}
  for k, v in pairs(p) do out[k] = math.type(v) or type(v) end
  return out
end
function length(p) return #p.list end
function nothing() end
function empty() return {} end
function mixed() return {1, 2, x = 3} end
function holes() local t = {1, 2} t[4] = 4 return t end
function nan() return 0/0 end
function inf() return math.huge end
function fn() return print end
function deep() local t = {} for i = 1, 40 do t = {t} end return t end
function big() return string.rep("x", 70000) end
function not_utf8() return "\\xff\\xfe" end
function fails() error("boom", 0) end
function fails_here() error("boom") end
function many() return 1, 2, 3 end
function _private() return 1 end
function count()
  saved = saved + 1
  wd.save("calls", saved)
  wd.save("list", {1, "two", true})
  wd.save("flat", {a = 1.5, b = "x"})
  return saved
end
function loaded() return {calls = wd.load("calls"), list = wd.load("list"), flat = wd.load("flat")} end
function forget() wd.save("list", nil) wd.save("flat", nil) end
function bad_save(p)
  local ok, err = pcall(wd.save, p.key, p.nested and {{1}} or string.rep("x", 70000))
  return err
end
""")


async def test_json_values_cross_both_ways_as_the_spec_maps_them(tmp_path: Path) -> None:
    async with bare_host(tmp_path / "store") as (host, _):
        runner = ScriptRunner(host, [CONVERT])
        async with running(runner):
            value: dict[str, JsonValue] = {"a": 1, "b": [1, 2.5, "x", True, {"c": None, "d": "é"}],
                                "e": {}, "f": "text"}
            # `"c": null` is an absent member; an empty object comes back as {}.
            assert await runner.call("convert_test.echo", value) == {
                "a": 1, "b": [1, 2.5, "x", True, {"d": "é"}], "e": {}, "f": "text"}
            assert await runner.call("convert_test.kinds", {"i": 2, "f": 2.0, "s": "2",
                                                            "b": False}) == {
                "i": "integer", "f": "float", "s": "string", "b": "boolean"}
            # null in an array is a hole: the border is before it.
            assert await runner.call("convert_test.length", {"list": [1, 2, None, 4]}) in (2, 4)
            assert await runner.call("convert_test.nothing", {}) is None
            assert await runner.call("convert_test.empty", {}) == {}
            assert await runner.call("convert_test.many", {}) == 1
            for function, error in [
                    ("mixed", "result: table mixes array and object keys"),
                    ("holes", "result: table mixes array and object keys"),
                    ("nan", "result: NaN and infinities cannot be sent"),
                    ("inf", "result: NaN and infinities cannot be sent"),
                    ("fn", "result: a function cannot be sent"),
                    ("deep", "result: nested deeper than 32 levels"),
                    ("big", "result: larger than 64 KB"),
                    ("not_utf8", "result: a string is not valid UTF-8")]:
                with pytest.raises(ScriptError) as refused:
                    await runner.call(f"convert_test.{function}", {})
                assert str(refused.value) == f"convert_test.{function}: {error}"
            nested: dict[str, JsonValue] = {}
            for _ in range(40):
                nested = {"n": nested}
            with pytest.raises(ScriptError, match=r"^convert_test.echo: parameters: nested "
                                                  r"deeper than 32 levels$"):
                await runner.call("convert_test.echo", nested)


async def test_errors_answer_as_the_spec_words_them(tmp_path: Path) -> None:
    async with bare_host(tmp_path / "store") as (host, _):
        runner = ScriptRunner(host, [CONVERT])
        async with running(runner):
            for rpc_name, error in [
                    ("foo.bar", "unknown script 'foo'"),
                    ("convert_test.bar", "unknown function 'convert_test.bar'"),
                    ("convert_test.wsInit", "unknown function 'convert_test.wsInit'"),
                    ("convert_test.wsStop", "unknown function 'convert_test.wsStop'"),
                    ("convert_test._private", "unknown function 'convert_test._private'"),
                    ("convert_test.saved", "unknown function 'convert_test.saved'"),
                    ("convert_test", "unknown function 'convert_test'"),
                    ("convert_test.fails", "convert_test.fails: boom"),
                    ("convert_test.fails_here",
                     "convert_test.fails_here: convert test.lua:21: boom")]:
                with pytest.raises(ScriptError) as refused:
                    await runner.call(rpc_name, {})
                assert str(refused.value) == error
            # Two Lua errors so far; a third within 60 s disables the script.
            with pytest.raises(ScriptError):
                await runner.call("convert_test.fails", {})
            with pytest.raises(ScriptError, match=r"^convert_test: script is disabled$"):
                await runner.call("convert_test.echo", {})


async def test_saved_data_survives_a_restart_of_the_store_and_the_runner(tmp_path: Path) -> None:
    store = tmp_path / "store"
    async with bare_host(store) as (host, _):
        runner = ScriptRunner(host, [CONVERT])
        async with running(runner):
            assert await runner.call("convert_test.count", {}) == 1
            assert await runner.call("convert_test.count", {}) == 2
            assert await runner.call("convert_test.bad_save", {"key": ""}) == (
                "wd.save: key must be a string of 1..64 characters, got ''")
            assert await runner.call("convert_test.bad_save", {"key": "k" * 65}) == (
                f"wd.save: key must be a string of 1..64 characters, got '{'k' * 65}'")
            assert await runner.call("convert_test.bad_save", {"key": "k", "nested": True}) == (
                "wd.save: value must be nil, a boolean, a number, a string or a flat table of "
                "those, got table")
            too_big = await runner.call("convert_test.bad_save", {"key": "k"})
            assert isinstance(too_big, str)
            assert too_big.startswith("wd.save: saved data would take ")
            assert too_big.endswith(" bytes, more than 64 KB per script")
    async with bare_host(store) as (host, _):
        runner = ScriptRunner(host, [CONVERT])
        async with running(runner):
            assert await runner.call("convert_test.loaded", {}) == {
                "calls": 2, "list": [1, "two", True], "flat": {"a": 1.5, "b": "x"}}
            assert await runner.call("convert_test.count", {}) == 3
            await runner.call("convert_test.forget", {})
    async with bare_host(store) as (host, _):
        runner = ScriptRunner(host, [CONVERT])
        async with running(runner):
            assert await runner.call("convert_test.loaded", {}) == {"calls": 3}
    reader = await Log.open(store, read_only=True)
    try:
        events = reader.journal(kinds=["scriptdata"]).column("body").to_pylist()
    finally:
        await reader.close()
    assert json.loads(events[-1]) == {"script": "convert test.lua", "data": {"calls": 3}}


WD_ERRORS = ScriptSource(file="wd_errors.lua", source=b"""
function tail() return wd.get("nowhere", 1) end
function kept()
  local value = wd.get("nowhere", 1)
  return value
end
function tail_every() return wd.every(0.1, tail) end
""")


async def test_a_wd_error_names_the_script_line_never_the_sandbox(tmp_path: Path) -> None:
    """`wd` errors are positioned at the script's call; a tail call (`return wd.get(...)`)
    leaves no frame of the script, and the error then goes without a position rather than
    with a line of the sandbox's own code."""
    async with bare_host(tmp_path / "store") as (host, _):
        runner = ScriptRunner(host, [WD_ERRORS])
        async with running(runner):
            for function, error in [
                    ("kept", "wd_errors.kept: wd_errors.lua:4: wd.get: unknown device "
                             "'nowhere'"),
                    ("tail", "wd_errors.tail: wd.get: unknown device 'nowhere'"),
                    ("tail_every", "wd_errors.tail_every: wd.every: seconds must be a number "
                                   "in 0.5..86400, got 0.1")]:
                with pytest.raises(ScriptError) as refused:
                    await runner.call(f"wd_errors.{function}", {})
                assert str(refused.value) == error


async def test_an_error_that_is_no_string_is_named_by_its_type(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`error({code = 1})` or `error()` from a script: the answer and the log line say what was
    raised, as the Lua interpreter does, rather than an empty message."""
    odd = ScriptSource(file="odd.lua", source=b"""header = { name = "odd" }
function table_error() error({ code = 1 }) end
function nil_error() error() end
function caught() local ok, e = pcall(error, { code = 7 }) return e.code end
""")
    caplog.set_level(logging.WARNING, "sunpm.script.odd")
    async with bare_host(tmp_path / "store") as (host, _):
        runner = ScriptRunner(host, [odd])
        async with running(runner):
            # A script catching its own table error still gets the table.
            assert await runner.call("odd.caught", {}) == 7
            for function, kind in [("table_error", "table"), ("nil_error", "nil")]:
                with pytest.raises(ScriptError) as refused:
                    await runner.call(f"odd.{function}", {})
                assert str(refused.value) == f"odd.{function}: (error object is a {kind} value)"
    assert caplog.messages == ["table_error failed: (error object is a table value)",
                               "nil_error failed: (error object is a nil value)"]


async def test_extra_arguments_to_wd_are_ignored_as_lua_ignores_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`wd.now(1)`, `wd.load("k", 2)`: Lua drops extra arguments to its own functions, and so
    does `wd`, rather than answering an internal error with a Python traceback in the log."""
    extra = ScriptSource(file="extra.lua", source=b"""header = { name = "extra" }
function go()
  wd.save("k", 5, "extra")
  return { now = type(wd.now(1, 2)), k = wd.load("k", 2), n = #wd.devices("x") }
end
""")
    caplog.set_level(logging.WARNING)
    async with bare_host(tmp_path / "store") as (host, _):
        runner = ScriptRunner(host, [extra])
        async with running(runner):
            assert await runner.call("extra.go", {}) == {"now": "number", "k": 5, "n": 0}
    assert caplog.records == []


_PARAMETERS_CHILD = r'''
from pipeline.scripts.sandbox import LuaState, Limits
state = LuaState("p.lua", {}, Limits())
state.run_chunk(b"function n(p) return #p.list end")
# 300,000 empty objects: 900 KB of JSON, some 30 MB as Lua tables.
for parameters in ({"list": [{}] * 300_000}, {"list": ["x" * 1000] * 20_000}):
    try:
        state.to_lua(parameters)
    except ValueError as err:
        print("refused:", err)
print("answer:", state.call("n", state.to_lua({"list": [1] * 1000}))[1])
# A script holding most of its memory: parameters that do not fit are refused too.
state.run_chunk(b"hold = {} for i = 1, 13 do hold[i] = string.rep(string.char(64 + i), 2^20) end")
try:
    state.to_lua({f"k{i}": i for i in range(80_000)})
except ValueError as err:
    print("refused:", err)
print("answer:", state.call("n", state.to_lua({"list": [1, 2]}))[1])
'''


def test_parameters_larger_than_the_script_memory_are_refused_not_a_crash() -> None:
    """Parameters are made Lua tables outside any Lua call, where running out of the script's
    memory is a Lua panic that aborts the whole process: they are refused first."""
    child = subprocess.run([sys.executable, "-c", _PARAMETERS_CHILD], capture_output=True,
                           text=True, timeout=120, check=False)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.splitlines() == [
        "refused: too large for the script's memory (16 MB)",
        "refused: too large for the script's memory (16 MB)",
        "answer: 1000",
        "refused: too large for the script's memory (16 MB)",
        "answer: 2"]
