"""`sunpm sd sql --format csv` writes every value as `_text` makes it (dates and times in ISO
8601, None as an empty field, booleans, bytes, lists and structs as the JSON answer has them,
anything else as `str` does), whether a chunk holds such values or not: rows without any go to
the csv module as they are."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdcard.sql import _text, write

_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.text(max_size=8), st.binary(max_size=4),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.dates(), st.datetimes(timezones=st.just(UTC)), st.datetimes(),
    st.timedeltas(max_value=timedelta(days=3)),
)


@given(chunks=st.lists(st.lists(st.tuples(_values, _values, _values), max_size=6), max_size=4))
def test_csv_values_are_written_as_text_makes_them(chunks: list[list[tuple[Any, ...]]]) -> None:
    expected = io.StringIO()
    reference = csv.writer(expected, lineterminator="\n")
    reference.writerow(["a", "b", "c"])
    for rows in chunks:
        reference.writerows([[_text(v) for v in row] for row in rows])
    out = io.StringIO()
    assert write(["a", "b", "c"], iter(chunks), "csv", out) == sum(map(len, chunks))
    assert out.getvalue() == expected.getvalue()


def test_a_chunk_of_dates_is_written_in_iso_8601() -> None:
    out = io.StringIO()
    rows = [(1, date(2026, 1, 2), 0.5), (2, None, None),
            (3, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), Decimal("1.50"))]
    write(["n", "when", "x"], iter([rows]), "csv", out)
    assert out.getvalue() == ("n,when,x\n1,2026-01-02,0.5\n2,,\n"
                              "3,2026-01-02T03:04:05+00:00,1.50\n")


@given(rows=st.lists(st.tuples(_values, st.lists(_values, max_size=3),
                               st.dictionaries(st.text(max_size=3), _values, max_size=2)),
                     max_size=6))
def test_json_writes_every_value_duckdb_may_return(rows: list[tuple[Any, ...]]) -> None:
    """Intervals, decimals, bytes and times, at any depth of a list or struct, never stop the
    answer half way: each is written as text (times in ISO 8601), the rest as JSON has them."""
    import json

    out = io.StringIO()
    assert write(["a", "b", "c"], iter([rows]), "json", out) == len(rows)
    back = json.loads(out.getvalue())
    assert len(back) == len(rows)
    for row, got in zip(rows, back, strict=True):
        for value, text in ((row[0], got["a"]), *zip(row[1], got["b"], strict=True)):
            if isinstance(value, datetime | date):
                assert text == value.isoformat()
            elif isinstance(value, Decimal):
                assert text == str(value)
            elif isinstance(value, timedelta):
                assert duckdb.execute(f"SELECT '{text}'::INTERVAL").fetchall() == [(value,)]
            elif isinstance(value, bytes):
                assert text == value.hex()


def test_table_csv_and_json_write_the_same_texts() -> None:
    """Lists, structs, bytes and booleans read the same in every format: as JSON has them, never
    as Python's `repr` (`datetime.datetime(2026, ...)`, `b'ab'`, `True`)."""
    import json

    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    rows = [([when, None], b"ab", {"t": when, "n": 1}, True, timedelta(minutes=90))]
    names = ["l", "b", "s", "u", "i"]
    as_json = io.StringIO()
    write(names, iter([rows]), "json", as_json)
    (got,) = json.loads(as_json.getvalue())
    as_csv = io.StringIO()
    write(names, iter([rows]), "csv", as_csv)
    cells = list(csv.reader(io.StringIO(as_csv.getvalue())))[1]
    assert cells == ['["2026-01-02T03:04:05+00:00", null]', "6162",
                     '{"t": "2026-01-02T03:04:05+00:00", "n": 1}', "true", "01:30:00"]
    assert [json.loads(c) for c in (cells[0], cells[2], cells[3])] == [got["l"], got["s"],
                                                                      got["u"]]
    assert (cells[1], cells[4]) == (got["b"], got["i"])
    as_table = io.StringIO()
    write(names, iter([rows]), "table", as_table)
    assert as_table.getvalue().splitlines()[2].split("  ")[0] == cells[0]


