"""Configuration changes from the web UI: validated whole by `config`, applied all or nothing.

A form builds an `Edit`: the new bytes of the files it changes and `locate`, which names the form
field a problem of `config` is about (None: a problem elsewhere). `ConfigEditor.save` runs
`config.check_site_change` on the whole site, the edit laid over the configuration folder (read
in place, nothing copied); it applies the files (`exporters.session.apply_config_files`: staged
`.new` files, a marker, renames, rolled forward after a crash) only when nothing blocks:

- an error anywhere (the site would not load);
- a warning on a field the form wrote that a value was replaced or left out: a file may fall
  back to a default for a bad value, a form may not (the installer would save something other
  than what they typed).

A warning that the text is used as written (`config.errors.kept_as_written`: two rows of one
Modbus unit) refuses nothing: the save goes through. The verdict carries the warnings of the
files the edit writes that refuse nothing, to be shown.

The running gateway's configuration watch then loads the new site (docs/behaviour.md §4.1: a
local change gives a server-1 session 60 s later).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from config import check_site_change, parse_daq, render_daq
from config.decimal_text import read_integer
from config.errors import Problem, Severity, kept_as_written
from config.masking import masked
from config.model import Daq, Device
from exporters.session.config_apply import apply_config_files
from fsio import fsync_dir
from pipeline.service.config_edit import config_lock

Locate = Callable[[Problem], str | None]


def _nowhere(problem: Problem) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class Edit:
    """New contents of some configuration files (tree paths: `CONFIG/<uid>_daq.csv`, `DEF/x`)."""

    files: Mapping[str, bytes]
    locate: Locate = _nowhere


@dataclass(frozen=True, slots=True)
class Verdict:
    """What `config` said of an edit: `blocking` the problems that refuse it, `fields` their
    messages per form field, `others` the blocking problems no field of the form holds,
    `warnings` those that refuse nothing, shown beside the outcome."""

    blocking: tuple[Problem, ...] = ()
    fields: Mapping[str, list[str]] = field(default_factory=dict)
    others: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.blocking and not self.fields

    def saved_json(self) -> dict[str, object]:
        """What a save's answer carries besides what was saved: its warnings, as lines."""
        return {"warnings": [str(p) for p in self.warnings]}

    def json(self) -> dict[str, object]:
        return {"fields": dict(self.fields),
                "problems": [problem_json(p) for p in self.blocking],
                "warnings": [str(p) for p in self.warnings]}


def problem_json(problem: Problem) -> dict[str, object]:
    # A secret's value is hidden here as in every problem line: passwords never reach the browser.
    return {"file": problem.file, "line": problem.line, "field": problem.field,
            "message": masked(problem.field, problem.message),
            "severity": problem.severity.value, "text": str(problem)}


#: What a file's loader does with a bad value (docs/formats.md §1.2). A form refuses the save
#: instead, so beside a field "; default UTC used" would tell the installer the wrong story.
_CONSEQUENCE: Final = re.compile(r"; (default .* used|file rejected)$")


def _field_message(problem: Problem) -> str:
    return _CONSEQUENCE.sub("", masked(problem.field, problem.message))


def judge(problems: list[Problem], edit: Edit) -> Verdict:
    blocking: list[Problem] = []
    fields: dict[str, list[str]] = {}
    others: list[Problem] = []
    warnings: list[Problem] = []
    written = {rel.rpartition("/")[2] for rel in edit.files}
    for problem in problems:
        # Refused as any warning on a field, a row copied on purpose (the unit polled twice)
        # could not be saved from the form at all.
        where = None if kept_as_written(problem) else edit.locate(problem)
        if where is not None:
            fields.setdefault(where, []).append(_field_message(problem))
            blocking.append(problem)
        elif problem.severity is Severity.ERROR:
            others.append(problem)
            blocking.append(problem)
        elif problem.file in written:
            warnings.append(problem)
    return Verdict(blocking=tuple(blocking), fields=fields, others=tuple(others),
                   warnings=tuple(warnings))


