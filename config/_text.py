"""Text rules shared by every configuration file (docs/formats.md §1.1, §1.2).

Decoding, line splitting, the `;` field splitter with its quoting rules, number syntax, and the
collector that turns findings into `Problem`s in the one-line form the spec fixes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Final, NamedTuple

from config.decimal_text import DECIMAL_SYNTAX, INTEGER_SYNTAX
from config.errors import ConfigError, Problem, Severity
from config.masking import url_passwords_masked

_UTF8_BOM: Final = b"\xef\xbb\xbf"
_UTF16_BOMS: Final = (b"\xff\xfe", b"\xfe\xff")
#: Bytes Windows-1252 leaves undefined: a file holding one is not a spreadsheet export.
_CP1252_UNDEFINED: Final = frozenset(b"\x81\x8d\x8f\x90\x9d")
_LINE_END: Final = re.compile(r"\r\n|\r|\n")
#: Significant digits past which an integer is out of every range a file uses (the largest is
#: 2147483647): the text is never converted, as Python refuses `int()` of over 4,300 digits.
MAX_INT_DIGITS: Final = 18
#: A quoted value in a problem is cut to this many characters (a line of megabytes must still
#: give a one-line message a person can read).
SHOWN_MAX: Final = 40
_QUOTED: Final = re.compile(r"'([^'\n]*)'")
#: One way only to match each text (`[0-9]+\.?[0-9]*` split a run of digits every way before
#: failing: seconds for a field of 10,000 digits and a letter, hours for a megabyte).
_DECIMAL: Final = DECIMAL_SYNTAX
_INTEGER: Final = INTEGER_SYNTAX


#: docs/behaviour.md §4.5: validation reports at most 1,000 problems per file, then
#: `... and <n> more`, so a file of millions of bad lines cannot fill memory with them.
MAX_PROBLEMS: Final = 1000


@dataclass(slots=True)
class Findings:
    """Problems of one file, collected in the order found (the first `MAX_PROBLEMS`, the rest
    counted); `rejected` once any is an error."""

    file: str
    problems: list[Problem] = field(default_factory=list)
    more: int = 0
    _rejected: bool = False

    def _full(self, severity: Severity) -> bool:
        """Past the cap: the problem is only counted (and not even built)."""
        if severity is Severity.ERROR:
            self._rejected = True
        if len(self.problems) < MAX_PROBLEMS:
            return False
        self.more += 1
        return True

    def warn(self, line: int | None, fld: str, message: str) -> None:
        if not self._full(Severity.WARNING):
            self.problems.append(Problem(file=self.file, line=line, field=shown(fld, 80),
                                         message=shown_values(message),
                                         severity=Severity.WARNING))

    def default(self, line: int | None, fld: str, problem: str, default: str) -> None:
        """A bad value replaced by its default (docs/formats.md §1.2)."""
        self.warn(line, fld, f"{problem}; default {default or '(empty)'} used")

    def error(self, line: int | None, fld: str, problem: str) -> None:
        if not self._full(Severity.ERROR):
            self.problems.append(Problem(file=self.file, line=line, field=shown(fld, 80),
                                         message=f"{shown_values(problem)}; file rejected",
                                         severity=Severity.ERROR))

    @property
    def rejected(self) -> bool:
        return self._rejected

    @property
    def full(self) -> bool:
        """Past the cap: a problem added now is only counted, so its message need not be
        worked out (a hint for a misspelt key costs a hundred edit distances)."""
        return len(self.problems) >= MAX_PROBLEMS

    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.reported() if p.severity is Severity.WARNING)

    def reported(self) -> list[Problem]:
        """The problems in line order, then `... and <n> more` when some were only counted."""
        listed = sorted_problems(self.problems)
        if self.more:
            listed.append(Problem(file=self.file, line=None, field="...",
                                 message=f"and {self.more} more",
                                 severity=Severity.ERROR if self._rejected else Severity.WARNING))
        return listed

    def raise_if_rejected(self) -> None:
        if self.rejected:
            raise ConfigError(self.reported())


def _escaped(text: str) -> str:
    """Control characters as `\\x00`: a NUL or an escape sequence of a file must not reach a
    terminal or a log line raw."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else f"\\x{ord(ch):02x}" for ch in text)


def shown(text: str, limit: int = SHOWN_MAX) -> str:
    """`text` as a problem quotes it: the password of a URL as `***` (cut, the `@` that marks
    it could be lost, and the password printed), cut to `limit` characters with `...`, control
    characters escaped."""
    text = url_passwords_masked(text)
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return _escaped(text)


