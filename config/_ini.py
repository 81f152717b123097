"""`KEY=VALUE` files (docs/formats.md §1.1): the line reader shared by config, var and scl files."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from config._text import Findings, decode, split_lines

#: `<n>` of at most 9 significant digits: a longer one is a malformed key, never converted.
_INDEXED_KEY: Final = re.compile(r"(?P<family>[A-Za-z0-9_]+)\[0*(?P<n>[0-9]{1,9})\]")


@dataclass(frozen=True, slots=True)
class IniLine:
    """One line as read: `key` is None for blank and comment lines; `text` is kept verbatim."""

    line: int
    text: str
    key: str | None = None
    value: str = ""


def read_ini(data: bytes, findings: Findings,
             aliases: dict[str, str] | None = None) -> list[IniLine]:
    """Every line of the file; problems (no `=`, repeated key) go to `findings`.

    `aliases` maps a spelling to its key (`FTP2-HeaderOption`): the line keeps its text.
    """
    text = decode(data, findings, cp1252_fallback=False)
    if text is None:
        return []
    lines: list[IniLine] = []
    first_at: dict[str, int] = {}
    for number, raw in enumerate(split_lines(text), start=1):
        stripped = raw.strip(" \t")
        if not stripped or stripped[0] in "#;":
            lines.append(IniLine(number, raw))
            continue
        key, sep, value = stripped.partition("=")
        key = key.strip(" \t")
        if not sep:
            # A unit's file has no sections: one pasted from a Windows .ini says so, not only
            # that its line holds no '='.
            section = stripped.startswith("[") and stripped.endswith("]")
            findings.error(number, "line", f"'{stripped}' is a section header; these files have "
                                           "no sections (KEY=VALUE lines only)" if section
                           else "no '='")
            continue
        if not key:
            findings.error(number, "line", "no key before '='")
            continue
        key = (aliases or {}).get(key, key)
        if key in first_at:
            findings.error(number, key, f"repeated (first at line {first_at[key]})")
            continue
        first_at[key] = number
        lines.append(IniLine(number, raw, key, value.strip(" \t")))
    return lines


def indexed_key(key: str) -> tuple[str, int] | None:
    """(`SCHEDULE_Params`, 3) for `SCHEDULE_Params[3]`; None when the key has another form."""
    match = _INDEXED_KEY.fullmatch(key)
    if match is None:
        return None
    return match["family"], int(match["n"])


def placed(other: Sequence[IniLine],
           families: Sequence[Sequence[tuple[int | None, str]]]) -> list[tuple[int, int, str]]:
    """The lines of a file of entries renumbered by the writer (var.ini, scl.ini), in the order
    written, each as `(family, k, text)` (family -1 for the other lines): every other line where
    it was read; each family's entries `(line read, text)`, in order, at the lines its entries
    were read from, those past them after its last, a family read from nowhere at the end (in
    family order). So a file whose entries are written as the writer writes them reads and
    writes back the same bytes: a trailing blank line or a comment below the entries stays
    there."""
    keyed: list[tuple[float, int, int, str]] = [(ln.line, -1, 0, ln.text) for ln in other]
    for rank, entries in enumerate(families):
        slots = sorted(line for line, _ in entries if line is not None)
        for k, (_, text) in enumerate(entries):
            at: float = slots[k] if k < len(slots) else slots[-1] if slots else math.inf
            keyed.append((at, rank, k, text))
    keyed.sort(key=lambda p: p[:3])
    return [(rank, k, text) for _, rank, k, text in keyed]


def placed_lines(other: Sequence[IniLine],
                 families: Sequence[Sequence[tuple[int | None, str]]]) -> bytes:
    """`placed`, as the file's bytes."""
    return "".join(text + "\n" for _, _, text in placed(other, families)).encode("utf-8")
