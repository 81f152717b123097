"""DATA files (`<uid>_<MODBUS|IO|TIC>_<ts>.csv.gz`) and `_P_` files (docs/formats.md §9).

Inputs:
- `records`: a mapping daq index (`"1"`, `"IO"`, `"TIC1"`) -> that device's records of the window,
  an Arrow table of store/schema.py RECORDS_SCHEMA (the store keeps one stream per device, so the
  window's selection is naturally per device). Row order does not matter: rows are put in UTC
  order, then record number. Devices of other interfaces are ignored.
- `definitions`: the definition snapshots by `def` id (`<sha256>:<file name>`).
- `config`: the window's `ViewConfig` (header option, Euro dates, time zone, daq rows).
- for `_P_` files, the window's journal `param` items (`events.JournalItem`).

The text is produced one device block at a time (`data_text_chunks`), so a day of 100 devices is
never held whole as text; `data_file` streams it through the deterministic gzip.

Layout per device block: header lines, the column header when `header_option` is on, then one row
per record, `<local date>;<fields>`. A new block starts where the header lines, the column list or
the rows' fields change (a renamed definition file, other recorded variables, a variable moved to
or from action 2); any other definition edit continues the block, each record still printed with
its own definition.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from config.model import Action, DefinitionFile, Variable
from store.events import EventBodyError, JournalItem, ParamRead, def_file_name

from ._records import Cells, Run, cells, recorded_variables, runs
from .context import (
    Dates,
    Interface,
    SetAside,
    ViewConfig,
    ViewError,
    definition_for,
    device_order,
    interface_of,
)
from .gz import gzip_chunks
from .numbers import clean_text

RecordsByDevice = Mapping[str, pa.Table]
Definitions = Mapping[str, DefinitionFile]


def _header_lines(interface: Interface, device_index: str, definition: DefinitionFile,
                  def_id: str, config: ViewConfig) -> tuple[str, ...]:
    def_file = clean_text(def_file_name(def_id))
    if interface is Interface.MODBUS:
        # Written modbusRTU/modbusTCP whatever the case on line 1 (docs/formats.md §9.2).
        return (f"DEVICEINDEX;{device_index}", f"{definition.protocol.value};{def_file}")
    if interface is Interface.IO:
        return (f"TypeIO;{def_file}",)
    device = config.device(device_index)
    # A meter in no configuration snapshot left has no known serial number: an empty one,
    # rather than a window that fails at every session (as `ViewConfig.device_name`).
    serial_number = device.serial_number if device is not None else ""
    return (f"SNTIC;{clean_text(serial_number)};001", f"TypeTIC;{def_file}")


def _column_header(columns: Sequence[Variable]) -> str:
    return ";".join([str(len(columns)), *(str(v.index) for v in columns)])


class _Block:
    """Tracks the current block's header so a device's runs continue or start blocks."""

    def __init__(self, interface: Interface, device_index: str, config: ViewConfig) -> None:
        self.interface = interface
        self.device_index = device_index
        self.config = config
        self.key: tuple[tuple[str, ...], tuple[tuple[int, bool], ...]] | None = None

    def head(self, definition: DefinitionFile, def_id: str,
             columns: Sequence[Variable]) -> list[str]:
        lines = _header_lines(self.interface, self.device_index, definition, def_id, self.config)
        # A variable moved to or from action 2 keeps the column header but changes the rows'
        # fields (one or `min;max;mean`): a block's rows all have the same fields.
        key = (lines, tuple((v.index, v.action is Action.MIN_MAX_MEAN) for v in columns))
        if key == self.key:
            return []
        self.key = key
        return [*lines, _column_header(columns)] if self.config.header_option else list(lines)


_EMPTY: Final = pa.scalar("", pa.string())
_SEMICOLON: Final = pa.scalar(";", pa.string())
_FALSE: Final = pa.scalar(False, pa.bool_())
_JOIN_NULLS: Final = pc.JoinOptions(null_handling="replace", null_replacement="")
_SLOTS: list[pa.Array] = [pa.array(range(1 << 16), pa.int64())]


def _arange(count: int) -> pa.Array:
    """0..count-1 as int64 (sliced from a cached array: a day of a device is ~14k cells)."""
    if len(_SLOTS[0]) < count:
        _SLOTS[0] = pa.array(range(max(count, 2 * len(_SLOTS[0]))), pa.int64())
    return _SLOTS[0].slice(0, count)


def _cell_texts(found: Cells) -> pa.Array:
    """One text per row: the value, or `min;max;mean` for action 2; missing parts empty."""
    texts = pc.fill_null(found.main, _EMPTY)
    if not len(found.vmin):
        return texts
    triples = pc.binary_join_element_wise(found.vmin, found.vmax,
                                          pc.filter(found.main, found.ranged), _SEMICOLON,
                                          options=_JOIN_NULLS)
    return pc.replace_with_mask(texts, found.ranged, triples)


def _row_fields(run: Run, found: Cells, columns: Sequence[Variable]) -> pa.Array:
    """`<fields>` of each record of the run, `;`-joined; missing cells are empty.

    A row's text (its one field, or the three of action 2 already joined) belongs at cell
    `record × columns + column`. Rows usually come complete and in that order: then they are
    joined as they are; otherwise the cells are gathered by position, absent ones empty.
    """
    count = len(columns)
    records = len(run.record_ts_ns)
    column_of = pc.index_in(found.var, value_set=pa.array([v.index for v in columns], pa.int32()))
    cells_pos = pc.add(pc.multiply(run.record_pos.cast(pa.int64()),
                                   pa.scalar(count, pa.int64())), column_of.cast(pa.int64()))
    texts = _cell_texts(found)
    slots = _arange(records * count)
    in_place = len(cells_pos) == len(slots) and pc.all(
        pc.fill_null(pc.equal(cells_pos, slots), _FALSE)).as_py()
    if not in_place:
        found_at = pc.index_in(slots, value_set=cells_pos)
        # An absent action-2 cell still takes its three fields.
        absent = pa.array([";;" if v.action is Action.MIN_MAX_MEAN else "" for v in columns]
                          * records, pa.string())
        texts = pc.coalesce(pc.take(texts, found_at), absent)
    offsets = pa.array(range(0, records * count + 1, count), pa.int32())
    return pc.binary_join(pa.ListArray.from_arrays(offsets, texts), _SEMICOLON)


def _run_lines(run: Run, definition: DefinitionFile, columns: Sequence[Variable],
               dates: Dates, euro: bool) -> list[str]:
    date_texts = [dates.record(ts, euro) for ts in run.record_ts_ns]
    if not columns:
        return date_texts
    fields: list[str] = _row_fields(run, cells(run, definition), columns).to_pylist()
    return [f"{d};{f}" for d, f in zip(date_texts, fields, strict=True)]


def _device_chunks(interface: Interface, device_index: str, table: pa.Table,
                   definitions: Definitions, config: ViewConfig, dates: Dates) -> Iterator[str]:
    block = _Block(interface, device_index, config)
    for run in runs(table):
        definition = definition_for(definitions, run.def_id, f"device {device_index}")
        columns = recorded_variables(definition)
        lines = block.head(definition, run.def_id, columns)
        lines += _run_lines(run, definition, columns, dates, config.euro_date_format)
        yield "\n".join(lines) + "\n"


def _devices_of(interface: Interface, indexes: Iterable[str]) -> list[str]:
    return sorted((i for i in indexes if interface_of(i) is interface), key=device_order)


def data_text_chunks(interface: Interface, records: RecordsByDevice, definitions: Definitions,
                     config: ViewConfig) -> Iterator[str]:
    """The DATA file's text, one piece per run of records (each piece ends with LF)."""
    dates = Dates(config.time_zone)
    for device_index in _devices_of(interface, records):
        yield from _device_chunks(interface, device_index, records[device_index], definitions,
                                  config, dates)


