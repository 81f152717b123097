"""Records of one device, cut into runs of one definition, with §9.3 texts per cell (columnar).

A device's records table (store/schema.py RECORDS_SCHEMA) holds a row per (record, variable).
`runs()` sorts it into UTC order (then record number) and yields the consecutive records sharing a
`def`; `cells()` gives, for each row of a run, the texts of its field(s) as DATA files print them
(raw values): `main` (the value, or the mean for action 2), `vmin`, `vmax` (action 2 only), all
null when the value is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from config.model import Action, DataType, DefinitionFile, Protocol, Quality, Variable

from .numbers import format_float32_array, format_float64_array

_GOOD: Final = pa.array([Quality.GOOD.value, Quality.GOOD_CLOCK_UNSYNCHRONISED.value], pa.uint8())
_TEXT_TYPES: Final = frozenset({DataType.STRING, DataType.IP, DataType.IPV6, DataType.MAC})


def is_text_variable(definition: DefinitionFile, var: Variable) -> bool:
    """Text types print their text (docs/formats.md §9.3); TIC data is always text (§8.2)."""
    if definition.protocol is Protocol.TIC:
        return True
    return var.modbus is not None and var.modbus.data_type in _TEXT_TYPES


def is_f32_variable(var: Variable) -> bool:
    return var.modbus is not None and var.modbus.data_type is DataType.F32


def recorded_variables(definition: DefinitionFile, parameters: bool = False) -> list[Variable]:
    """The columns: actions 2, 4, 8, 9 (`_P_` files: 1, 9) by ascending Index."""
    if parameters:
        chosen = [v for v in definition.variables if v.action.is_parameter]
    else:
        chosen = [v for v in definition.variables if v.action.is_polled]
    return sorted(chosen, key=lambda v: v.index)


@dataclass(frozen=True, slots=True)
class Run:
    """Consecutive records of one device with the same `def`, rows in record order."""

    def_id: str
    rows: pa.RecordBatch
    record_ts_ns: list[int]
    #: For each row, its record's position in `record_ts_ns`.
    record_pos: pa.Array


def runs(table: pa.Table) -> Iterator[Run]:
    if table.num_rows == 0:
        return
    table = table.sort_by([("ts", "ascending"), ("seq", "ascending")])
    # One contiguous batch: compute functions then return plain Arrays, never ChunkedArrays.
    batch = pa.RecordBatch.from_arrays([c.combine_chunks() for c in table.columns],
                                       schema=table.schema)
    seq = batch.column("seq")
    unique_seq = pc.unique(seq)
    first_rows = pc.index_in(unique_seq, value_set=seq)
    record_pos = pc.index_in(seq, value_set=unique_seq)
    first_list: list[int] = first_rows.to_pylist()
    ts_list: list[int] = batch.column("ts").cast(pa.int64()).take(first_rows).to_pylist()
    def_list: list[str] = batch.column("def").cast(pa.string()).take(first_rows).to_pylist()
    start = 0
    count = len(first_list)
    while start < count:
        end = start + 1
        while end < count and def_list[end] == def_list[start]:
            end += 1
        row_start = first_list[start]
        row_end = first_list[end] if end < count else batch.num_rows
        positions = pc.subtract(record_pos.slice(row_start, row_end - row_start),
                                pa.scalar(start, pa.int32()))
        yield Run(def_id=def_list[start], rows=batch.slice(row_start, row_end - row_start),
                  record_ts_ns=ts_list[start:end], record_pos=positions)
        start = end


@dataclass(frozen=True, slots=True)
class Cells:
    var: pa.Array          # int32 Index per row
    main: pa.Array         # string per row: the value, the mean for action 2; null when missing
    text: pa.Array         # the `text` column as stored (MQTT prints text values unreplaced)
    good: pa.Array         # bool per row: the value is present
    ranged: pa.Array       # bool per row: an action-2 row
    vmin: pa.Array         # string per action-2 row (rows where `ranged`, in row order)
    vmax: pa.Array


def _index_set(variables: list[Variable]) -> pa.Array:
    return pa.array([v.index for v in variables], pa.int32())


def _with_f32(texts: pa.Array, values: pa.Array, f32: pa.Array | None) -> pa.Array:
    """Replace the texts of F32 rows by their shortest float32 text (formatting only those)."""
    if f32 is None or not pc.any(f32).as_py():
        return texts
    return pc.replace_with_mask(texts, f32, format_float32_array(pc.filter(values, f32)))


def _all(mask: pa.Array) -> bool:
    return len(mask) == 0 or bool(pc.all(mask).as_py())


def cells(run: Run, definition: DefinitionFile) -> Cells:
    """§9.3 texts of a run's rows; each float is formatted once, F32 and action 2 on their rows."""
    rows = run.rows
    var = rows.column("var")
    variables = definition.variables
    f32_vars = [v for v in variables if is_f32_variable(v)]
    range_vars = [v for v in variables if v.action is Action.MIN_MAX_MEAN]
    # Action 2 of TIC data (PAPP) prints min;max;mean of its decimal values, not the text.
    text_vars = [v for v in variables
                 if is_text_variable(definition, v) and v.action is not Action.MIN_MAX_MEAN]
    ranged = pc.is_in(var, value_set=_index_set(range_vars))
    is_f32 = (pc.and_not(pc.is_in(var, value_set=_index_set(f32_vars)), ranged)
              if f32_vars else None)
    good = pc.is_in(rows.column("quality"), value_set=_GOOD)

    value = rows.column("value")
    text = rows.column("text")
    # The mean of action 2 is always a float64, whatever the variable's type (§9.3).
    main = _with_f32(format_float64_array(value), value, is_f32)
    if text.null_count < len(text):
        # `text` of a number is its exact decimal (U64/I64 beyond float64); of action 2,
        # `<min>;<max>`; of a text type, the value itself.
        main = pc.if_else(ranged, main, pc.coalesce(text, main))
        if text_vars:
            clean = pc.replace_substring_regex(text, pattern="[;\r\n]", replacement=" ")
            main = pc.if_else(pc.is_in(var, value_set=_index_set(text_vars)), clean, main)
    if not _all(good):
        main = pc.if_else(good, main, pa.nulls(len(var), pa.string()))

    if range_vars and pc.any(ranged).as_py():
        vmin, vmax = _range_texts(rows, ranged, good, f32_vars)
    else:
        vmin = vmax = pa.array([], pa.string())
    return Cells(var=var, main=main, text=text, good=good, ranged=ranged, vmin=vmin, vmax=vmax)