@pytest.mark.parametrize("value,text", [
    (timedelta(days=31, minutes=30), "31 days 00:30:00"), (timedelta(days=1), "1 day"),
    (timedelta(minutes=-10), "-00:10:00"), (timedelta(0), "00:00:00"),
    (timedelta(days=-3, microseconds=-5), "-3 days -00:00:00.000005"),
    (timedelta(hours=30), "1 day 06:00:00")])
def test_an_interval_is_written_as_duckdb_writes_and_reads_it(value: timedelta,
                                                              text: str) -> None:
    # Python's `31 days, 0:30:00` and `-1 day, 23:50:00` are no intervals DuckDB reads back.
    out = io.StringIO()
    write(["i"], iter([[(value,)]]), "csv", out)
    assert out.getvalue() == f"i\n{text}\n"
    assert duckdb.execute(f"SELECT '{text}'::INTERVAL").fetchall() == [(value,)]


def test_a_table_row_is_one_line_whatever_its_text_holds() -> None:
    # A value or a column name with a line break or an escape sequence moved the rest of the
    # row (or the terminal's colours); the table shows them escaped, CSV quotes them.
    rows = [("x\ny", "tab\there", "\x1b[31mred")]
    as_table = io.StringIO()
    write(["a\nb", "c", "d"], iter([rows]), "table", as_table)
    assert as_table.getvalue().splitlines() == [
        "a\\nb  c          d",
        "----  ---------  -----------",
        "x\\ny  tab\\there  \\x1b[31mred",
        "(1 rows)"]
    as_csv = io.StringIO()
    write(["a"], iter([[("x\ny",)]]), "csv", as_csv)
    assert list(csv.reader(io.StringIO(as_csv.getvalue()))) == [["a"], ["x\ny"]]


def test_json_holds_no_nan_or_infinity_tokens() -> None:
    """A float that is no number is its text, as in CSV: strict parsers (jq, browsers) reject
    the `NaN` and `Infinity` tokens Python writes by default."""
    import json
    import math

    def strict(token: str) -> None:
        raise AssertionError(f"invalid JSON token {token}")

    rows = [(math.nan, -math.inf, [1.0, math.nan], {"x": math.inf}, 2.5)]
    out = io.StringIO()
    write(["a", "b", "c", "d", "e"], iter([rows]), "json", out)
    (got,) = json.loads(out.getvalue(), parse_constant=strict)
    assert got == {"a": "nan", "b": "-inf", "c": [1.0, "nan"], "d": {"x": "inf"}, "e": 2.5}
    as_csv = io.StringIO()
    write(["a", "b", "c", "d", "e"], iter([rows]), "csv", as_csv)
    assert as_csv.getvalue().splitlines()[1] == 'nan,-inf,"[1.0, ""nan""]","{""x"": ""inf""}",2.5'


_PLAIN_COLUMNS = {
    "BIGINT": st.integers(-2**63, 2**63 - 1), "UBIGINT": st.integers(0, 2**64 - 1),
    "TINYINT": st.integers(-128, 127), "INTEGER": st.integers(-2**31, 2**31 - 1),
    "DOUBLE": st.floats(allow_nan=True), "FLOAT": st.floats(width=32, allow_nan=True),
    "VARCHAR": (st.text(max_size=6) | st.text(',"\r\n ab', max_size=4)).filter(
        lambda t: "\x00" not in t),
}