def data_text(interface: Interface, records: RecordsByDevice, definitions: Definitions,
              config: ViewConfig) -> str:
    """The whole DATA text ("" when the window has no record of the interface)."""
    return "".join(data_text_chunks(interface, records, definitions, config))


def _gzip_or_none(chunks: Iterator[str]) -> bytes | None:
    first = next(chunks, None)
    if first is None:
        return None

    def encoded() -> Iterator[bytes]:
        yield first.encode()
        for chunk in chunks:
            yield chunk.encode()

    return b"".join(gzip_chunks(encoded()))


def data_file(interface: Interface, records: RecordsByDevice, definitions: Definitions,
              config: ViewConfig) -> bytes | None:
    """The `.csv.gz` bytes, or None when the window has no data row (no file, §9.1)."""
    return _gzip_or_none(data_text_chunks(interface, records, definitions, config))


# --------------------------------------------------------------------------- _P_ files


def param_text_chunks(interface: Interface, items: Iterable[JournalItem], definitions: Definitions,
                      config: ViewConfig, aside: list[SetAside] | None = None) -> Iterator[str]:
    """The `_P_` file's text from the window's `param` journal items (other kinds ignored).

    A read that cannot be written (no definition snapshot: an older journal; a damaged body) is
    left out of every rendering alike, and told to `aside` when given."""
    dates = Dates(config.time_zone)
    by_device: dict[str, list[JournalItem]] = {}
    for item in items:
        if item.kind == "param" and item.device is not None \
                and interface_of(item.device) is interface:
            by_device.setdefault(item.device, []).append(item)
    for device_index in _devices_of(interface, by_device):
        block = _Block(interface, device_index, config)
        lines: list[str] = []
        for item in sorted(by_device[device_index], key=lambda i: (i.ts_ns, i.seq)):
            try:
                definition = definition_for(definitions, item.def_id,
                                            f"parameters of device {device_index}")
                read = ParamRead.from_body(item.body)
            except (ViewError, EventBodyError) as err:
                # Rendered again it fails again: kept in, it would stop every file of the stream.
                if aside is not None:
                    aside.append((item, err))
                continue
            assert item.def_id is not None
            columns = recorded_variables(definition, parameters=True)
            if not columns:
                continue  # a definition without parameters has nothing to print
            lines += block.head(definition, item.def_id, columns)
            fields = [clean_text(read.values.get(v.index) or "") for v in columns]
            lines.append(";".join([dates.record(item.ts_ns, config.euro_date_format), *fields]))
        if lines:
            yield "\n".join(lines) + "\n"


def param_text(interface: Interface, items: Iterable[JournalItem], definitions: Definitions,
               config: ViewConfig) -> str:
    return "".join(param_text_chunks(interface, items, definitions, config))


def param_file(interface: Interface, items: Iterable[JournalItem], definitions: Definitions,
               config: ViewConfig) -> bytes | None:
    """The `_P_` `.csv.gz` bytes, or None when the window has no parameter read."""
    return _gzip_or_none(param_text_chunks(interface, items, definitions, config))
