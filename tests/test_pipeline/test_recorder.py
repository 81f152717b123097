"""Recorder: periods, values, qualities, changes and parameter reads (docs/behaviour.md §2.2)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pyarrow as pa
import pytest
from _recorder_defs import DAY0_NS, NS, bad, definition, device, good, readings, variable
from hypothesis import given, settings
from hypothesis import strategies as st

from config.model import Action, Protocol, Quality
from pipeline.recorder import (
    DAY_NS,
    Recorder,
    RecorderError,
    RecordReady,
    period_end_ns,
    value_text,
)
from store.schema import RECORDS_SCHEMA

A2, A4, A8, A9, A1 = (Action.MIN_MAX_MEAN, Action.INSTANT, Action.ALARM_ON_CHANGE,
                      Action.ALARM_AND_PARAMETER, Action.PARAMETER)


def rows(record: RecordReady) -> dict[int, dict[str, object]]:
    table = pa.Table.from_batches([record.batch])
    return {r["var"]: r for r in table.to_pylist()}


def make(acq_period_s: int = 600, variables: tuple[tuple[int, Action], ...] = ((1, A4),),
         protocol: Protocol = Protocol.MODBUS_TCP, **kw: object) -> Recorder:
    rec = Recorder(**kw)  # type: ignore[arg-type]
    rec.set_device(device("1", acq_period_s=acq_period_s),
                   definition([variable(i, a) for i, a in variables], protocol=protocol))
    return rec


def at(seconds: float) -> int:
    return DAY0_NS + round(seconds * NS)


def test_period_ends_are_multiples_of_acq_period_and_midnight() -> None:
    assert period_end_ns(at(0), 600) == at(600)
    assert period_end_ns(at(599.999), 600) == at(600)
    assert period_end_ns(at(600), 600) == at(1200)
    # 7000 s does not divide 86400: the day's last period ends at midnight, the next day restarts.
    last_start = 86400 // 7000 * 7000
    assert period_end_ns(at(last_start - 1), 7000) == at(last_start)
    assert period_end_ns(at(last_start + 1), 7000) == at(86400)
    assert period_end_ns(at(86400 + 1), 7000) == at(86400 + 7000)


def test_record_holds_last_good_value_at_period_end_with_schema_and_def() -> None:
    rec = make()
    assert rec.feed(readings("1", at(10), {1: good(5)})).records == ()
    assert rec.feed(readings("1", at(300), {1: good(7)})).records == ()
    assert rec.feed(readings("1", at(310), {1: bad(Quality.TIMEOUT)})).records == ()
    out = rec.feed(readings("1", at(600.05), {1: good(9)})).records
    assert len(out) == 1
    record = out[0]
    assert record.batch.schema.equals(RECORDS_SCHEMA)
    assert record.end_ns == at(600)
    r = rows(record)[1]
    assert r["value"] == 7.0 and r["quality"] == 0 and r["vmin"] is None and r["text"] is None
    assert r["seq"] == 0
    assert record.batch.column("ts").cast(pa.int64()).to_pylist() == [at(600)]
    defn = definition([variable(1, A4)])
    assert r["def"] == defn.snapshot_id


def test_flush_closes_period_at_its_end_and_not_before() -> None:
    rec = make()
    rec.feed(readings("1", at(10), {1: good(5)}))
    assert rec.flush(at(599.9)) == []
    out = rec.flush(at(600))
    assert [r.end_ns for r in out] == [at(600)]
    assert rec.flush(at(1300)) == []  # no poll since: no record


def test_min_max_mean_is_exact_sum_over_count() -> None:
    rec = make(variables=((1, A2),))
    values = [0.1, 0.2, 0.3, 1e16, -1e16, 0.7]
    for k, v in enumerate(values):
        rec.feed(readings("1", at(10 + k), {1: good(v)}))
    rec.feed(readings("1", at(20), {1: bad(Quality.EXCEPTION)}))  # failed polls do not count
    r = rows(rec.flush(at(600))[0])[1]
    exact = sum(Fraction(v) for v in values) / len(values)
    assert r["value"] == float(exact)
    assert r["value"] != sum(values) / len(values)  # the naive float mean differs here
    assert (r["vmin"], r["vmax"]) == (-1e16, 1e16)
    assert r["quality"] == 0


def test_missing_value_takes_the_last_failed_quality_never_a_stale_value() -> None:
    rec = make(variables=((1, A4), (2, A2)))
    rec.feed(readings("1", at(10), {1: good(5), 2: good(3)}))
    (first,) = rec.feed(readings("1", at(610), {1: bad(Quality.TIMEOUT),
                                                2: bad(Quality.EXCEPTION)})).records
    rec.feed(readings("1", at(620), {1: bad(Quality.BAD_FRAME), 2: bad(Quality.DISCONNECTED)}))
    (second,) = rec.flush(at(1200))
    assert rows(first)[1]["value"] == 5.0 and rows(first)[2]["value"] == 3.0
    r = rows(second)
    assert r[1]["value"] is None and r[1]["quality"] == Quality.BAD_FRAME
    assert r[2]["value"] is None and r[2]["vmin"] is None and r[2]["quality"] == Quality.DISCONNECTED


def test_variable_absent_from_a_poll_is_a_timeout() -> None:
    rec = make(variables=((1, A4), (2, A4)), protocol=Protocol.TIC)
    rec.feed(readings("1", at(10), {1: good("0123")}))
    r = rows(rec.flush(at(600))[0])
    assert r[1]["text"] == "0123" and r[1]["value"] == 123.0
    assert r[2]["value"] is None and r[2]["text"] is None and r[2]["quality"] == Quality.TIMEOUT


def test_unsynchronised_clock_gives_quality_7_to_good_values_only() -> None:
    rec = make(variables=((1, A4), (2, A4)), clock_synchronised=False)
    rec.feed(readings("1", at(10), {1: good(5), 2: bad(Quality.TIMEOUT)}))
    r = rows(rec.flush(at(600))[0])
    assert r[1]["quality"] == Quality.GOOD_CLOCK_UNSYNCHRONISED
    assert r[2]["quality"] == Quality.TIMEOUT
    rec.clock_synchronised = True
    rec.feed(readings("1", at(610), {1: good(5), 2: good(1)}))
    assert {r["quality"] for r in rows(rec.flush(at(1200))[0]).values()} == {0}


def test_midnight_closes_a_short_last_period() -> None:
    rec = make(acq_period_s=7000)
    rec.feed(readings("1", at(86390), {1: good(1)}))
    out = rec.feed(readings("1", at(86410), {1: good(2)})).records
    assert [r.end_ns for r in out] == [DAY0_NS + DAY_NS]
    assert rows(rec.flush(at(86400 + 7000))[0])[1]["value"] == 2.0


def test_exact_text_for_u64_and_scaled_values_that_float64_cannot_print() -> None:
    rec = make(variables=((1, A4), (2, A4), (3, A4), (4, A2)))
    big = 2**64 - 1
    rec.feed(readings("1", at(10), {1: good(big), 2: good(Decimal("12.34")),
                                    3: good(Decimal("123456789012345678.9")), 4: good(big)}))
    rec.feed(readings("1", at(11), {4: good(2**53 + 1)}))
    r = rows(rec.flush(at(600))[0])
    assert r[1]["text"] == "18446744073709551615" and r[1]["value"] == float(big)
    assert r[2]["text"] is None and r[2]["value"] == 12.34
    assert r[3]["text"] == "123456789012345678.9"
    assert r[4]["text"] == f"{2**53 + 1};{big}"
    assert r[4]["value"] == float(Fraction(big + 2**53 + 1, 2))


def test_value_text_notation() -> None:
    assert value_text(Decimal("1.2300")) == "1.23"
    assert value_text(Decimal("1E+3")) == "1000"
    assert value_text(Decimal("-0.00")) == "0"
    assert value_text(1e-7) == "0.0000001"
    assert value_text(2079.0) == "2079"
    assert value_text(-7) == "-7"


def test_value_text_is_exact_beyond_the_default_decimal_precision() -> None:
    # The default context keeps 28 digits; a value's text is never rounded (docs/formats.md §9.3).
    assert value_text(Decimal("12345678901234567890.123456789")) == \
        "12345678901234567890.123456789"
    assert value_text(Decimal("-98765432109876543210987654321E+2")) == \
        "-9876543210987654321098765432100"


def test_action_8_change_events_skip_first_value_and_failed_polls() -> None:
    rec = make(variables=((1, A8), (2, A4), (3, A9)))
    defn = definition([variable(1, A8), variable(2, A4), variable(3, A9)])
    assert rec.feed(readings("1", at(1), {1: good(1), 2: good(1), 3: good("a")})).changes == ()
    assert rec.feed(readings("1", at(2), {1: bad(Quality.TIMEOUT), 3: good("a")})).changes == ()
    out = rec.feed(readings("1", at(3), {1: good(2), 2: good(5), 3: good("b")})).changes
    assert [(c.var, c.old, c.new, c.ts_ns, c.def_id) for c in out] == [
        (1, 1, 2, at(3), defn.snapshot_id), (3, "a", "b", at(3), defn.snapshot_id)]
    # numbers compare exactly across types: 2 == Decimal("2.0") is no change
    assert rec.feed(readings("1", at(4), {1: good(Decimal("2.0"))})).changes == ()


def test_parameters_due_on_first_good_poll_return_and_request() -> None:
    rec = make(variables=((1, A4), (2, A1), (3, A9)))
    assert rec.feed(readings("1", at(1), {1: bad(Quality.TIMEOUT)})).parameters_due is False
    assert rec.feed(readings("1", at(2), {1: good(1)})).parameters_due is True
    p = rec.feed_parameters(readings("1", at(3), {2: good(Decimal("0.50")), 3: bad(Quality.EXCEPTION)}))
    assert dict(p.values) == {2: "0.5", 3: None}
    assert dict(p.qualities) == {2: Quality.GOOD, 3: Quality.EXCEPTION}
    assert p.journal_body() == {"values": {"2": "0.5", "3": None}, "quality": {"3": 2}}
    assert rec.feed(readings("1", at(4), {1: good(1)})).parameters_due is False
    # two failed polls are no return, three are
    for k in range(2):
        rec.feed(readings("1", at(5 + k), {1: bad(Quality.TIMEOUT)}))
    assert rec.feed(readings("1", at(8), {1: good(1)})).parameters_due is False
    for k in range(3):
        rec.feed(readings("1", at(9 + k), {1: bad(Quality.TIMEOUT)}))
    assert rec.feed(readings("1", at(13), {1: good(1)})).parameters_due is True
    rec.feed_parameters(readings("1", at(14), {2: good(1), 3: good(2)}))
    # one disconnected poll, or a reconnection the driver reports, makes a return
    rec.feed(readings("1", at(15), {1: bad(Quality.DISCONNECTED)}))
    assert rec.feed(readings("1", at(16), {1: good(1)})).parameters_due is True
    rec.feed_parameters(readings("1", at(17), {2: good(1), 3: good(2)}))
    assert rec.feed(readings("1", at(18), {1: good(1)}, reconnected=True)).parameters_due is True
    rec.feed_parameters(readings("1", at(19), {2: good(1), 3: good(2)}))
    rec.request_parameters("1")
    assert rec.feed(readings("1", at(20), {1: good(1)})).parameters_due is True
    # a parameter read with nothing good leaves them due
    rec.feed_parameters(readings("1", at(21), {}))
    assert rec.parameters_due("1")


def test_a_reconnection_reported_on_a_failed_poll_makes_the_next_good_poll_a_return() -> None:
    # The driver reports a new connection once, at the first poll on it; a device still booting
    # behind a gateway fails that poll, and its first good poll is the return.
    rec = make(variables=((1, A4), (2, A1)))
    rec.feed(readings("1", at(1), {1: good(1)}))
    rec.feed_parameters(readings("1", at(2), {2: good(1)}))
    assert rec.feed(readings("1", at(3), {1: bad(Quality.TIMEOUT)}, reconnected=True)
                    ).parameters_due is False
    assert rec.feed(readings("1", at(4), {1: good(1)})).parameters_due is True


def test_device_without_parameters_never_asks_for_a_read() -> None:
    rec = make(variables=((1, A4),))
    assert rec.feed(readings("1", at(2), {1: good(1)})).parameters_due is False


def test_unknown_device_is_a_recorder_error() -> None:
    with pytest.raises(RecorderError, match="device 9"):
        Recorder().feed(readings("9", at(1), {}))


def test_clock_step_back_skips_recorded_periods() -> None:
    rec = make(acq_period_s=60)
    rec.feed(readings("1", at(100), {1: good(1)}))
    assert [r.end_ns for r in rec.feed(readings("1", at(125), {1: good(2)})).records] == [at(120)]
    # wall clock steps back 40 s: polls in the already recorded period [60, 120) are not recorded
    out = rec.feed(readings("1", at(85), {1: good(3)}))
    assert out.recorded is False and out.records == ()
    rec.feed(readings("1", at(130), {1: good(4)}))
    (record,) = rec.flush(at(180))
    assert record.end_ns == at(180) and rows(record)[1]["value"] == 4.0
    assert rec.counters("1").polls_not_recorded == 1


def test_clock_step_forward_leaves_skipped_periods_without_records() -> None:
    rec = make(acq_period_s=60)
    rec.feed(readings("1", at(10), {1: good(1)}))
    out = rec.feed(readings("1", at(10 + 3600), {1: good(2)})).records
    assert [r.end_ns for r in out] == [at(60)]
    assert [r.end_ns for r in rec.flush(at(3700))] == [at(3660)]


def test_clock_reset_restarts_record_times() -> None:
    rec = make(acq_period_s=60)
    rec.feed(readings("1", at(7200 + 10), {1: good(1)}))
    # back two hours: a reset; the open period is recorded with its own time, then times restart
    out = rec.feed(readings("1", at(10), {1: good(2)}))
    assert out.recorded is True
    assert [r.end_ns for r in out.records] == [at(7260)]
    assert [r.end_ns for r in rec.flush(at(60))] == [at(60)]


def test_definition_change_mid_period_keeps_only_unchanged_variables() -> None:
    rec = make(variables=((1, A2), (2, A4), (3, A4)))
    rec.feed(readings("1", at(10), {1: good(10), 2: good(20), 3: good(30)}))
    changed = definition([variable(1, A2), variable(2, A4, info3="I16"), variable(4, A4)],
                         file_name="inv2.csv")
    rec.set_device(device("1"), changed)
    rec.feed(readings("1", at(20), {1: good(20), 2: bad(Quality.TIMEOUT), 4: good(40)}))
    (record,) = rec.flush(at(600))
    r = rows(record)
    assert sorted(r) == [1, 2, 4]
    assert r[1]["value"] == 15.0 and r[1]["vmin"] == 10.0        # earlier poll still counts
    assert r[2]["value"] is None and r[2]["quality"] == Quality.TIMEOUT  # Info3 changed: reset
    assert r[4]["value"] == 40.0
    assert {row["def"] for row in r.values()} == {changed.snapshot_id}
    assert rec.parameters_due("1")


def test_acq_period_change_takes_effect_at_the_next_new_period_end() -> None:
    rec = make(acq_period_s=600)
    rec.feed(readings("1", at(190), {1: good(1)}))
    rec.set_device(device("1", acq_period_s=60), definition([variable(1, A4)]))
    assert rec.feed(readings("1", at(200), {1: good(2)})).recorded
    (record,) = rec.flush(at(240))    # not held back until 600
    assert record.end_ns == at(240) and rows(record)[1]["value"] == 2.0
    rec.feed(readings("1", at(250), {1: good(2)}))
    rec.set_device(device("1", acq_period_s=600), definition([variable(1, A4)]))
    assert [r.end_ns for r in rec.feed(readings("1", at(310), {1: good(3)})).records] == [at(300)]
    assert [r.end_ns for r in rec.flush(at(600))] == [at(600)]


# --------------------------------------------------------------------------- properties

_value = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.decimals(allow_nan=False, allow_infinity=False, places=3,
                min_value=Decimal("-1e12"), max_value=Decimal("1e12")),
)
_reading = st.one_of(_value.map(good), st.sampled_from(
    [Quality.TIMEOUT, Quality.EXCEPTION, Quality.BAD_FRAME, Quality.DISCONNECTED]).map(bad))
_poll = st.tuples(st.integers(min_value=0, max_value=400 * NS),
                  st.dictionaries(st.sampled_from([1, 2]), _reading))


@settings(max_examples=150, deadline=None)
@given(acq=st.sampled_from([60, 300, 600, 7000, 86400]),
       start=st.integers(min_value=0, max_value=2 * DAY_NS),
       polls=st.lists(_poll, max_size=40))
def test_any_poll_sequence_gives_right_periods_never_stale_and_exact_means(
        acq: int, start: int, polls: list[tuple[int, dict[int, object]]]) -> None:
    rec = make(acq_period_s=acq, variables=((1, A2), (2, A4)))
    ts = DAY0_NS + start
    records: list[RecordReady] = []
    periods: dict[int, list[dict[int, object]]] = {}
    for gap, values in polls:
        ts += gap
        periods.setdefault(period_end_ns(ts, acq), []).append(values)
        records.extend(rec.feed(readings("1", ts, values)).records)  # type: ignore[arg-type]
    records.extend(rec.flush(ts + DAY_NS))
    assert [r.end_ns for r in records] == sorted(periods)  # one record per polled period, in order
    for record in records:
        r = rows(record)
        polled = periods[record.end_ns]
        goods1 = [p[1].value for p in polled if 1 in p and p[1].quality == 0]  # type: ignore[attr-defined]
        goods2 = [p[2].value for p in polled if 2 in p and p[2].quality == 0]  # type: ignore[attr-defined]
        if goods1:
            exact = sum(Fraction(v) for v in goods1) / len(goods1)
            assert r[1]["value"] == float(exact)
            assert r[1]["vmin"] <= r[1]["value"] <= r[1]["vmax"]
            assert r[1]["vmin"] == float(min(goods1)) and r[1]["vmax"] == float(max(goods1))
        else:
            assert r[1]["value"] is None and r[1]["vmin"] is None and r[1]["quality"] != 0
        if goods2:
            assert r[2]["value"] == float(goods2[-1])
            if r[2]["text"] is not None:
                assert r[2]["text"] == value_text(goods2[-1])
        else:  # never stale: nothing good in this period means missing
            assert r[2]["value"] is None and r[2]["quality"] != 0
            # a variable absent from a poll's answer counts as a timeout (TIC: label not received)
            failed = [p[2].quality if 2 in p else Quality.TIMEOUT  # type: ignore[attr-defined]
                      for p in polled]
            assert r[2]["quality"] == failed[-1]


_jump = st.one_of(st.integers(min_value=0, max_value=400 * NS),
                  st.integers(min_value=-3 * 3600 * NS, max_value=-1),     # steps back, resets
                  st.integers(min_value=3600 * NS, max_value=2 * DAY_NS))  # steps forward


@settings(max_examples=150, deadline=None)
@given(acq=st.sampled_from([60, 600, 7000]),
       polls=st.lists(st.tuples(_jump, st.sampled_from([1, 2, 3, None])), max_size=40))
def test_with_clock_steps_record_times_only_increase_and_hold_only_their_polls(
        acq: int, polls: list[tuple[int, int | None]]) -> None:
    rec = make(acq_period_s=acq, variables=((1, A4),))
    ts = DAY0_NS + DAY_NS
    previous_ts: int | None = None
    segments: list[list[RecordReady]] = [[]]     # record series between clock resets
    expected: dict[int, list[int | None]] = {}   # period end -> values of its recorded polls
    for jump, value in polls:
        ts += jump
        reading = good(value) if value is not None else bad(Quality.TIMEOUT)
        reset = previous_ts is not None and ts < previous_ts - 3600 * NS
        previous_ts = ts
        out = rec.feed(readings("1", ts, {1: reading}))
        for record in out.records:   # periods closed by this poll, or by the reset it made
            values = expected.pop(record.end_ns, None)
            assert values is not None, "a record for a period no recorded poll belonged to"
            goods = [v for v in values if v is not None]
            r = rows(record)[1]
            assert r["value"] == (float(goods[-1]) if goods else None)   # never stale
            segments[-1].append(record)
        if reset:
            assert expected == {}
            segments.append([])
        if out.recorded:
            expected.setdefault(period_end_ns(ts, acq), []).append(value)
    assert len(expected) <= 1   # only the open period is pending
    tail = rec.flush(ts + 2 * DAY_NS)
    assert [r.end_ns for r in tail] == sorted(expected)
    segments[-1].extend(tail)
    for segment in segments:
        ends = [r.end_ns for r in segment]
        assert ends == sorted(set(ends))   # strictly increasing between resets


def test_parameter_and_change_events_give_the_bodies_the_views_read() -> None:
    from store.events import DeviceAlarm, ParamRead, Source, dump_json

    rec = make(variables=((1, A8), (2, A1), (3, A9)))
    rec.feed(readings("1", at(1), {1: good("ABC"), 3: good(1)}))
    p = rec.feed_parameters(readings("1", at(2), {2: good(2**64 - 1), 3: bad(Quality.TIMEOUT)}))
    body = dump_json(p.journal_body())  # type: ignore[arg-type]
    assert ParamRead.from_body(body) == ParamRead(values={2: "18446744073709551615", 3: None},
                                                  quality={3: 1})
    assert ParamRead.from_body(body).to_body() == body
    (change,) = rec.feed(readings("1", at(3), {1: good("ABD"), 3: good(1)})).changes
    alarm = DeviceAlarm(source=Source.MODBUS, name="dev1", var=change.var,
                        value=change.new_text, is_text=change.is_text)
    assert alarm.to_body() == '{"source":"MODBUS","name":"dev1","var":1,"value":"ABD","text":true}'