@settings(deadline=None)  # a DuckDB connection an example: a loaded box must not fail it on time
@given(data=st.data(), fmt=st.sampled_from(["csv", "json", "table"]))
def test_an_answer_of_plain_columns_is_written_as_fetched_row_by_row(
        data: st.DataObject, fmt: str) -> None:
    """Ints, floats and strings go through Arrow a column at a time (`_plain_rows`): every
    format writes them as it writes what `fetchmany` gives."""
    import pyarrow as pa

    from sdcard.sql import Session

    kinds = data.draw(st.lists(st.sampled_from(sorted(_PLAIN_COLUMNS)), min_size=1, max_size=3))
    rows = data.draw(st.lists(st.tuples(*(st.none() | _PLAIN_COLUMNS[k] for k in kinds)),
                              max_size=12))
    con = duckdb.connect()
    names = [f"c{i}" for i in range(len(kinds))]
    # Arrow takes a Python int for an int64 unless told: a UBIGINT of 2**63 or more overflows it.
    table = pa.table({n: pa.array([r[i] for r in rows],
                                  pa.uint64() if kinds[i] == "UBIGINT" else None) if rows and any(
        r[i] is not None for r in rows) else pa.nulls(len(rows)) for i, n in enumerate(names)})
    con.register("given", table)
    query = "SELECT " + ", ".join(f"{n}::{k} AS {n}" for n, k in zip(names, kinds, strict=True)) \
        + " FROM given"
    session = object.__new__(Session)
    session._con, session.pristine = con, True  # a session over this connection alone
    answer = session.ask(query)
    assert answer is not None
    plain = io.StringIO()
    write(*answer, fmt, plain)
    fetched = io.StringIO()
    cursor = con.execute(query)
    write(names, iter([cursor.fetchall()]), fmt, fetched)
    assert plain.getvalue() == fetched.getvalue()


def _csv_module_text(rows: list[tuple[Any, ...]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def test_floats_are_written_a_column_at_a_time_as_python_writes_each() -> None:
    """Arrow's text of a float differs from Python's (`100`, `1e+10`, `0.00001`, `1e-7`): the
    CSV written from Arrow columns gives `str`'s text for every float, at each edge of
    notation and for any bit pattern."""
    import math
    import random
    import struct

    import pyarrow as pa

    from sdcard.sql import _float_text

    values = [0.0, -0.0, math.nan, math.inf, -math.inf, 5e-324, 2.0**53, 1.7976931348623157e308]
    for exponent in range(-325, 309):
        for mantissa in (1.0, 1.5, 9.999999999999998, 1.2345678901234567):
            value = mantissa * 10.0**exponent
            values += [value, math.nextafter(value, 0), math.nextafter(value, math.inf), -value]
    draw = random.Random(7)
    values += [struct.unpack("<d", draw.randbytes(8))[0] for _ in range(20_000)]
    values += [float(struct.unpack("<f", draw.randbytes(4))[0]) for _ in range(5_000)]
    values += [draw.randint(-10**7, 10**7) / draw.choice([1, 3, 10, 1000]) for _ in range(5_000)]
    written = _float_text(pa.array(values, pa.float64())).to_pylist()
    assert [w for w, v in zip(written, values, strict=True) if w != str(v)] == []


def test_an_answer_of_plain_columns_is_written_as_csv_from_its_arrow_columns() -> None:
    """The fast path is taken (not only its fallback) and writes the csv module's bytes."""
    import pyarrow as pa

    from sdcard.sql import _csv_text

    rows = [(1, "2026-12-07 10", 1.5), (2**63 - 1, "é", 100.0), (None, None, None),
            (-7, "", 1e-05)]
    batch = pa.record_batch([pa.array([r[i] for r in rows]) for i in range(3)],
                            names=["a", "b", "c"])
    assert _csv_text(batch) == _csv_module_text(rows)


@pytest.mark.parametrize("rows", [
    [("a,b", 1)], [('say "hi"', 2)], [("two\nlines", 3)], [("cr\r", 4)],
    [("",)], [(None,)],
], ids=["comma", "quote", "newline", "carriage return", "empty alone", "null alone"])
def test_a_batch_the_csv_module_quotes_is_left_to_it(rows: list[tuple[Any, ...]]) -> None:
    import pyarrow as pa

    from sdcard.sql import _csv_text

    batch = pa.record_batch([pa.array([r[i] for r in rows], pa.string() if i == 0 else None)
                             for i in range(len(rows[0]))],
                            names=[f"c{i}" for i in range(len(rows[0]))])
    assert _csv_text(batch) is None
    answer = io.StringIO()
    from sdcard.sql import _PlainBatch

    write(batch.schema.names, iter([_PlainBatch(batch)]), "csv", answer)
    assert answer.getvalue().split("\n", 1)[1] == _csv_module_text(rows)
