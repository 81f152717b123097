"""`<uid>_var.ini` (docs/formats.md §5): connection schedules and the times they produce."""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from config._ini import IniLine, indexed_key, placed, placed_lines, read_ini
from config._text import Findings, parse_int
from config.key_hint import indexed_unknown_key, malformed_key_message
from config.model import Schedule, ScheduleType

_FAMILIES: Final = {"SCHEDULE_Params": 1, "SCHEDULE2_Params": 2}
#: The `|`-separated fields of a schedule value, in order.
FIELDS: Final = ("Id", "Type", "StartTime", "Interval", "Count")
_TIME: Final = re.compile(r"([0-9]{2}):([0-9]{2}):([0-9]{2})")
_WEEKDAYS: Final = {ScheduleType.MONDAY: 0, ScheduleType.TUESDAY: 1, ScheduleType.WEDNESDAY: 2,
                    ScheduleType.THURSDAY: 3, ScheduleType.FRIDAY: 4, ScheduleType.SATURDAY: 5,
                    ScheduleType.SUNDAY: 6}


@dataclass(frozen=True, slots=True, kw_only=True)
class VarIni:
    """Schedules of server 1 and 2, and the file's other lines (comments, unknown keys)."""

    server1: tuple[Schedule, ...] = ()
    server2: tuple[Schedule, ...] = ()
    other_lines: tuple[IniLine, ...] = ()

    def schedules(self, slot: int) -> tuple[Schedule, ...]:
        return self.server1 if slot == 1 else self.server2


def parse(data: bytes, file_name: str) -> tuple[VarIni, Findings]:
    findings = Findings(file_name)
    families: dict[int, list[tuple[int, Schedule]]] = {1: [], 2: []}
    n_at: dict[tuple[int, int], int] = {}
    id_at: dict[tuple[int, int], int] = {}
    other: list[IniLine] = []
    for ln in read_ini(data, findings):
        if ln.key is None or not ln.key.startswith("SCHEDULE"):
            if ln.key is not None:
                findings.warn(ln.line, ln.key, indexed_unknown_key(ln.key, tuple(_FAMILIES)))
            other.append(ln)
            continue
        parsed = indexed_key(ln.key)
        if parsed is None or parsed[0] not in _FAMILIES:
            findings.error(ln.line, ln.key, malformed_key_message(ln.key, tuple(_FAMILIES)))
            continue
        slot, n = _FAMILIES[parsed[0]], parsed[1]
        if (slot, n) in n_at:
            findings.error(ln.line, ln.key, f"<n> {n} repeated (first at line {n_at[slot, n]})")
            continue
        n_at[slot, n] = ln.line
        schedule = _schedule(ln, findings)
        if schedule is None:
            continue
        if (slot, schedule.id) in id_at:
            findings.error(ln.line, "Id", f"'{schedule.id}' is already used at line "
                                          f"{id_at[slot, schedule.id]}")
            continue
        id_at[slot, schedule.id] = ln.line
        families[slot].append((n, schedule))
    ordered = {slot: tuple(s for _, s in sorted(entries, key=lambda e: e[0]))
               for slot, entries in families.items()}
    return VarIni(server1=ordered[1], server2=ordered[2], other_lines=tuple(other)), findings


def _schedule(ln: IniLine, findings: Findings) -> Schedule | None:
    fields = [f.strip(" \t") for f in ln.value.split("|")]
    wrong = next((sep for sep in ";,\t" if len(fields) == 1 and sep in ln.value), None)
    if wrong is not None:
        # `1;everyday;00:00:00;60;24`: said as the separator, not as an Id that is no integer.
        shown = "a tab" if wrong == "\t" else f"'{wrong}'"
        findings.error(ln.line, "separator", f"{shown} is used but fields are separated by '|' "
                       "(Id|Type|StartTime|Interval|Count)")
        return None
    if len(fields) > 5:
        findings.error(ln.line, "line", f"{len(fields)} fields, at most 5")
        return None
    fields += [""] * (5 - len(fields))
    id_text, type_text, start_text, interval_text, count_text = fields
    sched_id, problem = parse_int(id_text, 0, 999999)
    if sched_id is None:
        findings.error(ln.line, "Id", problem)
        return None
    stype = ScheduleType.EVERYDAY
    if type_text:
        try:
            stype = ScheduleType(type_text.lower())
        except ValueError:
            findings.default(ln.line, "Type", f"'{type_text}' is not a schedule type", "everyday")
    start_s = 0
    if start_text:
        parsed_start = _seconds(start_text)
        if parsed_start is None:
            findings.default(ln.line, "StartTime",
                             f"'{start_text}' is not HH:MM:SS in 00:00:00..23:59:59", "00:00:00")
        else:
            start_s = parsed_start
    interval = _bounded(ln.line, "Interval", interval_text, 1440, findings)
    count = _bounded(ln.line, "Count", count_text, 1, findings)
    return Schedule(line=ln.line, id=sched_id, type=stype, start_s=start_s,
                    interval_min=interval, count=count)


