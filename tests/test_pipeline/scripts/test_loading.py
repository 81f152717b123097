"""From scl.ini to running scripts (docs/behaviour.md §9.1): every load problem names file, line and
field and raises `Script failure`, the other scripts run on; fuzzed scl.ini files and script
sources give our problems, never another exception."""

from __future__ import annotations

import asyncio
import re
import string
from pathlib import Path

import pytest
from _script_plant import bare_host, running
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config import ConfigError, load_site, parse_scl
from config.errors import Problem
from pipeline.scripts import ScriptRunner, ScriptSource, script_sources, site_scripts
from pipeline.scripts.loading import MAX_SCRIPT_BYTES

pytestmark = pytest.mark.usefixtures("no_task_left_behind")

UID = "WPM00BDE4"
SCL = f"{UID}_scl.ini"
GOOD = b'header = { name = "good", label = "Good", version = 2 }\nfunction ping() return "pong" end\n'


def sources_of(scl: bytes, files: dict[str, bytes]) -> tuple[list[ScriptSource], list[Problem]]:
    return script_sources(parse_scl(scl, SCL).value, SCL, files)


def test_scl_entries_become_sources_and_list_problems_name_the_entry() -> None:
    listed = "".join(f"SCRIPT_File[{n}]=s{n}.lua\n" for n in range(19))
    files = {f"SCRIPT/s{n}.lua": b"-- script\n" for n in range(19) if n != 3}
    files["SCRIPT/s5.lua"] = b"x" * (MAX_SCRIPT_BYTES + 1)
    sources, problems = sources_of(b"# scripts\n" + listed.encode(), files)
    assert [s.file for s in sources] == [f"s{n}.lua" for n in range(18) if n not in (3, 5)]
    assert [str(p) for p in problems] == [
        f"{SCL}:5: SCRIPT_File[3]: 's3.lua' is missing from /SCRIPT; not loaded",
        f"s5.lua: file: {MAX_SCRIPT_BYTES + 1} bytes, more than {MAX_SCRIPT_BYTES}; not loaded",
        f"{SCL}:20: SCRIPT_File[18]: more than 16 scripts; not loaded"]


def test_a_site_lists_its_scripts_from_scl_ini(tmp_path: Path) -> None:
    (tmp_path / "CONFIG").mkdir()
    (tmp_path / "SCRIPT").mkdir()
    (tmp_path / "CONFIG" / f"{UID}_config.ini").write_bytes(b"")
    (tmp_path / "CONFIG" / f"{UID}_scl.ini").write_bytes(b"SCRIPT_File[0]=Test script 1.lua\n")
    (tmp_path / "SCRIPT" / "Test script 1.lua").write_bytes(GOOD)
    site = load_site(tmp_path)
    sources, problems = site_scripts(site.scripts, site.uid, site.loaded)
    assert problems == []
    assert [(s.file, s.source, s.default_name) for s in sources] == [
        ("Test script 1.lua", GOOD, "Test_script_1")]
    # A missing script rejects the whole configuration (config's rule, docs/formats.md §7).
    (tmp_path / "SCRIPT" / "Test script 1.lua").unlink()
    with pytest.raises(ConfigError, match=r"_scl.ini:1: SCRIPT_File\[0\]: 'Test script 1.lua' "
                                          "is missing from /SCRIPT"):
        load_site(tmp_path)


BAD = [
    ("syntax.lua", b"local a = 1\nx = = 2\n",
     "syntax.lua:2: syntax: unexpected symbol near '='; not loaded"),
    ("raises.lua", b"\n\nlocal t = nil\nprint(t.x)\n",
     "raises.lua:4: chunk: attempt to index a nil value (local 't'); not loaded"),
    ("reserved.lua", b'-- c\nheader = { name = "SunPM" }\n',
     "reserved.lua:2: header.name: 'SunPM' is reserved for the built-in commands; not loaded"),
    ("badname.lua", b'header = { name = "has space" }\n',
     "badname.lua:1: header.name: 'has space' must be 1..32 of A-Z a-z 0-9 _; not loaded"),
    ("long.lua", b'header = { name = "' + b"n" * 33 + b'" }\n',
     f"long.lua:1: header.name: '{'n' * 33}' must be 1..32 of A-Z a-z 0-9 _; not loaded"),
    ("numname.lua", b"header = { name = 5 }\n",
     "numname.lua:1: header.name: must be a string; not loaded"),
    ("notable.lua", b'\nheader = "x"\n',
     "notable.lua:2: header: must be a table {version, label, name}; not loaded"),
    ("label.lua", b'header = { label = {} }\n',
     "label.lua:1: header.label: must be a string; not loaded"),
    ("twin.lua", b'header = { name = "good" }\n',
     "twin.lua:1: header.name: 'good' is already the name of another script; not loaded"),
    ("sunpm.lua", b"-- no header\n",
     ("sunpm.lua: header.name (from the file name): 'sunpm' is reserved for the built-in "
     "commands; not loaded")),
    ("finalizer.lua", b"\nsetmetatable({}, {__gc = function() while true do end end})\n",
     "finalizer.lua:2: chunk: setmetatable: __gc metamethods are not available; not loaded"),
    ("spin.lua", b"while true do end\n", "spin.lua: chunk: instruction budget exceeded; not loaded"),
]


