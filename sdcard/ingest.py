"""`sunpm ingest DIR OUT`: a server tree's DATA and ALARM files into the fleet dataset.

The information-system side (docs/behaviour.md §12): the WebdynSunPM files of docs/formats.md
§9-§10, ours or a real unit's, read with the definition files of the tree's `DEF/` (names, units,
coefficients; the `def` column is `<sha256 of the file>:<name>`, as the unit's store would have
it) and each uid's `CONFIG/` (time zone, date format, the daq's TIC serial numbers), written to
the layout of `parquet.py`. Files already ingested (same name and bytes, per the manifest
`OUT/_ingested/<uid>.json`) are skipped.

Local times go to UTC with the uid's `NTP_TimeZone` (rows follow UTC order, so a local time
that goes back is the second of an hour repeated at the end of DST). Without a configuration,
the zone is `--tz` (not given: UTC, with a warning) and the date order is the one that puts the
rows before the time in the file's name.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa

from config import parse_config_ini, parse_daq, parse_definition
from config.decimal_text import read_decimal, read_integer
from config.errors import SunpmError
from config.model import Action, DefinitionFile, Protocol, Variable

from .dump import Finding, Level
from .parquet import (
    PARQUET_ALARMS_SCHEMA,
    PARQUET_RECORDS_SCHEMA,
    alarms_path,
    append_value,
    records_path,
    split_by_date,
    write_partition,
)

# `.csv` too: an information system often keeps the files it unzipped.
_DATA_NAME: Final = re.compile(
    r"^(?P<uid>[A-Za-z0-9-]{1,32})_(?P<iface>MODBUS|IO|TIC)(?P<param>_P)?_"
    r"(?P<ts>[0-9]{6}_[0-9]{6})\.csv(\.gz)?$")
_ALARM_NAME: Final = re.compile(
    r"^(?P<uid>[A-Za-z0-9-]{1,32})_AL_(?P<ts>[0-9]{6}_[0-9]{6})\.csv(\.gz)?$")
_GZIP_MAGIC: Final = b"\x1f\x8b"
_TEXT_TYPES: Final = frozenset({"String", "IP", "IPV6", "MAC"})
#: TIC data is text; the gateway records the text that reads as a decimal number as that number
#: too (its index, current and power groups), so `scaled` is queryable as in `sd export-parquet`.
_TIC_NUMBER: Final = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
NS: Final = 1_000_000_000


class IngestError(SunpmError):
    """A file that cannot be read at all."""


@dataclass(slots=True)
class Unit:
    """What the tree says about one uid."""

    uid: str
    zone: ZoneInfo
    euro: bool | None            # None: unknown, guessed per file
    tic_devices: dict[str, str]  # TIC serial number -> daq index


@dataclass(slots=True)
class IngestResult:
    ingested: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    #: Ingested with lines left out: not in the manifest, read again by the next run.
    incomplete: list[Path] = field(default_factory=list)
    #: Not read at all (no gzip or UTF-8 text): read again by the next run.
    unreadable: list[Path] = field(default_factory=list)
    rows: int = 0
    alarms: int = 0
    findings: list[Finding] = field(default_factory=list)


class Definitions:
    """The tree's definition files by name, parsed once."""

    def __init__(self, tree: Path, findings: list[Finding]) -> None:
        self._dir = tree / "DEF"
        self._findings = findings
        self._parsed: dict[str, tuple[str, DefinitionFile] | None] = {}
        self._missing_for: set[tuple[str, Path]] = set()

    def get(self, name: str, user: Path) -> tuple[str, DefinitionFile] | None:
        path = self._dir / name
        if name in self._parsed:
            if self._parsed[name] is None and (name, user) not in self._missing_for:
                # Said for every file that needs it: each such file is read again next time.
                self._missing(path, user)
        else:
            try:
                data = path.read_bytes()
                parsed = parse_definition(data, name)
                self._parsed[name] = (f"{hashlib.sha256(data).hexdigest()}:{name}", parsed.value)
                # A value that fell back to its default (a CoefA of `0,1` read as 1) changes
                # every scaled value of the file: said once, with the file's line.
                self._findings.extend(
                    Finding(Level.WARNING, "definition", path,
                            f"{self._dir / str(problem)} (in its scaled values too)")
                    for problem in parsed.warnings)
            except FileNotFoundError:
                self._missing(path, user)
                self._parsed[name] = None
            except (OSError, SunpmError) as err:
                self._findings.append(Finding(Level.ERROR, "definition", path,
                                              f"{path}: unreadable definition file ({err})"))
                self._parsed[name] = None
        return self._parsed[name]

    def _missing(self, path: Path, user: Path) -> None:
        self._missing_for.add((path.name, user))
        # An ALARM line holds its variable's Index and raw value: only the name is lost.
        lost = ("its alarms are ingested without their variable's name"
                if user.parent.name == "ALARM" else
                "its rows are ingested without names, units or scaled values where the column "
                "header names every field")
        self._findings.append(Finding(Level.ERROR, "definition", path,
                                      f"{user}: definition file {path} is missing; {lost}"))


