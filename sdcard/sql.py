"""`sunpm sd sql`: one DuckDB query over a dump, written as a table, CSV or JSON.

Rows are fetched and written a batch at a time, so a large answer streams out instead of
being held whole.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import re
import warnings
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import IO, TYPE_CHECKING, Any, Final

import pyarrow as pa

from config.errors import SunpmError

from .dump import Dump
from .scan import duckdb_connection

if TYPE_CHECKING:
    import duckdb


class QueryError(SunpmError):
    """The query cannot be run at all (it holds no statement)."""


FETCH_ROWS: Final = 10_000
#: A table is for reading: past this many rows the rest is counted, not printed.
TABLE_ROWS: Final = 1_000


#: Statements that write files (wherever they point, the dump included, which is never written):
#: the answer goes to standard output instead.
_WRITING: Final = frozenset({"COPY", "COPY_DATABASE", "EXPORT", "ATTACH"})
#: Statements whose result is an answer; the others' (`SET`: `Success`, `CREATE TEMP TABLE`:
#: `Count`) are DuckDB's acknowledgement, not written.
_ANSWERING: Final = frozenset({"SELECT", "PRAGMA", "EXPLAIN", "CALL", "EXECUTE"})
#: Statements that change nothing a later statement could see.
_READING: Final = frozenset({"SELECT", "EXPLAIN"})
#: Functions a reading statement may call that change what a later one sees (the random seed,
#: logging and profiling settings, the catalog): a text naming one leaves its session not
#: pristine. A name met in a string or a column name only costs a fresh session.
_CHANGING: Final = re.compile(
    r"setseed|(?:en|dis)able_(?:logging|profiling)|truncate_duckdb_logs|checkpoint"
    r"|grammar_extension|external_resource|json_execute_serialized_sql", re.IGNORECASE)


#: Column types whose values DuckDB gives as the same Python objects through Arrow as through
#: `fetchmany` (ints, floats, strings), and which every format writes as `str` does.
_PLAIN: Final = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT",
                           "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "VARCHAR"})


def _plain_rows(cursor: duckdb.DuckDBPyConnection) -> Iterator[Rows]:
    """The answer of plain columns only, a batch of Arrow columns at a time: CSV is written from
    them a column at a time (`_csv_text`), the other formats from Python rows made a column at a
    time (pyarrow), not a value at a time (`fetchmany`): half the time on 100,000 rows."""
    with warnings.catch_warnings():
        # "Arrow output on a DB-API result makes an extra copy": cheaper than the conversion
        # it saves.
        warnings.simplefilter("ignore", UserWarning)
        reader = cursor.to_arrow_reader(FETCH_ROWS)
    if reader is None:
        return
    for batch in reader:
        if batch.num_rows:
            yield _PlainBatch(batch)


class _PlainBatch:
    """Rows known to hold ints, floats, strings and None only, as the Arrow batch DuckDB gave."""

    def __init__(self, batch: pa.RecordBatch) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return int(self.batch.num_rows)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows())

    def rows(self) -> list[tuple[Any, ...]]:
        return list(zip(*(column.to_pylist() for column in self.batch.columns), strict=True))


#: A batch of an answer's rows.
Rows = list[tuple[Any, ...]] | _PlainBatch

#: Bytes of a text the csv module would quote (or, in some Python versions, not): such a
#: batch is left to it.
_QUOTED: Final = (b",", b'"', b"\r", b"\n")
#: Python writes a float in positional notation from 1e-4 up to 1e16, Arrow from about 1e-5 up
#: to 1e10 (in exponent notation beyond, its exponents unpadded: `1e-7`, Python's `1e-07`).
#: Within the first range, both give the same shortest digits that read back as the value
#: (Python adds `.0` to an integer); outside the second (padded exponents alike), the same text.
_POSITIONAL: Final = (1e-4, 1e10)
_EXPONENT_ALIKE: Final = (1e-11, 1e17)
#: Values at each edge of those ranges: an Arrow that writes any otherwise than measured (another
#: version) has its floats written by Python.
_PROBES: Final = (0.1, 1.5, -2.5, 100.0, -0.0, 0.0, 123456.789, 1e-4, 9.999999999999999e-05,
                  9999999999.999998, 1e10, 1e16, 1.2345678901234567e17, 1e-11, 1.5e-12, 5e-324,
                  1.7976931348623157e308, math.nan, math.inf, -math.inf)


def _csv_text(batch: pa.RecordBatch) -> str | None:
    """The batch's CSV lines as `csv.writer` writes its rows, built a column at a time
    (a fifth of the time on 72,000 rows of three columns); None when the csv module must
    write them (a text it would quote, an empty field alone on its line, which it quotes)."""
    import pyarrow.compute as pc

    texts = []
    for column in batch.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            if _quoted(column):
                return None
            text = column
        elif pa.types.is_floating(column.type):
            if not _arrow_floats_measured():
                return None
            text = _float_text(column.cast(pa.float64()))
        else:
            text = column.cast(pa.string())
        texts.append(text.fill_null(""))
    if len(texts) == 1 and pc.any(pc.equal(texts[0], "")).as_py():
        return None
    lines = texts[0] if len(texts) == 1 else pc.binary_join_element_wise(*texts, ",")
    whole = pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines)
    return str(pc.binary_join(whole, "\n")[0].as_py()) + "\n"


def _quoted(column: pa.Array) -> bool:
    """A text of the string column holds a byte the csv module quotes: looked for in the bytes
    behind the column, all of them (a slice's neighbours' too: a false alarm costs only the csv
    module's pace), at `bytes.find`'s pace, a tenth of a regular expression's."""
    data = column.buffers()[2]
    if data is None:
        return False
    raw = data.to_pybytes()
    return any(byte in raw for byte in _QUOTED)


@functools.cache
def _arrow_floats_measured() -> bool:
    probes: list[str] = _float_text(pa.array(_PROBES, pa.float64())).to_pylist()
    return probes == [str(v) for v in _PROBES]


def _float_text(column: pa.Array) -> pa.Array:
    """`str` of each float64 of `column` (Arrow's text where it is Python's, an integer's `.0`
    added; Python's own for the few values outside `_POSITIONAL`); nulls stay null."""
    import pyarrow.compute as pc

    text = column.cast(pa.string())
    size = pc.abs(column)
    whole = pc.and_(pc.equal(pc.floor(column), column), pc.less(size, _POSITIONAL[1]))
    if pc.any(whole).as_py():  # rare in a mean, a ratio or a scaled value
        text = pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)
    low, high = _POSITIONAL
    odd = pc.or_(pc.and_(pc.greater_equal(size, _EXPONENT_ALIKE[0]), pc.less(size, low)),
                 pc.and_(pc.greater_equal(size, high), pc.less(size, _EXPONENT_ALIKE[1])))
    odd = odd.fill_null(False)
    if pc.any(odd).as_py():
        own = [str(v) for v in column.filter(odd).to_pylist()]
        text = pc.replace_with_mask(text, odd, pa.array(own, pa.string()))
    return text