class ConfigEditor:
    """Validates and applies edits of one configuration folder; one save at a time."""

    def __init__(self, config_dir: Path, uid: str, lock: threading.Lock | None = None) -> None:
        self.config_dir = config_dir
        self.uid = uid
        # Shared with the discovery import and the script uploads of the same folder.
        self._lock = config_lock(config_dir)
        # The gateway's: it never reads the folder while a change is half applied.
        self._folder_lock = lock or threading.Lock()

    def config_file(self, suffix: str) -> tuple[str, bytes]:
        """`CONFIG/<uid>_<suffix>` as a server session mirrors it (`_sci.ini` for a missing
        `_scl.ini`; empty when absent), read alone (blocking): a page needs one file, not every
        definition and script of the tree (`local_config_files`, read whole at each page)."""
        rel = f"CONFIG/{self.uid}_{suffix}"
        path = self.config_dir / rel
        if suffix == "scl.ini" and not path.is_file():
            path = path.with_name(f"{self.uid}_sci.ini")
        return rel, path.read_bytes() if path.is_file() else b""

    def check(self, edit: Edit) -> Verdict:
        """What `config` says of the site the edit would give (blocking)."""
        return judge(self.problems(edit), edit)

    def problems(self, edit: Edit) -> list[Problem]:
        """Every problem, warnings included, of the site the edit would give (blocking)."""
        return check_site_change(self.config_dir, edit.files, self.uid)

    async def save(self, edit: Edit) -> Verdict:
        """Check the edit and, when nothing blocks, apply it whole."""
        async with self._lock:
            verdict = await asyncio.to_thread(self.check, edit)
            if verdict.ok:
                await asyncio.to_thread(self._apply, edit)
            return verdict

    def _apply(self, edit: Edit) -> None:
        with self._folder_lock:
            apply_config_files(self.config_dir, dict(edit.files))

    async def remove(self, rel: str) -> None:
        """Delete a file of the tree that nothing uses (the caller checked), durably."""
        def unlink() -> None:
            with self._folder_lock:
                target = self.config_dir / rel
                target.unlink(missing_ok=True)
                fsync_dir(target.parent)

        async with self._lock:
            await asyncio.to_thread(unlink)


# ----------------------------------------------------------------------------- daq.csv rows

#: The daq.csv device columns (docs/formats.md §6) as the form and the JSON API name them.
DEVICE_FIELDS: Final = (
    ("index", "index"), ("interface", "interface"), ("name", "name"), ("address", "address"),
    ("acqPeriod(s)", "acqPeriodS"), ("timeout(ms)", "timeoutMs"),
    ("serialNumber", "serialNumber"), ("parameters", "parameters"), ("category", "category"),
    ("model", "model"), ("defFile", "defFile"))
FIELD_OF_COLUMN: Final = dict(DEVICE_FIELDS)
#: A form may not put these in a daq.csv field: they would split the row or the file.
_FORBIDDEN: Final = (";", "\r", "\n")


def device_values(device: Device) -> dict[str, str]:
    """A daq.csv row as the form's texts."""
    special = device.index in ("IO", "TIC1")
    return {"index": device.index, "interface": device.interface, "name": device.name,
            "address": "" if device.address is None else str(device.address),
            "acqPeriodS": str(device.acq_period_s),
            "timeoutMs": "" if special else str(device.timeout_ms),
            "serialNumber": device.serial_number, "parameters": device.parameters,
            "category": device.category, "model": device.model, "defFile": device.def_file}


def canonical_index(text: str) -> str:
    """A device index as daq.csv reads it (docs/formats.md §1.1: `007` is device 7, `io` the
    I/O), the text a form's row is written with and answered with. Kept as typed, `007` was
    saved, answered and offered in the list's links as `007`, which named no device."""
    stripped = text.strip()
    if stripped.upper() in ("IO", "TIC1"):
        return stripped.upper()
    value = read_integer(stripped, max_digits=5)
    return str(value) if value is not None and 0 <= value <= 65535 else stripped


def text_problems(values: Mapping[str, str]) -> dict[str, list[str]]:
    """What the file format cannot hold at all (checked before `config` sees the row)."""
    problems = {key: ["may not contain ';' or a line break (daq.csv separators)"]
                for _, key in DEVICE_FIELDS if any(c in values.get(key, "") for c in _FORBIDDEN)}
    if not values.get("index", "").strip():
        # daq.csv skips a row of empty fields as a blank line: without this, an empty form
        # would be "saved" as nothing (added) or would delete the device it replaces.
        problems.setdefault("index", []).append("missing (0..65535, IO or TIC1)")
    return problems


def daq_with_row(daq_name: str, current: bytes, *, replace: str | None,
                 values: Mapping[str, str] | None) -> Edit:
    """daq.csv with the device `replace` (None: none) taken out and, when `values` is given, a
    row of those texts in its place (or last); `locate` maps the new row's problems to its
    fields. The other rows are rewritten canonically from the file as parsed."""
    daq = parse_daq(current, daq_name).value
    kept = [d for d in daq.devices if d.index != replace]
    position = next((k for k, d in enumerate(daq.devices) if d.index == replace), len(kept))
    lines = render_daq(replace_devices(daq, kept)).decode().splitlines()
    header = ";".join(column for column, _ in DEVICE_FIELDS)
    row_line: int | None = None
    if values is not None:
        if header not in lines:
            lines.append(header)
        at = lines.index(header) + 1 + position
        lines.insert(at, ";".join(values.get(key, "").strip() for _, key in DEVICE_FIELDS))
        row_line = at + 1
    data = "".join(line + "\n" for line in lines).encode()
    file_name = daq_name.rpartition("/")[2]

    def locate(problem: Problem) -> str | None:
        if row_line is None or problem.file != file_name or problem.line != row_line:
            return None
        return FIELD_OF_COLUMN.get(problem.field, "row")

    return Edit(files={daq_name: data}, locate=locate)


def replace_devices(daq: Daq, devices: list[Device]) -> Daq:
    return dataclasses.replace(daq, devices=tuple(devices),
                               blocks=daq.blocks | {"devices"})