def _unit(tree: Path, uid: str, tz: str | None, findings: list[Finding]) -> Unit:
    """Time zone, date order and TIC serial numbers from the uid's `config.ini` and `daq.csv`
    alone: the rest of a site (scripts, certificates) may be absent from a server tree.
    `tz`: the zone given for a tree without configuration (None: not given, UTC)."""
    ini_path = tree / "CONFIG" / f"{uid}_config.ini"
    if not ini_path.exists():
        if tz is None:
            # Units keep local times; read as UTC, a plant in Paris is an hour off all
            # winter and nothing would say so.
            findings.append(Finding(Level.WARNING, "config", ini_path,
                                    f"{ini_path}: missing; the times of {uid}'s files are read "
                                    "as UTC (give --tz for the unit's time zone)"))
        return Unit(uid, _zone(tz or "UTC"), None, {})
    try:
        settings = parse_config_ini(ini_path.read_bytes(), ini_path.name).value.settings(uid)
    except (SunpmError, OSError) as err:
        findings.append(Finding(Level.WARNING, "config", ini_path,
                                f"{ini_path}: unreadable ({err}); times read in "
                                f"{tz or 'UTC'}"))
        return Unit(uid, _zone(tz or "UTC"), None, {})
    tic: dict[str, str] = {}
    daq_path = tree / "CONFIG" / f"{uid}_daq.csv"
    try:
        if daq_path.exists():
            daq = parse_daq(daq_path.read_bytes(), daq_path.name).value
            tic = {d.serial_number: d.index for d in daq.devices
                   if d.index.startswith("TIC") and d.serial_number}
    except (SunpmError, OSError) as err:
        findings.append(Finding(Level.WARNING, "config", daq_path,
                                f"{daq_path}: unreadable ({err}); TIC blocks go to TIC1"))
    # A tree is server 1's or server 2's, and each has its own `*_EuroDateFormat`: when the file
    # servers disagree the order is guessed per file (server 1's read a server-2 tree's
    # `05/02/21` as 2005-02-21).
    orders = {s.euro_date_format for s in settings.servers if s.type.is_file_server}
    euro = orders.pop() if len(orders) == 1 else None
    return Unit(uid, _zone(settings.time_zone), euro, tic)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _errors(findings: list[Finding]) -> int:
    return sum(1 for f in findings if f.level is Level.ERROR)


def _manifest_path(out: Path, uid: str) -> Path:
    return out / "_ingested" / f"{uid}.json"


def _load_manifest(out: Path, uid: str, findings: list[Finding]) -> dict[str, str]:
    path = _manifest_path(out, uid)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, OSError) as err:
        data = None
        why = str(err)
    else:
        why = "not an object of file names"
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return data
    # Reading every file again is safe (partitions merge, never double), and rewrites it.
    findings.append(Finding(Level.WARNING, "manifest", path,
                            f"{path}: unreadable ({why}); every file of {uid} is read again"))
    return {}


