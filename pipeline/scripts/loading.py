"""From scl.ini to script sources, and the checks of a script's `header` (docs/behaviour.md §9.1).

Every problem is a `config.errors.Problem` naming file, line and field, in the form of
docs/formats.md §1.2, ending with what was done (`; not loaded`):

    WPM00BDE4_scl.ini:18: SCRIPT_File[17]: more than 16 scripts; not loaded
    big.lua: file: 300000 bytes, more than 262144; not loaded
    broken.lua:3: syntax: unexpected symbol near '='; not loaded
    limit.lua:1: header.name: 'sunpm' is reserved; not loaded
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from config.errors import Problem, Severity
from config.scl_ini import ScriptList

MAX_SCRIPTS: Final = 16
MAX_SCRIPT_BYTES: Final = 256 * 1024
NAME: Final = re.compile(r"[A-Za-z0-9_]{1,32}")
_HEADER_LINE: Final = re.compile(rb"^[ \t]*header[ \t]*=", re.MULTILINE)
NOT_LOADED: Final = "not loaded"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScriptSource:
    """A script listed in scl.ini, with its bytes."""

    file: str            # `exportlimit.lua`, as listed
    source: bytes

    @property
    def default_name(self) -> str:
        """The RPC name when `header.name` is missing: the file name without `.lua`, other
        characters than `[A-Za-z0-9_]` as `_`, at most 32 (docs/spec-notes.md)."""
        stem = self.file.removesuffix(".lua")
        return re.sub(r"[^A-Za-z0-9_]", "_", stem)[:32]

    @property
    def header_line(self) -> int | None:
        """The line of the first `header =` assignment, for header problems."""
        match = _HEADER_LINE.search(self.source)
        return self.source.count(b"\n", 0, match.start()) + 1 if match else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    name: str
    label: str
    version: str


def problem(file: str, line: int | None, field: str, message: str) -> Problem:
    return Problem(file=file, line=line, field=field, message=f"{message}; {NOT_LOADED}",
                   severity=Severity.ERROR)


def script_sources(scripts: ScriptList, list_file: str,
                   files: Mapping[str, bytes]) -> tuple[list[ScriptSource], list[Problem]]:
    """The scripts of scl.ini (`list_file` names it in problems) whose bytes are in `files`
    (`SCRIPT/<file>` -> bytes, as `Site.loaded`): at most 16, each at most 256 KB, text."""
    sources: list[ScriptSource] = []
    problems: list[Problem] = []
    for entry in scripts.scripts:
        field = f"SCRIPT_File[{entry.n}]"
        if len(sources) >= MAX_SCRIPTS:
            problems.append(problem(list_file, entry.line, field,
                                    f"more than {MAX_SCRIPTS} scripts"))
            continue
        data = files.get(f"SCRIPT/{entry.file}")
        if data is None:
            problems.append(problem(list_file, entry.line, field,
                                    f"'{entry.file}' is missing from /SCRIPT"))
            continue
        if len(data) > MAX_SCRIPT_BYTES:
            problems.append(problem(entry.file, None, "file",
                                    f"{len(data)} bytes, more than {MAX_SCRIPT_BYTES}"))
            continue
        if data.startswith(b"\x1bLua"):
            problems.append(problem(entry.file, None, "file",
                                    "precompiled Lua bytecode is refused; send the source"))
            continue
        sources.append(ScriptSource(file=entry.file, source=data))
    return sources, problems


def site_scripts(site_scripts: ScriptList, uid: str,
                 loaded: Mapping[str, bytes]) -> tuple[list[ScriptSource], list[Problem]]:
    """`script_sources` of a loaded `config.Site` (`site.scripts`, `site.uid`,
    `site.loaded`): the list file is `<uid>_scl.ini`, else `<uid>_sci.ini`."""
    list_file = f"{uid}_scl.ini"
    if f"CONFIG/{list_file}" not in loaded and f"CONFIG/{uid}_sci.ini" in loaded:
        list_file = f"{uid}_sci.ini"
    return script_sources(site_scripts, list_file, loaded)


def check_header(source: ScriptSource, header: object, taken: Sequence[str]) -> Header:
    """`header = {version, label, name}` read after the chunk ran (None when absent); raises
    `HeaderProblem` naming `header.<field>`. `taken`: names of scripts already loaded."""
    line = source.header_line
    fields: dict[str, object] = {}
    if header is not None:
        if not isinstance(header, Mapping):
            raise HeaderProblem(problem(source.file, line, "header",
                                        "must be a table {version, label, name}"))
        fields = dict(header)
    name_value = fields.get("name")
    if name_value is None:
        name = source.default_name
        where = "header.name (from the file name)"
    elif isinstance(name_value, str):
        name, where = name_value, "header.name"
    else:
        raise HeaderProblem(problem(source.file, line, "header.name", "must be a string"))
    if not NAME.fullmatch(name):
        raise HeaderProblem(problem(source.file, line, where,
                                    f"'{name}' must be 1..32 of A-Z a-z 0-9 _"))
    if name.lower() == "sunpm":
        raise HeaderProblem(problem(source.file, line, where,
                                    f"'{name}' is reserved for the built-in commands"))
    if name in taken:
        raise HeaderProblem(problem(source.file, line, where,
                                    f"'{name}' is already the name of another script"))
    label = fields.get("label")
    if label is not None and not isinstance(label, str):
        raise HeaderProblem(problem(source.file, line, "header.label", "must be a string"))
    version = fields.get("version")
    if version is not None and (isinstance(version, bool)
                                or not isinstance(version, (str, int, float))):
        raise HeaderProblem(problem(source.file, line, "header.version",
                                    "must be a number or a string"))
    return Header(name=name, label=label or "", version="" if version is None else str(version))


class HeaderProblem(Exception):
    def __init__(self, found: Problem) -> None:
        super().__init__(str(found))
        self.problem = found