class Session:
    """One DuckDB connection over a dump for any number of questions: the imports and the
    dump's open are paid once (`sunpm sd sql PATH` reading its statements from standard input
    or a prompt)."""

    def __init__(self, dump: Dump) -> None:
        self._con = duckdb_connection(dump)
        #: Only reading statements asked so far: the connection is as it was made (no `SET`,
        #: table, macro or prepared statement of a question left in it).
        self.pristine = True

    def statements(self, text: str) -> list[str]:
        """The statements of `text`, as DuckDB's parser splits them (a `;` inside a string or
        a comment splits nothing); empty when it holds none."""
        return [s.query for s in self._con.extract_statements(text)]

    def statements_before_error(self, text: str) -> tuple[list[str], duckdb.Error | None]:
        """For a `text` DuckDB cannot parse whole (its parser refuses all of it for one bad
        statement): the statements before the first it cannot parse, and that one's error
        (None when the text parses after all). Each `;` ends a candidate; a candidate that does
        not parse (a `;` inside a string, a comment or a bad statement) runs on to the next."""
        import duckdb

        found: list[str] = []
        start = 0
        for end in (i + 1 for i, char in enumerate(text) if char == ";"):
            try:
                queries = self.statements(text[start:end])
            except duckdb.Error:
                continue
            if queries:     # a comment alone holds none: it may still hide a `;` of the next
                found += queries
                start = end
        try:
            return found + self.statements(text[start:]), None
        except duckdb.Error as err:
            return found, err

    def ask(self, query: str) -> tuple[list[str], Iterator[Rows]] | None:
        """The answer's columns and its rows, a batch at a time (of the last statement when
        `query` holds several); None when that statement answers nothing (`SET TimeZone`)."""
        kinds = [s.type.name for s in self._con.extract_statements(query)]
        self.pristine = self.pristine and set(kinds) <= _READING \
            and not _CHANGING.search(query)
        writing = sorted(set(kinds) & _WRITING)
        if writing:
            raise QueryError(f"{', '.join(writing)} refused: sd sql only reads (write the answer "
                             "with --format csv or json and a redirection)")
        cursor = self._con.execute(query)
        if cursor is None or cursor.description is None or kinds[-1] not in _ANSWERING:
            return None
        columns = [d[0] for d in cursor.description]
        if all(str(d[1]) in _PLAIN for d in cursor.description):
            return columns, _plain_rows(cursor)

        def chunks() -> Iterator[Rows]:
            while rows := cursor.fetchmany(FETCH_ROWS):
                yield rows

        return columns, chunks()

    def interrupt(self) -> None:
        self._con.interrupt()

    def close(self) -> None:
        self._con.close()


def run_query(dump: Dump, query: str, session: Session | None = None
              ) -> tuple[list[str], Iterator[Rows]]:
    """One question (its text may hold several statements: the last one answers), in a session
    of its own, or in `session`, left open."""
    if session is not None:
        return _asked(session, query) or ([], iter(()))
    session = Session(dump)
    try:
        answer = _asked(session, query)
    except BaseException:
        session.close()
        raise
    if answer is None:
        session.close()
        return [], iter(())
    columns, rows = answer

    def chunks() -> Iterator[Rows]:
        try:
            yield from rows
        finally:
            session.close()

    return columns, chunks()