def ingest(tree: Path, out: Path, *, tz: str | None = None,
           progress: Callable[[int], None] | None = None,
           on_total: Callable[[int], None] | None = None) -> IngestResult:
    from fsio import write_file_durably

    if not tree.is_dir():
        # Worded as every command says it (`sunpm sd inspect`, `config validate`).
        raise IngestError(f"{tree}: {'not a directory' if tree.exists() else 'no such directory'}")
    if not (tree / "DATA").is_dir() and not (tree / "ALARM").is_dir():
        raise IngestError(f"{tree}: not a server tree (no DATA/ or ALARM/ folder)")
    if out.resolve().is_relative_to(tree.resolve()):
        raise IngestError(f"{out}: inside the tree {tree}; the tree is never written to")
    try:
        ZoneInfo(tz or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as err:
        # Not UTC in its place: every time of a tree without configuration would be off.
        raise IngestError(f"time zone {tz!r} is not a known IANA time zone") from err
    result = IngestResult()
    defs = Definitions(tree, result.findings)
    files: list[tuple[Path, re.Match[str]]] = []
    for folder, pattern in (("DATA", _DATA_NAME), ("ALARM", _ALARM_NAME)):
        directory = tree / folder
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            m = pattern.match(path.name)
            if m is None or not path.is_file():
                result.findings.append(Finding(Level.WARNING, "foreign", path,
                                               f"{path}: not a {folder} file name; skipped"))
                continue
            files.append((path, m))
    if on_total is not None:
        on_total(len(files))
    units: dict[str, Unit] = {}
    manifests: dict[str, dict[str, str]] = {}
    # The end of each stream's previous file (uid, interface, `_P`; ALARM): where the window
    # of the next one starts, at the latest (a window without rows has no file).
    stream_end: dict[tuple[str, ...], int] = {}
    for path, m in files:
        uid = m.group("uid")
        file_ts = datetime.strptime(m.group("ts"), "%y%m%d_%H%M%S").replace(tzinfo=UTC)
        stream = ((uid, m.group("iface"), m.group("param") or "") if path.parent.name == "DATA"
                  else (uid, "AL"))
        start_ns = stream_end.get(stream)
        stream_end[stream] = int(file_ts.timestamp()) * NS
        if uid not in units:
            units[uid] = _unit(tree, uid, tz, result.findings)
            manifests[uid] = _load_manifest(out, uid, result.findings)
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        key = f"{path.parent.name}/{path.name}"
        if manifests[uid].get(key) == digest:
            result.skipped.append(path)
        else:
            errors_before = _errors(result.findings)
            try:
                # By its bytes, not its name: a server may have unzipped a `.csv.gz` on its way.
                # A BOM: a plain file saved again by a spreadsheet (docs/formats.md §1.1).
                text = (gzip.decompress(data) if data.startswith(_GZIP_MAGIC) else data
                        ).decode("utf-8-sig")
            except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
                result.findings.append(Finding(Level.ERROR, "unreadable", path,
                                               f"{path}: not a readable gzip or UTF-8 text "
                                               f"({err}); skipped"))
                result.unreadable.append(path)
                if progress is not None:
                    progress(1)
                continue
            if path.parent.name == "DATA":
                table = _data_rows(path, text, units[uid], defs, file_ts, start_ns=start_ns,
                                   interface=m.group("iface"), result=result)
                for device, rows in table.items():
                    for date, part in split_by_date(rows).items():
                        write_partition(records_path(out, uid, device, date), part,
                                        PARQUET_RECORDS_SCHEMA)
                    result.rows += rows.num_rows
            else:
                alarms = _alarm_rows(path, text, units[uid], defs, file_ts, start_ns, result)
                for date, part in split_by_date(alarms).items():
                    write_partition(alarms_path(out, uid, date), part, PARQUET_ALARMS_SCHEMA)
                result.alarms += alarms.num_rows
            result.ingested.append(path)
            if _errors(result.findings) != errors_before:
                result.incomplete.append(path)
            else:
                # Only a file read whole is skipped next time: one with lines left out (its
                # definition missing, ...) is read again once the tree is put right, and its
                # rows already written are rewritten, not doubled.
                manifests[uid][key] = digest
                manifest = _manifest_path(out, uid)
                manifest.parent.mkdir(parents=True, exist_ok=True)
                write_file_durably(manifest, json.dumps(manifests[uid], indent=1,
                                                         sort_keys=True).encode())
        if progress is not None:
            progress(1)
    return result


# ----------------------------------------------------------------------------------- times


class _Clock:
    """Local file times to UTC ns for one file: date order, zone, DST repeats.

    Rows follow UTC order and end before the window's end (the time in the file's name), so a
    block is first read from its last row back: each local time's latest reading that is not
    after the row after it (the last row's: not after the window's end) bounds it. Then it is
    read forwards, each row taking its earliest reading within that bound after the row before
    it, the first row's from the window's start on: the end of the stream's previous file in
    the tree (`start_ns`; None: the tree holds none, the first row takes its bound). Read
    forwards alone, a window that starts inside the repeated hour (hourly sessions that night)
    had every row an hour early, on top of the rows of the window before it; read backwards
    alone, a block that ends in the hour's first pass while its window ends after the second (a
    device that stopped recording an hour before the session) went an hour late.
    """

    def __init__(self, unit: Unit, file_ts: datetime, samples: list[str],
                 start_ns: int | None) -> None:
        self.zone = unit.zone
        self.end_ns = int(file_ts.timestamp()) * NS
        self.start_ns = start_ns
        self.euro = unit.euro if unit.euro is not None else self._guess(samples, file_ts)

    def _guess(self, samples: list[str], file_ts: datetime) -> bool:
        # The rows end before the window's end (the file's name) and within days of it.
        def score(euro: bool) -> float:
            worst = 0.0
            for s in samples:
                try:
                    t = self._naive(s, euro).replace(tzinfo=self.zone)
                except ValueError:
                    return float("inf")
                worst = max(worst, abs((file_ts - t).total_seconds()))
            return worst
        return score(True) < score(False)

    @staticmethod
    def _naive(text: str, euro: bool) -> datetime:
        return datetime.strptime(text, "%d/%m/%y-%H:%M:%S" if euro else "%y/%m/%d-%H:%M:%S")

    def block_times(self, texts: list[str], after: int | None = None) -> list[int | None]:
        """UTC ns of each date text of one block in file order (None: unreadable). `after`: the
        last time of the device's block before this one in the file."""
        readings: list[list[int] | None] = [None] * len(texts)
        for k, text in enumerate(texts):
            try:
                naive = self._naive(text, self.euro)
            except ValueError:
                continue
            readings[k] = sorted({int(naive.replace(tzinfo=self.zone, fold=f).timestamp()) * NS
                                  for f in (0, 1)})
        latest: list[int | None] = [None] * len(texts)
        bound = self.end_ns     # a row at the window's end itself is accepted (other makers)
        for k in range(len(texts) - 1, -1, -1):
            if (ks := readings[k]) is not None:
                fits = [t for t in ks if t <= bound]
                latest[k] = bound = fits[-1] if fits else ks[0]
        out: list[int | None] = [None] * len(texts)
        if after is None and self.start_ns is not None:
            after = self.start_ns - 1
        for k, ks in enumerate(readings):
            last = latest[k]
            if ks is None or last is None:
                continue
            # A row before the start (one committed late, a clock reset) keeps its bound.
            fits = [] if after is None else [t for t in ks if after < t <= last]
            out[k] = after = fits[0] if fits else last
        return out


# ------------------------------------------------------------------------------------ DATA


@dataclass(slots=True)
class _Block:
    device: str
    def_file: str
    def_id: str | None
    definition: DefinitionFile | None
    #: The fields of a data line: each Index, its variable (None: not in the definition file,
    #: another version of it), and whether it is a min;max;mean triple.
    columns: list[tuple[int, Variable | None, bool]] | None = None
    indexes: list[int] | None = None
    #: Data lines whose fields nothing names (no definition file, and no column header or one
    #: that cannot tell the min;max;mean triples apart), and where the first one is.
    unnamed: int = 0
    unnamed_at: str = ""
    #: Lines of a width other than the block's: by width, the first one and how many.
    misfits: dict[int, tuple[str, int]] = field(default_factory=dict)


def _recorded(definition: DefinitionFile, parameters: bool) -> list[Variable]:
    if parameters:
        chosen = [v for v in definition.variables if v.action.is_parameter]
    else:
        chosen = [v for v in definition.variables if v.action.is_polled]
    return sorted(chosen, key=lambda v: v.index)


def _is_text(definition: DefinitionFile, var: Variable) -> bool:
    if definition.protocol is Protocol.TIC:
        return True
    return var.modbus is not None and var.modbus.data_type is not None \
        and var.modbus.data_type.value in _TEXT_TYPES


_LINE_END: Final = re.compile(r"\r\n|\r|\n")
_BLOCK_HEADS: Final = ("DEVICEINDEX", "TypeIO", "SNTIC")


def _lines(text: str) -> list[str]:
    """The file's lines, split at LF, CRLF or a lone CR only (docs/formats.md §1.1): a text
    value may hold any other character, `str.splitlines`' form feeds, U+0085 or U+2028 included,
    and cut its line."""
    lines = _LINE_END.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _data_times(lines: list[str], clock: _Clock) -> dict[int, int | None]:
    """UTC ns of each data line by line number, read block by block (`_Clock.block_times`).

    A file whose stream has no earlier file in the tree is read twice: its window starts at the
    latest at its earliest row, so a block that fits both passes of the repeated DST hour goes
    on from there, as it would from the end of a previous file (a meter that stopped, beside
    one whose rows cross into the second pass)."""
    blocks: list[tuple[str, list[tuple[int, str]]]] = []
    skip_next = False
    for n, line in enumerate(lines):
        head = line.split(";", 1)[0]
        if skip_next:
            skip_next = False
        elif head in _BLOCK_HEADS:
            skip_next = head != "TypeIO"    # the `<Protocol>;<defFile>` or `TypeTIC` line
            # `TypeIO;<defFile>`: the one I/O device, whatever its definition file.
            blocks.append((head if head == "TypeIO" else line, []))
        elif not re.match(r"^[0-9]+$", head):
            if not blocks:
                blocks.append(("", []))
            blocks[-1][1].append((n, head))

    def read() -> dict[int, int | None]:
        times: dict[int, int | None] = {}
        # A device's blocks follow each other (docs/formats.md §9.2: a new one where its fields
        # change): the next one goes on from the last time of the one before.
        last: dict[str, int] = {}
        for device, block in blocks:
            for (n, _), ts in zip(block, clock.block_times([t for _, t in block],
                                                           last.get(device)), strict=True):
                times[n] = ts
                if ts is not None:
                    last[device] = ts
        return times

    times = read()
    if clock.start_ns is None and len(blocks) > 1:
        clock.start_ns = min((t for t in times.values() if t is not None), default=None)
        times = read()
    return times


def _data_rows(path: Path, text: str, unit: Unit, defs: Definitions, file_ts: datetime, *,
               start_ns: int | None, interface: str, result: IngestResult
               ) -> dict[str, pa.Table]:
    parameters = "_P_" in path.name
    lines = _lines(text)
    samples = [ln.split(";", 1)[0] for ln in lines if re.match(r"^[0-9][0-9]/[0-9][0-9]/[0-9][0-9]-", ln)][:50]
    times = _data_times(lines, _Clock(unit, file_ts, samples, start_ns))
    rows: dict[str, dict[str, list[object]]] = {}
    block: _Block | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        fields = line.split(";")
        where = f"{path}:{i + 1}"
        head = fields[0]
        if head in _BLOCK_HEADS:
            _report_unnamed(block, result)
            device, def_line = fields[1] if len(fields) > 1 else "", line
            if head == "DEVICEINDEX" or head == "SNTIC":
                if head == "SNTIC":
                    device = unit.tic_devices.get(device, "TIC1")
                i += 1
                def_line = lines[i] if i < len(lines) else ""
            elif head == "TypeIO":
                device = "IO"
            def_fields = def_line.split(";")
            def_file = def_fields[1] if len(def_fields) > 1 else ""
            found = defs.get(def_file, path) if def_file else None
            block = _Block(device, def_file, None if found is None else found[0],
                           None if found is None else found[1])
            if block.definition is not None:
                block.columns = [(v.index, v, v.action is Action.MIN_MAX_MEAN)
                                 for v in _recorded(block.definition, parameters)]
            i += 1
            continue
        if block is None:
            result.findings.append(Finding(Level.ERROR, "format", path,
                                           f"{where}: a line before any device block; skipped"))
            i += 1
            continue
        if re.match(r"^[0-9]+$", head):
            read = [(x, read_integer(x, max_digits=10)) for x in fields[1:] if x != ""]
            bad = next((x for x, index in read if index is None), None)
            if bad is not None:
                result.findings.append(Finding(
                    Level.ERROR, "format", path,
                    f"{where}: column header: {bad[:40]!r} is not an Index; header not used"))
                i += 1
                continue
            indexes = [index for _, index in read if index is not None]
            block.indexes = indexes
            if block.definition is not None:
                by_index = {v.index: v for v in block.definition.variables}
                unknown = [x for x in indexes if x not in by_index]
                if unknown:
                    # The file was written with another version of the definition (the
                    # server's DEF/ holds a later one): the values still have their Index;
                    # a triple among them makes the lines' width disagree, which is said.
                    result.findings.append(Finding(
                        Level.WARNING, "format", path,
                        f"{where}: Index {', '.join(map(str, unknown))} not in "
                        f"{block.def_file} (written with another version of it?); ingested "
                        "without name, unit or scaled value"))
                block.columns = [
                    (x, by_index.get(x), x in by_index and by_index[x].action is
                     Action.MIN_MAX_MEAN) for x in indexes]
            i += 1
            continue
        ts = times.get(i)
        if ts is None:
            result.findings.append(Finding(Level.ERROR, "format", path,
                                           f"{where}: date {head!r} unreadable; line skipped"))
            i += 1
            continue
        values = fields[1:]
        _append_row(rows.setdefault(block.device, {f.name: [] for f in PARQUET_RECORDS_SCHEMA}),
                    block, ts, values, where, result)
        i += 1
    _report_unnamed(block, result)
    return {device: pa.table(cols, schema=PARQUET_RECORDS_SCHEMA)
            for device, cols in rows.items()}


def _append_row(cols: dict[str, list[object]], block: _Block, ts: int, values: list[str],
                where: str, result: IngestResult) -> None:
    spec: list[tuple[int, Variable | None, bool]]
    if block.columns is not None:
        spec = block.columns
    elif block.indexes is not None and len(block.indexes) == len(values):
        spec = [(x, None, False) for x in block.indexes]
    else:
        block.unnamed += 1
        block.unnamed_at = block.unnamed_at or where
        return
    width = sum(3 if triple else 1 for _, _, triple in spec)
    if width != len(values):
        first, count = block.misfits.get(len(values), (where, 0))
        block.misfits[len(values)] = (first, count + 1)
        return
    k = 0
    for index, var, triple in spec:
        if triple:
            vmin, vmax, field_text = values[k], values[k + 1], values[k + 2]
            k += 3
        else:
            vmin = vmax = ""
            field_text = values[k]
            k += 1
        text_var = var is not None and block.definition is not None \
            and _is_text(block.definition, var)
        tic = block.definition is not None and block.definition.protocol is Protocol.TIC
        if tic:
            raw = _number(field_text.removeprefix("+")) if _TIC_NUMBER.fullmatch(field_text) \
                else None
        else:
            raw = None if text_var else _number(field_text)
        append_value(cols, ts, index, var, raw)
        cols["min"].append(_number(vmin))
        cols["max"].append(_number(vmax))
        if tic:
            # As recorded: the group's text, but none for an empty field (not read) nor for an
            # action-2 mean, which the gateway computed.
            is_text = field_text != "" and not (triple and raw is not None)
        else:
            # An empty field is missing (§9.3), a text variable's too.
            is_text = field_text != "" and (text_var or raw is None)
        cols["text"].append(field_text if is_text else None)
        cols["quality"].append(None)
        cols["definition"].append(block.def_file or None)
        cols["def"].append(block.def_id)


def _report_unnamed(block: _Block | None, result: IngestResult) -> None:
    """One finding for a block's data lines that nothing names, and one for its lines of each
    wrong width, not one a line."""
    if block is None:
        return
    width = None if block.columns is None else sum(
        3 if triple else 1 for _, _, triple in block.columns)
    for fields, (where, count) in block.misfits.items():
        more = f" (and {count - 1} more lines like it in this block)" if count > 1 else ""
        result.findings.append(Finding(
            Level.ERROR, "format", Path(where.rsplit(":", 1)[0]),
            f"{where}: {fields} fields where {block.def_file or 'the header'} gives {width}; "
            f"line skipped{more}"))
    block.misfits = {}
    if not block.unnamed:
        return
    why = ("its column header lists fewer variables than the lines hold fields (min;max;mean "
           "triples are told apart by the definition file)" if block.indexes is not None
           else "no column header")
    result.findings.append(Finding(
        Level.ERROR, "format", Path(block.unnamed_at.rsplit(":", 1)[0]),
        f"{block.unnamed_at}: device {block.device}: {block.unnamed} data lines skipped: no "
        f"definition file {block.def_file or '(none named)'} and {why}"))
    block.unnamed = 0


def _number(text: str) -> float | None:
    """A value's number in the syntax of §1.1, None for any other text: `float()` alone takes
    `1_0.5`, `nan`, `infinity` and full-width digits."""
    number = read_decimal(text)
    return None if number is None else float(number)


# ----------------------------------------------------------------------------------- ALARM


def _alarm_rows(path: Path, text: str, unit: Unit, defs: Definitions, file_ts: datetime,
                start_ns: int | None, result: IngestResult) -> pa.Table:
    lines = _lines(text)
    clock = _Clock(unit, file_ts, [ln.split(";", 1)[0] for ln in lines][:50], start_ns)
    # One block: the alarms of a window in time order, sources mixed.
    times = clock.block_times([ln.split(";", 1)[0] for ln in lines])
    cols: dict[str, list[object]] = {f.name: [] for f in PARQUET_ALARMS_SCHEMA}
    for n, (line, ts) in enumerate(zip(lines, times, strict=True), start=1):
        fields = line.split(";")
        if ts is None:
            result.findings.append(Finding(Level.ERROR, "format", path,
                                           f"{path}:{n}: date {fields[0]!r} unreadable; "
                                           "line skipped"))
            continue
        source = fields[1] if len(fields) > 1 else ""
        row: dict[str, object] = {"time": ts, "source": source}
        if source == "GATEWAY" and len(fields) >= 3:
            row.update(alarm=fields[2], subject=fields[3] if len(fields) > 3 else None,
                       text=";".join(fields[4:]) if len(fields) > 4 else None)
        elif source in ("MODBUS", "IO", "TIC") and len(fields) >= 6 and \
                (var := read_integer(fields[4], max_digits=10)) is not None and var >= 0:
            found = defs.get(fields[2], path)
            name = None
            value = ";".join(fields[5:])
            # A text value (TIC data, String, IP...) is written as is: `1.50` stays `1.50`.
            is_text = source == "TIC"
            if found is not None:
                by_index = {v.index: v for v in found[1].variables}
                name = by_index[var].name if var in by_index else None
                is_text = is_text or (var in by_index and _is_text(found[1], by_index[var]))
            row.update(definition=fields[2], device_name=fields[3], var=var, name=name,
                       value=value if is_text else _alarm_value(value))
        else:
            result.findings.append(Finding(Level.ERROR, "format", path,
                                           f"{path}:{n}: not an alarm line; skipped"))
            continue
        for name_, column in cols.items():
            column.append(row.get(name_))
    return pa.table(cols, schema=PARQUET_ALARMS_SCHEMA)


def _alarm_value(text: str) -> str:
    """The value as the journal holds it: `%f` numbers back to their shortest text."""
    number = _number(text)
    if number is None:
        return text
    return format(number, "f").rstrip("0").rstrip(".") if "." in text else text

