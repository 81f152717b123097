"""Journal bodies round-trip; file names; window splitting and membership (docs/behaviour.md
§5.1)."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from _views_site import METER, journal, ns, records
from hypothesis import given, settings
from hypothesis import strategies as st

from exporters.views.context import Dates, Interface, ViewError, timestamp_ms
from exporters.views.names import (
    DATA_NAME,
    DAY_NS,
    NS_PER_S,
    WindowBounds,
    ack_file_name,
    alarm_file_name,
    cut_of,
    data_file_name,
    log_file_name,
    member_window,
    mqtt_export_name,
    parse_file_timestamp,
    select_journal,
    select_records,
    split_window,
    sunspec_log_file_name,
    trace_file_name,
)
from store.events import (
    Channel,
    CommandReceived,
    CommandResult,
    DeviceAlarm,
    EventBodyError,
    GatewayAlarm,
    JsonValue,
    LogLevel,
    LogLine,
    ParamRead,
    Source,
    Watermark,
    alarm_from_body,
    journal_items,
)

texts = st.text(max_size=30)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | texts,
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(texts, inner, max_size=3), max_leaves=8)


@settings(deadline=None)
@given(st.sampled_from(list(Source)[1:]), texts, st.integers(0, 2**31 - 1), texts, st.booleans())
def test_device_alarm_round_trips(source: Source, name: str, var: int, value: str,
                                  is_text: bool) -> None:
    alarm = DeviceAlarm(source=source, name=name, var=var, value=value, is_text=is_text)
    assert alarm_from_body(alarm.to_body()) == alarm


@settings(deadline=None)
@given(texts, st.none() | texts, st.none() | texts)
def test_gateway_alarm_round_trips(name: str, subject: str | None, text: str | None) -> None:
    alarm = GatewayAlarm(alarm=name, subject=subject, text=text)
    assert alarm_from_body(alarm.to_body()) == alarm


@settings(deadline=None)
@given(st.dictionaries(st.integers(0, 10**6), st.none() | texts),
       st.dictionaries(st.integers(0, 10**6), st.integers(0, 7)))
def test_param_read_round_trips(values: dict[int, str | None], quality: dict[int, int]) -> None:
    read = ParamRead(values=values, quality=quality)
    assert ParamRead.from_body(read.to_body()) == read


@settings(deadline=None)
@given(st.sampled_from(list(LogLevel)), texts, texts)
def test_log_line_round_trips(level: LogLevel, category: str, message: str) -> None:
    line = LogLine(level=level, category=category, message=message)
    assert LogLine.from_body(line.to_body()) == line


@settings(deadline=None)
@given(st.sampled_from(list(Channel)), st.none() | texts | st.integers(), json_values,
       st.none() | texts)
def test_command_result_round_trips(channel: Channel, caller: str | int | None,
                                    result: JsonValue,
                                    error: str | None) -> None:
    value = CommandResult(channel=channel, caller_id=caller, rpc_name="sunpm.x",
                          result=None if error is not None else result, error=error)
    assert CommandResult.from_body(value.to_body()) == value


def test_command_received_round_trips() -> None:
    command = CommandReceived(channel=Channel.FILE, rpc_name="sunpm.setRelay",
                              parameters={"state": 1}, caller_id="c-3")
    assert CommandReceived.from_body(command.to_body()) == command


@pytest.mark.parametrize("body", ["", "[]", "{}", '{"source":"X"}', '{"source":"MODBUS"}',
                                  '{"source":"MODBUS","name":"a","var":"1","value":"1"}',
                                  '{"source":"GATEWAY","alarm":1}'])
def test_bad_alarm_bodies_are_our_error(body: str) -> None:
    with pytest.raises(EventBodyError, match="journal alarm event"):
        alarm_from_body(body)


@settings(deadline=None)
@given(st.text(max_size=80))
def test_any_text_as_body_gives_only_our_error(body: str) -> None:
    for parse in (alarm_from_body, ParamRead.from_body, LogLine.from_body,
                  CommandResult.from_body, CommandReceived.from_body):
        with contextlib.suppress(EventBodyError):
            parse(body)


def test_file_names() -> None:
    end = ns("2021-02-05 09:15:00")
    assert data_file_name("WPM00BDE4", Interface.MODBUS, end) == \
        "WPM00BDE4_MODBUS_210205_091500.csv.gz"
    assert data_file_name("WPM00C44F", Interface.IO, end, parameters=True) == \
        "WPM00C44F_IO_P_210205_091500.csv.gz"
    assert alarm_file_name("U", end) == "U_AL_210205_091500.csv.gz"
    assert ack_file_name("U", end) == "U_ACK_210205_091500.json"
    assert log_file_name("U", end) == "U_LOG_210205_091500.log.gz"
    assert sunspec_log_file_name("U", end) == "U_SUNSPEC_210205_091500.log.gz"
    assert trace_file_name("U", "serial2", end) == "U_serial2_210205_091500.log.gz"
    assert mqtt_export_name("U", end, 2) == "U_MQTT_210205_091500_2.json"
    assert parse_file_timestamp("210205_091500") == end
    assert DATA_NAME.match("WPM00BDE4_TIC_P_210205_091500.csv.gz")
    with pytest.raises(ValueError):
        trace_file_name("U", "modem", end)


def test_window_split_at_utc_midnights() -> None:
    mon_9 = ns("2021-02-01 09:00:00")
    tue_10 = ns("2021-02-02 10:00:00")
    assert split_window(mon_9, tue_10) == [(mon_9, ns("2021-02-02 00:00:00")),
                                           (ns("2021-02-02 00:00:00"), tue_10)]
    assert split_window(mon_9, mon_9 + DAY_NS) == [(mon_9, mon_9 + DAY_NS)]
    assert split_window(mon_9, mon_9) == []
    assert split_window(mon_9, mon_9 - 1) == []
    week = split_window(mon_9, mon_9 + 7 * DAY_NS)
    assert len(week) == 8 and week[0][0] == mon_9 and week[-1][1] == mon_9 + 7 * DAY_NS
    assert cut_of(mon_9 + 999_999_999) == mon_9


@settings(deadline=None)
@given(st.integers(0, 4 * 10**9), st.integers(1, 30 * 86400))
def test_split_windows_tile_the_range(start_s: int, length_s: int) -> None:
    start, cut = start_s * NS_PER_S, (start_s + length_s) * NS_PER_S
    windows = split_window(start, cut)
    assert windows[0][0] == start and windows[-1][1] == cut
    assert all(a < b for a, b in windows)
    assert all(b == c for (_, b), (c, _) in itertools.pairwise(windows))
    if len(windows) > 1:
        assert all(b % DAY_NS == 0 for _, b in windows[:-1])


def test_record_committed_late_joins_the_next_window() -> None:
    table = records(METER, [("2021-02-05 08:50:00", {1: 1}), ("2021-02-05 09:00:00", {1: 2}),
                            ("2021-02-05 09:10:00", {1: 3}), ("2021-02-05 09:20:00", {1: 4})])
    first = WindowBounds(end_ns=ns("2021-02-05 09:15:00"), watermark=Watermark(devices={"2": 1}))
    second = WindowBounds(end_ns=ns("2021-02-05 09:30:00"), watermark=Watermark(devices={"2": 3}))
    in_first = select_records(table, "2", first)
    in_second = select_records(table, "2", second, [first])
    assert sorted(set(in_first.column("seq").to_pylist())) == [0, 1]
    # Record 2 (09:10) was committed after the first build: it goes in the second window.
    assert sorted(set(in_second.column("seq").to_pylist())) == [2, 3]
    assert member_window(ns("2021-02-05 09:10:00"), 2, "2", [first, second]) == 1
    assert member_window(ns("2021-02-05 09:40:00"), 4, "2", [first, second]) is None
    assert select_records(table, "9", first).num_rows == 0


def test_journal_membership_uses_the_journal_watermark() -> None:
    table = journal([("2021-02-05 09:14:00", "log", None, None, "{}"),
                     ("2021-02-05 09:14:30", "log", None, None, "{}"),
                     ("2021-02-05 09:16:00", "log", None, None, "{}")])
    first = WindowBounds(end_ns=ns("2021-02-05 09:15:00"), watermark=Watermark(journal=0))
    second = WindowBounds(end_ns=ns("2021-02-05 09:30:00"), watermark=Watermark(journal=2))
    assert [i.seq for i in journal_items(select_journal(table, first))] == [0]
    assert [i.seq for i in journal_items(select_journal(table, second, [first]))] == [1, 2]
    assert select_journal(table.slice(0, 0), first).num_rows == 0


@settings(deadline=None)
@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 3)), min_size=1, max_size=30),
       st.lists(st.tuples(st.integers(1, 120), st.integers(-1, 40)), min_size=1, max_size=5))
def test_every_item_is_in_at_most_one_window(items: list[tuple[int, int]],
                                             builds: list[tuple[int, int]]) -> None:
    # Ends and watermarks only grow within a stream.
    ends = sorted({e for e, _ in builds})
    marks = sorted(w for _, w in builds)[:len(ends)]
    windows = [WindowBounds(end_ns=e * NS_PER_S, watermark=Watermark(journal=w))
               for e, w in zip(ends, marks, strict=True)]
    rows = [(f"2021-02-05 00:{t // 60:02d}:{t % 60:02d}", "log", None, None, "{}")
            for t, _ in items]
    table = journal(rows)
    base = ns("2021-02-05 00:00:00")
    windows = [WindowBounds(end_ns=base + w.end_ns, watermark=w.watermark) for w in windows]
    seen: list[int] = []
    for k, window in enumerate(windows):
        chosen = journal_items(select_journal(table, window, windows[:k]))
        seen += [i.seq for i in chosen]
        for item in chosen:
            assert member_window(item.ts_ns, item.seq, None, windows) == k
    assert len(seen) == len(set(seen))


def test_time_example_of_spec_section_2() -> None:
    moment = ns("2021-02-05 08:50:00.999")
    dates = Dates("Europe/Paris")
    assert dates.record(moment) == "21/02/05-09:50:00"
    assert dates.record(moment, euro=True) == "05/02/21-09:50:00"
    assert timestamp_ms(ns("2021-02-05 08:50:00")) == 1612515000000
    assert data_file_name("WPM00BDE4", Interface.MODBUS, moment).endswith("_210205_085000.csv.gz")
    assert dates.log(moment) == "2021-02-05 09:50:00.999"
    assert dates.trace(moment) == "05/02/2021 09:50:00.999"


def test_unknown_time_zone_is_a_view_error() -> None:
    with pytest.raises(ViewError, match="Mars/Olympus"):
        Dates("Mars/Olympus")


def test_cut_of_a_datetime_is_the_cut_of_its_nanoseconds() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from exporters.views.windows import cut_of as cut_of_datetime
    started = datetime(2021, 2, 5, 9, 15, 0, 999_999, tzinfo=UTC)
    assert cut_of_datetime(started) == cut_of(1_612_516_500_999_999_000) == 1_612_516_500 * 10**9
    # An offset changes nothing: the cut is an instant.
    paris = started.astimezone(timezone(timedelta(hours=1)))
    assert cut_of_datetime(paris) == cut_of_datetime(started)
