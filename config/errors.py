"""Error and problem types shared by every sunpm package.

`config` is the bottom room (it imports nothing of ours), so the root of the exception tree lives
here and every other package derives its own error from `SunpmError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from config.masking import masked


class SunpmError(Exception):
    """Root of every error sunpm raises on purpose; `str()` is one line a user can act on."""


class Severity(StrEnum):
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One finding about a configuration file, in the one-line form of docs/formats.md §1.2.

    `message` already ends with what was done: `; default 600 used`, `; file rejected`,
    `; replaced by a space`.
    """

    file: str
    line: int | None
    field: str
    message: str
    severity: Severity

    def __str__(self) -> str:
        """The line as shown anywhere (the CLI, the gateway's log, which servers receive, the
        web UI, command results): the value of a key that looks like a secret, and the password
        of a URL, are `***` (`MODEM_Pin: '***' is not 4..8 digits; default (empty) used`)."""
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        if self.field == "...":  # the problems only counted (docs/behaviour.md §4.5)
            return f"{where}: ... {masked(self.field, self.message)}"
        # A problem of a whole directory has no field: `<DIR>: no CONFIG/ folder (...)`.
        if not self.field:
            return f"{where}: {masked(self.field, self.message)}"
        return f"{where}: {self.field}: {masked(self.field, self.message)}"


#: Endings of warnings that change nothing of what the file says (its text is used as
#: written): a form may save what gives one, and shows it. Any other warning says a value was
#: replaced or left out, which a form refuses (the installer would save other than they typed).
KEPT_AS_WRITTEN: Final = ("; taken as written", "; both kept")


def kept_as_written(problem: Problem) -> bool:
    """A warning whose file is used as written (`KEPT_AS_WRITTEN`)."""
    return problem.severity is Severity.WARNING and problem.message.endswith(KEPT_AS_WRITTEN)


class ConfigError(SunpmError):
    """A configuration file (or a set of them) was rejected as a whole.

    Carries every problem found, warnings included, so a caller can report all of them; `str()` is
    the first error's line, followed by a count of the others.
    """

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        errors = [p for p in self.problems if p.severity is Severity.ERROR]
        first = errors[0] if errors else (self.problems[0] if self.problems else None)
        text = str(first) if first is not None else "configuration rejected"
        if len(errors) > 1:
            text += f" (and {len(errors) - 1} more errors)"
        super().__init__(text)

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.WARNING)