def shown_values(message: str) -> str:
    """A problem's message with every `'value'` as `shown` gives it."""
    return _escaped(_QUOTED.sub(lambda m: f"'{shown(m[1])}'", message))


def sorted_problems(problems: list[Problem]) -> list[Problem]:
    """Line order within a file (stable, so findings of one line keep their order)."""
    return sorted(problems, key=lambda p: p.line if p.line is not None else 0)


def _line_of(data: bytes, offset: int) -> int:
    """1-based line of a byte offset, counting LF, CRLF and lone CR as line ends."""
    head = data[:offset]
    return len(_LINE_END.findall(head.decode("latin-1"))) + 1


def decode(data: bytes, findings: Findings, *, cp1252_fallback: bool) -> str | None:
    """The file's text, or None when its encoding rejects it (the error is in `findings`)."""
    if data.startswith(_UTF16_BOMS):
        # Windows Notepad's "Unicode": said as such, the byte alone tells an integrator nothing.
        findings.error(1, "encoding", f"not valid UTF-8 (byte 0x{data[0]:02X}: a UTF-16 file; "
                                      "save it as UTF-8)")
        return None
    data = data.removeprefix(_UTF8_BOM)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = err.start
    problem = f"not valid UTF-8 (byte 0x{data[bad]:02X})"
    line = _line_of(data, bad)
    if not cp1252_fallback or _CP1252_UNDEFINED.intersection(data):
        findings.error(line, "encoding", problem)
        return None
    findings.warn(line, "encoding", f"{problem}; read as Windows-1252")
    return data.decode("cp1252")


def split_lines(text: str) -> list[str]:
    """Lines without their ends; a final line end does not start an empty line."""
    lines = _LINE_END.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _trim(text: str) -> str:
    return text.strip(" \t")


def split_fields(line: str) -> tuple[list[str], list[int]]:
    """Split a `;` line into trimmed fields; also the positions of fields with an unbalanced quote.

    A field starting with `"` runs to the next undoubled `"` and keeps `;` inside it; when the
    quote is left open or text follows it, the field is taken as written (split at every `;`).
    """
    if '"' not in line:
        # No quote, no quoting: the common line, split in one call (a server's 4 MiB
        # definition file is read inside a session).
        return [f.strip(" \t") for f in line.split(";")], []
    fields: list[str] = []
    unbalanced: list[int] = []
    pos, n = 0, len(line)
    while True:
        while pos < n and line[pos] in " \t":
            pos += 1
        if pos < n and line[pos] == '"':
            quoted = _read_quoted(line, pos)
            if quoted is not None:
                value, pos = quoted
                fields.append(value)
                if pos >= n:
                    return fields, unbalanced
                pos += 1  # the `;`
                continue
            unbalanced.append(len(fields))
        end = line.find(";", pos)
        if end < 0:
            fields.append(_trim(line[pos:]))
            return fields, unbalanced
        fields.append(_trim(line[pos:end]))
        pos = end + 1


def _read_quoted(line: str, start: int) -> tuple[str, int] | None:
    """(content, index of the `;` or line end after it), or None when the quoting is unbalanced."""
    out: list[str] = []
    i, n = start + 1, len(line)
    while i < n:
        ch = line[i]
        if ch == '"':
            if i + 1 < n and line[i + 1] == '"':
                out.append('"')
                i += 2
                continue
            j = i + 1
            while j < n and line[j] in " \t":
                j += 1
            if j < n and line[j] != ";":
                return None
            return "".join(out), j
        out.append(ch)
        i += 1
    return None


class CsvRow(NamedTuple):
    """One row as read (a tuple: made for every line of a file, at a third of a dataclass's
    cost)."""

    line: int
    fields: list[str]
    unbalanced: list[int]


def iter_lines(text: str) -> Iterator[str]:
    """`split_lines` one line at a time: a file of millions of lines is never a list of them."""
    start = 0
    if "\r" not in text:
        # LF only, the usual file: found by `find`, three times faster than the pattern.
        while (end := text.find("\n", start)) >= 0:
            yield text[start:end]
            start = end + 1
        if start < len(text):
            yield text[start:]
        return
    for found in _LINE_END.finditer(text):
        yield text[start:found.start()]
        start = found.end()
    if start < len(text):
        yield text[start:]


