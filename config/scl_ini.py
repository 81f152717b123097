"""`<uid>_scl.ini` / `_sci.ini` (docs/formats.md §7): the scripts started at boot."""

from __future__ import annotations

from dataclasses import dataclass

from config._ini import IniLine, indexed_key, placed_lines, read_ini
from config._text import Findings, file_name_problem
from config.key_hint import indexed_unknown_key, malformed_key_message


@dataclass(frozen=True, slots=True, kw_only=True)
class ScriptEntry:
    line: int | None
    file: str               # a file in /SCRIPT, ending `.lua`
    n: int = 0              # `<n>` of `SCRIPT_File[<n>]` as read; the writer renumbers


@dataclass(frozen=True, slots=True, kw_only=True)
class ScriptList:
    scripts: tuple[ScriptEntry, ...] = ()
    other_lines: tuple[IniLine, ...] = ()

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(s.file for s in self.scripts)


def parse(data: bytes, file_name: str) -> tuple[ScriptList, Findings]:
    findings = Findings(file_name)
    entries: list[tuple[int, ScriptEntry]] = []
    n_at: dict[int, int] = {}
    name_at: dict[str, int] = {}
    other: list[IniLine] = []
    for ln in read_ini(data, findings):
        if ln.key is None or not ln.key.startswith("SCRIPT"):
            if ln.key is not None:
                findings.warn(ln.line, ln.key, indexed_unknown_key(ln.key, ("SCRIPT_File",)))
            other.append(ln)
            continue
        parsed = indexed_key(ln.key)
        if parsed is None or parsed[0] != "SCRIPT_File":
            findings.error(ln.line, ln.key, malformed_key_message(ln.key, ("SCRIPT_File",)))
            continue
        n = parsed[1]
        if n in n_at:
            findings.error(ln.line, ln.key, f"<n> {n} repeated (first at line {n_at[n]})")
            continue
        n_at[n] = ln.line
        problem = script_name_problem(ln.value)
        if problem:
            findings.error(ln.line, ln.key, problem)
            continue
        if ln.value in name_at:
            findings.error(ln.line, ln.key,
                           f"'{ln.value}' is already listed at line {name_at[ln.value]}")
            continue
        name_at[ln.value] = ln.line
        entries.append((n, ScriptEntry(line=ln.line, file=ln.value, n=n)))
    entries.sort(key=lambda e: e[0])
    return ScriptList(scripts=tuple(e for _, e in entries), other_lines=tuple(other)), findings


def named_scripts(data: bytes, file_name: str) -> list[tuple[int, str]]:
    """`(line, value)` of every `SCRIPT_File[<n>]` line, as written: read as `parse` reads
    lines, judged by nothing (a session fetches what a candidate file names before the set is
    checked whole)."""
    out: list[tuple[int, str]] = []
    for ln in read_ini(data, Findings(file_name)):
        parsed = indexed_key(ln.key) if ln.key is not None else None
        if parsed is not None and parsed[0] == "SCRIPT_File" and ln.value:
            out.append((ln.line, ln.value))
    return out


def script_name_problem(name: str) -> str:
    if not name:
        return "empty, expected a .lua file name"
    if "/" in name or "\\" in name:
        return f"'{name}' holds a '/' or '\\'; a file name in /SCRIPT is expected"
    if not name.endswith(".lua"):
        return f"'{name}' does not end with .lua"
    return file_name_problem(name)


def render(s: ScriptList) -> bytes:
    return placed_lines(s.other_lines, [[(entry.line, f"SCRIPT_File[{n}]={entry.file}")
                                         for n, entry in enumerate(s.scripts)]])