async def test_load_problems_name_file_line_and_field_and_the_others_run_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sources = [ScriptSource(file="good.lua", source=GOOD)] + \
        [ScriptSource(file=f, source=s) for f, s, _ in BAD]
    async with bare_host(tmp_path / "store") as (host, alarms):
        runner = ScriptRunner(host, sources)
        async with running(runner):
            assert await runner.call("good.ping", {}) == "pong"
            statuses = {s.file: s for s in runner.scripts()}
            assert statuses["good.lua"].enabled
            assert (statuses["good.lua"].label, statuses["good.lua"].version) == ("Good", "2")
            for file, _, expected in BAD:
                assert not statuses[file].enabled
                assert statuses[file].last_error == expected
    # Each in its script's own category (named after the file when the header gives none).
    errors = [(r.name, r.getMessage()) for r in caplog.records
              if r.name.startswith("sunpm.script") and r.levelname == "ERROR"]
    assert [message for _, message in errors] == [expected for _, _, expected in BAD]
    assert errors[0][0] == "sunpm.script.syntax"
    assert [a[0] for a in alarms] == ["Script failure"] * len(BAD)
    assert alarms[0][1] == "syntax"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.text(alphabet=string.printable, max_size=40),
    st.sampled_from(["SCRIPT_File[0]=a.lua", "SCRIPT_File[0]=a.lua", "SCRIPT_File[x]=b.lua",
                     "SCRIPT_File[1]=dir/c.lua", "SCRIPT_File[2]=c.txt", "SCRIPT_Other=1",
                     "SCRIPT_File[3]=", "SCRIPT_File[4]=a.lua", "SCRIPT_File[9]=b.lua"])),
    max_size=25))
def test_fuzzed_scl_ini_gives_sources_or_problems_naming_file_line_and_field(
        lines: list[str]) -> None:
    data = "\n".join(lines).encode()
    files = {"SCRIPT/a.lua": b"-- a\n", "SCRIPT/b.lua": b"\x1bLua bytecode"}
    try:
        parsed = parse_scl(data, SCL)
    except ConfigError as err:
        for found in err.problems:
            assert re.match(rf"^{re.escape(SCL)}:\d+: \S.*: .+", str(found)), str(found)
        return
    sources, problems = script_sources(parsed.value, SCL, files)
    for found in problems:
        assert re.match(rf"^({re.escape(SCL)}:\d+: SCRIPT_File\[\d+\]|b\.lua: file): .+; "
                        "not loaded$", str(found)), str(found)
    assert len(sources) + len(problems) == len(parsed.value.scripts)
    assert all(s.file == "a.lua" for s in sources)


LUA_BITS = st.sampled_from([
    "header = {", "header = { name = ", '"x"', "}", "end", "function f()", "local a =", "1",
    "(", ")", "while true do", "error('e')", "\n", " ", "wd.log('x')", "wd.every(1, f)",
    "wd.save('k', 1)", "header = 5", "return", "..", "[[", "]]", "--", "nil", "x.y = 1"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.lists(LUA_BITS, max_size=30).map(" ".join))
def test_fuzzed_script_sources_load_or_give_a_problem_naming_file_line_and_field(
        text: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    store = tmp_path_factory.mktemp("store")

    async def load() -> list[str]:
        async with bare_host(store) as (host, _):
            runner = ScriptRunner(host, [ScriptSource(file="fuzz.lua", source=text.encode())])
            async with running(runner):
                return [s.last_error for s in runner.scripts() if not s.enabled]

    for error in asyncio.run(load()):
        # Lua quotes the source near a syntax error, line breaks of a long string included
        # (`near '[[ <newline> ]]'`); the LOG file puts each message on one line.
        assert re.match(r"^fuzz\.lua(:\d+)?: (syntax|chunk|header(\.\w+)?"
                        r"( \(from the file name\))?): .+; not loaded$", error, re.DOTALL), \
            error