def _asked(session: Session, query: str
           ) -> tuple[list[str], Iterator[Rows]] | None:
    if not session.statements(query):
        # DuckDB answers None, not an error, for a text without a statement (empty, blanks,
        # only comments or semicolons).
        raise QueryError(f"no SQL statement in {query!r}")
    return session.ask(query)


#: What `_text` writes otherwise than `str` does (the csv module writes the rest itself).
_NOT_STR: Final = (datetime, date, time, timedelta, bool, bytes, list, tuple, dict)
_US_PER_DAY: Final = 86_400_000_000


def _interval_text(value: timedelta) -> str:
    """An interval as DuckDB writes one and reads it back (`31 days 00:30:00`, `-00:10:00`),
    not as Python does (`31 days, 0:30:00`, `-1 day, 23:50:00`, which DuckDB cannot read)."""
    total_us = value // timedelta(microseconds=1)
    sign = "-" if total_us < 0 else ""
    days, rest_us = divmod(abs(total_us), _US_PER_DAY)
    parts = [f"{sign}{days} day{'' if days == 1 else 's'}"] if days else []
    if rest_us or not days:
        seconds, micros = divmod(rest_us, 1_000_000)
        minutes, seconds = divmod(seconds, 60)
        hours, minutes = divmod(minutes, 60)
        fraction = f".{micros:06d}" if micros else ""
        parts.append(f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}{fraction}")
    return " ".join(parts)


def _text(value: Any) -> str:
    """A value of a table or CSV answer, written as the JSON answer writes it: times in ISO
    8601, intervals as DuckDB writes them, booleans `true`/`false`, bytes in hex, lists and
    structs as JSON (never Python's `repr`, `datetime.datetime(...)`); anything else (numbers,
    decimals) as `str`."""
    if value is None:
        return ""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return _interval_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple | dict):
        return _json_text(value, ensure_ascii=False)
    return str(value)


def _csv_rows(rows: Rows) -> Rows | list[list[str]]:
    """Rows as `_text` writes them. The csv module writes None as an empty field and anything
    else as `str` does, as `_text` does but for times, booleans, bytes, lists and structs:
    rows without any go to it as they are, a look at each value costing a tenth of its
    conversion."""
    if not isinstance(rows, _PlainBatch) and any(isinstance(v, _NOT_STR) for row in rows
                                                for v in row):
        return [[_text(v) for v in row] for row in rows]
    return rows


def _json_value(value: Any) -> Any:
    """What JSON has no type for, at any depth of a value (lists, structs, maps): times in
    ISO 8601, intervals as DuckDB writes them, bytes in hex, anything else (decimals, UUIDs) as
    its text."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return _interval_text(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _json_text(value: Any, *, ensure_ascii: bool = True) -> str:
    """JSON, never its invalid `NaN` or `Infinity`: a float that is no number is written as its
    text (`nan`, `inf`, `-inf`), as CSV writes it (a failed float read, a division by zero)."""
    try:
        return json.dumps(value, default=_json_value, ensure_ascii=ensure_ascii,
                          allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), default=_json_value, ensure_ascii=ensure_ascii,
                          allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


#: A table row is one line: control characters in a cell are shown escaped (`\n`), as a
#: terminal would otherwise move the rest of the row (CSV and JSON quote them instead).
_ESCAPED: Final = {c: repr(chr(c))[1:-1] for c in [*range(0x20), *range(0x7F, 0xA0)]}


def _cell(value: Any) -> str:
    return _text(value).translate(_ESCAPED)


def write(columns: list[str], chunks: Iterator[Rows], fmt: str,
          out: IO[str]) -> int:
    """Write the answer; returns the number of rows."""
    count = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for rows in chunks:
            text = _csv_text(rows.batch) if isinstance(rows, _PlainBatch) else None
            if text is None:
                writer.writerows(_csv_rows(rows))
            else:
                out.write(text)
            count += len(rows)
        return count
    if fmt == "json":
        out.write("[")
        for rows in chunks:
            for row in rows:
                out.write(",\n" if count else "\n")
                out.write(_json_text(dict(zip(columns, row, strict=True))))
                count += 1
        out.write("\n]\n" if count else "]\n")
        return count
    shown: list[list[str]] = []
    for rows in chunks:
        for row in rows:
            if len(shown) < TABLE_ROWS:
                shown.append([_cell(v) for v in row])
            count += 1
    columns = [_cell(c) for c in columns]
    widths = [max([len(c), *(len(r[i]) for r in shown)]) for i, c in enumerate(columns)]
    out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()
              + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for r in shown:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
    more = f" ({count - len(shown)} more not shown; use --format csv)" if count > len(shown) else ""
    out.write(f"({count} rows){more}\n")
    return count