def csv_rows(text: str, findings: Findings) -> Iterator[CsvRow]:
    """Rows of a `;` file, as they are read: comments, empty lines and lines of only `;` left out.

    A row with no `;` but a `,` or a tab is a separator error of its own line, not rows of one
    odd field (a line pasted from a spreadsheet into a good file); when it is the first row, the
    whole file is taken as written so and reading stops.
    """
    first = True
    for number, raw in enumerate(iter_lines(text), start=1):
        fields, unbalanced = split_fields(raw)
        if fields[0]:
            if fields[0][0] == "#":
                continue
        elif not any(fields):       # empty, blank, or only `;`
            continue
        if len(fields) == 1 and ("," in raw or "\t" in fields[0]):
            used = "','" if "," in raw else "a tab"
            findings.error(number, "separator", f"{used} is used but must be ';' (a spreadsheet "
                           "may have changed it when saving)")
            if first:
                return
            continue
        first = False
        yield CsvRow(number, fields, unbalanced)


#: docs/behaviour.md §4.5: a file name from a configuration file is used only when plain.
NAME_MAX_BYTES: Final = 255


def file_name_problem(name: str) -> str:
    """Why `name` is not a plain file name (`/`, `\\`, NUL or control character, `.`/`..`, over
    255 bytes), "" when it is one; the name is shown cut to 40 characters."""
    shown = name if len(name) <= 40 else name[:37] + "..."
    shown = shown.encode("unicode_escape").decode("ascii")
    if "/" in name or "\\" in name:
        return f"'{shown}' holds a '/' or '\\'; a file name is expected"
    if name in (".", ".."):
        return f"'{shown}' is not a file name"
    # C0, DEL, C1, and the line and paragraph separators: each ends a line for Python's
    # `splitlines`, so a name holding one came back from a list of names as two.
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in "\u2028\u2029" for ch in name):
        return f"'{shown}' holds a control character; a file name is expected"
    if len(name.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES:
        return f"'{shown}' is longer than {NAME_MAX_BYTES} bytes"
    return ""


def csv_field(text: str) -> str:
    """A text value as written into a `;` file: never quoted, `;` CR LF each one space."""
    return text.replace(";", " ").replace("\r", " ").replace("\n", " ")


def replace_controls(text: str) -> tuple[str, int | None]:
    """Control characters (C0, DEL, C1: `\x9b` starts a terminal sequence as `\x1b[` does)
    become spaces, and the text is trimmed again as a field is (a space at either end would be
    lost when the value is written and read back); also the first one's code, None when there
    was none."""
    if text.isprintable():
        return text, None
    first: int | None = None
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if code < 0x20 or 0x7F <= code <= 0x9F:
            if first is None:
                first = code
            out.append(" ")
        else:
            out.append(ch)
    return ("".join(out).strip(" \t") if first is not None else text), first


# ---------------------------------------------------------------------------- numbers


def parse_int(text: str, lo: int, hi: int) -> tuple[int | None, str]:
    """(value, "") or (None, problem) for an ASCII integer in lo..hi."""
    if text.isdigit() and text.isascii() and len(text) <= MAX_INT_DIGITS:
        value = int(text)       # the common case: a short unsigned integer
        if lo <= value <= hi:
            return value, ""
        return None, f"'{text}' is outside {lo}..{hi}"
    if not _INTEGER.fullmatch(text):
        return None, _not_a_number(text, "an integer")
    significant = text.lstrip("-").lstrip("0")
    if len(significant) > MAX_INT_DIGITS:
        return None, f"'{text}' is outside {lo}..{hi}"
    # Leading zeros are allowed, as many as a file holds: never converted either.
    value = int(significant or "0") * (-1 if text.startswith("-") else 1)
    if not lo <= value <= hi:
        return None, f"'{text}' is outside {lo}..{hi}"
    return value, ""


def parse_decimal(text: str, lo: Decimal | None = None,
                  hi: Decimal | None = None) -> tuple[Decimal | None, str]:
    if not _DECIMAL.fullmatch(text):
        return None, _not_a_number(text, "a number")
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid literals
        return None, _not_a_number(text, "a number")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return None, f"'{text}' is outside {lo}..{hi}"
    return value, ""


def _not_a_number(text: str, what: str) -> str:
    if text == "":
        return f"empty, expected {what}"
    hint = " (use '.' as decimal point)" if "," in text else ""
    return f"'{text}' is not {what}{hint}"


def parse_bool(text: str) -> tuple[bool | None, str]:
    if text in ("0", "1"):
        return text == "1", ""
    return None, f"'{text}' is not 0 or 1"
