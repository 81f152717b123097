"""var.ini schedules and their arithmetic (docs/formats.md §5), DST included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from config_support import golden

import config
from config import ConfigError
from config.model import Schedule

PARIS = ZoneInfo("Europe/Paris")
F = "WPM00BDE4_var.ini"


def _server1() -> tuple[Schedule, ...]:
    return config.parse_var_ini(golden(F), F).value.server1


def _local_day(schedules: tuple[Schedule, ...], y: int, m: int, d: int) -> list[str]:
    start = datetime(y, m, d, tzinfo=PARIS)
    end = datetime.combine(start.date() + timedelta(days=1), datetime.min.time(), PARIS)
    times = config.connection_times(schedules, start.astimezone(UTC), end.astimezone(UTC),
                                    "Europe/Paris")
    return [t.astimezone(PARIS).strftime("%H:%M") for t in times]


@pytest.mark.parametrize("day,expected", [
    ((2021, 3, 1), ["00:00"]),                      # first of month, a Monday: 1, 2, 3 merge
    ((2021, 3, 2), ["00:00"]),
    ((2021, 3, 15), ["00:00", "01:00", "11:00"]),   # middle, a Monday
    ((2021, 3, 31), ["00:00"] + [f"{h:02d}:02" for h in range(2, 24, 2)]),  # last: 11 times
])
def test_manual_example_table(day: tuple[int, int, int], expected: list[str]) -> None:
    assert _local_day(_server1(), *day) == expected


def test_manual_example_last_day_drops_the_twelfth_time() -> None:
    assert len(_local_day(_server1(), 2021, 3, 31)) == 1 + 11


def test_server2_of_the_example_connects_daily_at_midnight() -> None:
    server2 = config.parse_var_ini(golden(F), F).value.server2
    assert _local_day(server2, 2021, 3, 10) == ["00:00"]


def _utc_times(entry: str, y: int, m: int, d: int) -> list[str]:
    schedules = config.parse_var_ini(f"SCHEDULE_Params[0]={entry}\n".encode(), F).value.server1
    start = datetime(y, m, d - 1, 12, tzinfo=UTC)
    times = config.connection_times(schedules, start, start + timedelta(days=1), "Europe/Paris")
    return [t.strftime("%H:%M") for t in times]


def test_spring_gap_uses_the_offset_before_the_change() -> None:
    assert _utc_times("7|everyday|01:30:00|30|3", 2021, 3, 28) == ["00:30", "01:00", "01:30"]


def test_autumn_ambiguous_time_is_its_first_occurrence() -> None:
    assert _utc_times("8|everyday|02:30:00|1440|1", 2021, 10, 31) == ["00:30"]


@pytest.mark.parametrize("interval", [1, 10, 60])
def test_a_schedule_repeating_at_most_hourly_keeps_its_cadence_through_the_repeated_hour(
        interval: int) -> None:
    # Europe/Paris, 2021-10-31: 02:00-02:59 local comes twice (00:00-00:59 and 01:00-01:59 UTC).
    # Taking only the first pass left no connection for over an hour of a minute-by-minute one.
    schedules = config.parse_var_ini(
        f"SCHEDULE_Params[0]=9|everyday|00:00:00|{interval}|1440\n".encode(), F).value.server1
    start = datetime(2021, 10, 30, 22, tzinfo=UTC)             # local midnight
    times = config.connection_times(schedules, start, start + timedelta(hours=25),
                                    "Europe/Paris")
    steps = {(b - a).total_seconds() for a, b in pairwise(times)}
    assert steps == {interval * 60}
    assert len(times) == 25 * 60 // interval                   # the local day has 25 hours


def test_an_entry_repeating_less_often_than_hourly_connects_once_in_the_repeated_hour() -> None:
    assert _utc_times("8|everyday|02:30:00|120|2", 2021, 10, 31) == ["00:30", "03:30"]


def test_window_is_half_open_and_needs_aware_datetimes() -> None:
    sched = (Schedule(line=None, id=1),)
    t0 = datetime(2021, 3, 2, tzinfo=UTC)
    assert config.connection_times(sched, t0, t0 + timedelta(days=1), "UTC") == [t0]
    assert config.connection_times(sched, t0 + timedelta(seconds=1), t0 + timedelta(days=1),
                                   "UTC") == []
    with pytest.raises(ValueError):
        config.connection_times(sched, datetime(2021, 3, 2), datetime(2021, 3, 3), "UTC")


def test_weekday_types_match_their_day() -> None:
    days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    for offset, name in enumerate(days):
        # 2021-03-01 is a Monday
        assert _local_day((Schedule(line=None, id=1, type=config.model.ScheduleType(name)),),
                          2021, 3, 1 + offset) == ["00:00"]
        assert _local_day((Schedule(line=None, id=1, type=config.model.ScheduleType(name)),),
                          2021, 3, 2 + offset) == []


def test_missing_and_empty_fields_take_defaults_and_type_any_case() -> None:
    parsed = config.parse_var_ini(b"SCHEDULE_Params[3]=9|MONDAY||\nSCHEDULE_Params[1]=8\n", F)
    s8, s9 = parsed.value.server1
    assert (s8.id, s8.type.value, s8.start_s, s8.interval_min, s8.count) == (
        8, "everyday", 0, 1440, 1)
    assert s9.type.value == "monday" and parsed.warnings == ()
    # the writer renumbers by <n>
    assert config.render_var_ini(parsed.value) == (
        b"SCHEDULE_Params[0]=8|everyday|00:00:00|1440|1\n"
        b"SCHEDULE_Params[1]=9|monday|00:00:00|1440|1\n")


@pytest.mark.parametrize("text,message", [
    ("SCHEDULE_Params[0]=1|someday", ("Type: 'someday' is not a schedule type; "
                                     "default everyday used")),
    ("SCHEDULE_Params[0]=1|everyday|24:00:00", ("StartTime: '24:00:00' is not HH:MM:SS in "
                                               "00:00:00..23:59:59; default 00:00:00 used")),
    ("SCHEDULE_Params[0]=1|everyday|00:00:00|10|0", ("Count: '0' is outside 1..1440; "
                                                    "default 1 used")),
])
def test_bad_fields_fall_back_with_a_warning(text: str, message: str) -> None:
    parsed = config.parse_var_ini(text.encode() + b"\n", F)
    assert [str(w) for w in parsed.warnings] == [f"{F}:1: {message}"]


@pytest.mark.parametrize("text,message", [
    ("SCHEDULE_Params[0]=x|everyday", "1: Id: 'x' is not an integer"),
    ("SCHEDULE_Params[0]=|everyday", "1: Id: empty, expected an integer"),
    ("SCHEDULE_Params[0]=1|a|b|c|d|e", "1: line: 6 fields, at most 5"),
    ("SCHEDULE_Param[0]=1", "1: SCHEDULE_Param[0]: malformed key (did you mean "
                            "SCHEDULE_Params[0]?)"),
    ("SCHEDULE2_Parms[3]=1", "1: SCHEDULE2_Parms[3]: malformed key (did you mean "
                             "SCHEDULE2_Params[3]?)"),
    ("SCHEDULE_Params=1", ("1: SCHEDULE_Params: malformed key (SCHEDULE_Params[<n>] or "
                           "SCHEDULE2_Params[<n>])")),
    ("SCHEDULE_Params[0]=1\nSCHEDULE_Params[00]=2", ("2: SCHEDULE_Params[00]: <n> 0 repeated "
                                                    "(first at line 1)")),
    ("SCHEDULE2_Params[0]=1\nSCHEDULE2_Params[1]=1", "2: Id: '1' is already used at line 1"),
])
def test_structural_errors_reject_the_file(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.parse_var_ini(text.encode() + b"\n", F)
    assert [str(p) for p in exc.value.errors] == [f"{F}:{message}; file rejected"]


def test_same_id_in_both_families_is_allowed() -> None:
    parsed = config.parse_var_ini(b"SCHEDULE_Params[0]=1\nSCHEDULE2_Params[0]=1\n", F)
    assert len(parsed.value.server1) == len(parsed.value.server2) == 1


@pytest.mark.parametrize(("value", "said"), [("1;everyday;00:00:00;60;24", "';'"),
                                             ("1,everyday,00:00:00,60,24", "','"),
                                             ("1\teveryday\t00:00:00\t60\t24", "a tab")])
def test_a_schedule_written_with_another_separator_names_it(value: str, said: str) -> None:
    """Not `Id: '1;everyday;...' is not an integer`: the integrator sees what to change."""
    with pytest.raises(ConfigError) as exc:
        config.parse_var_ini(f"SCHEDULE_Params[0]=1|everyday|00:00:00|60|24\n"
                             f"SCHEDULE2_Params[0]={value}\n".encode(), F)
    assert [str(p) for p in exc.value.errors] == [
        f"{F}:2: separator: {said} is used but fields are separated by '|' "
        "(Id|Type|StartTime|Interval|Count); file rejected"]


def test_a_lone_id_is_still_a_schedule() -> None:
    parsed = config.parse_var_ini(b"SCHEDULE_Params[0]=7\n", F)
    assert [s.id for s in parsed.value.server1] == [7]