def _bounded(line: int, fld: str, text: str, default: int, findings: Findings) -> int:
    if not text:
        return default
    value, problem = parse_int(text, 1, 1440)
    if value is None:
        findings.default(line, fld, problem, str(default))
        return default
    return value


def _seconds(text: str) -> int | None:
    match = _TIME.fullmatch(text)
    if match is None:
        return None
    h, m, s = (int(g) for g in match.groups())
    if h > 23 or m > 59 or s > 59:
        return None
    return h * 3600 + m * 60 + s


def format_start(start_s: int) -> str:
    return f"{start_s // 3600:02d}:{start_s // 60 % 60:02d}:{start_s % 60:02d}"


def placed_schedule_lines(current: VarIni, families: Sequence[Sequence[str]]
                          ) -> list[tuple[int, int, str]]:
    """A var.ini of `current`'s other lines and new entry texts (`SCHEDULE_Params[..]=...` per
    family, in order) as `render` would place them: `(family index or -1, k, text)` in file
    order, the entries at the lines `current`'s entries of that family held."""
    return placed(current.other_lines, [
        [(held[k].line if k < len(held) else None, text) for k, text in enumerate(texts)]
        for held, texts in ((current.server1, families[0]), (current.server2, families[1]))])


def render(v: VarIni) -> bytes:
    return placed_lines(v.other_lines, [
        [(s.line, f"{family}[{n}]={s.id}|{s.type.value}|{format_start(s.start_s)}|"
                  f"{s.interval_min}|{s.count}") for n, s in enumerate(schedules)]
        for family, schedules in (("SCHEDULE_Params", v.server1), ("SCHEDULE2_Params", v.server2))])


# ---------------------------------------------------------------------------- arithmetic


def _matches(stype: ScheduleType, day: date) -> bool:
    if stype is ScheduleType.EVERYDAY:
        return True
    if stype is ScheduleType.FIRST:
        return day.day == 1
    if stype is ScheduleType.MIDDLE:
        return day.day == 15
    if stype is ScheduleType.LAST:
        return day.day == calendar.monthrange(day.year, day.month)[1]
    return day.weekday() == _WEEKDAYS[stype]


def _local_times(schedule: Schedule, day: date) -> Iterable[datetime]:
    if not _matches(schedule.type, day):
        return
    midnight = datetime(day.year, day.month, day.day)
    for k in range(schedule.count):
        offset_s = schedule.start_s + k * schedule.interval_min * 60
        if offset_s >= 86400:
            return
        yield midnight + timedelta(seconds=offset_s)


def connection_times(schedules: Sequence[Schedule], start: datetime, end: datetime,
                     tz: str) -> list[datetime]:
    """The connection instants (aware, UTC) the schedules give in [start, end), sorted, unique.

    Local wall times are placed in `tz`: a time that does not exist (spring gap) takes the offset
    before the change, an ambiguous one its first occurrence (docs/formats.md §5); that is
    zoneinfo's `fold=0`, per PEP 495. An entry repeating at most hourly also connects at the
    second occurrence (`fold=1`), so the autumn's repeated hour keeps its cadence instead of
    leaving a gap of over an hour in a schedule every few minutes.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("connection_times needs aware datetimes")
    zone = ZoneInfo(tz)
    first = start.astimezone(zone).date() - timedelta(days=1)
    last = end.astimezone(zone).date() + timedelta(days=1)
    found: set[datetime] = set()
    day = first
    while day <= last:
        for schedule in schedules:
            folds = (0, 1) if schedule.count > 1 and schedule.interval_min <= 60 else (0,)
            for local in _local_times(schedule, day):
                for fold in folds:
                    instant = local.replace(tzinfo=zone, fold=fold).astimezone(UTC)
                    if fold and instant.astimezone(zone).replace(tzinfo=None) != local:
                        continue    # a time of the spring gap: fold=1 is no second occurrence
                    if start <= instant < end:
                        found.add(instant)
        day += timedelta(days=1)
    return sorted(found)