def _range_texts(rows: pa.RecordBatch, ranged: pa.Array, good: pa.Array,
                 f32_vars: list[Variable]) -> tuple[pa.Array, pa.Array]:
    subset = rows.filter(ranged)
    text = subset.column("text")
    is_f32 = (pc.is_in(subset.column("var"), value_set=_index_set(f32_vars))
              if f32_vars else None)
    low = _with_f32(format_float64_array(subset.column("vmin")), subset.column("vmin"), is_f32)
    high = _with_f32(format_float64_array(subset.column("vmax")), subset.column("vmax"), is_f32)
    if text.null_count < len(text):
        # Exact `<min>;<max>` decimals of U64/I64 variables.
        pair = pc.if_else(pc.fill_null(pc.match_substring(text, ";"), False), text,
                          pa.nulls(len(text), pa.string()))
        parts = pc.split_pattern(pair, pattern=";", max_splits=1)
        low = pc.coalesce(pc.list_element(parts, 0), low)
        high = pc.coalesce(pc.list_element(parts, 1), high)
    keep = pc.filter(good, ranged)
    if not _all(keep):
        low = pc.if_else(keep, low, pa.nulls(len(low), pa.string()))
        high = pc.if_else(keep, high, pa.nulls(len(high), pa.string()))
    return low, high
