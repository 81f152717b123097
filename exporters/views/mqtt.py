"""MQTT payloads (docs/formats.md §14): data JSON per window, alarm JSON, result JSON.

Data JSON: `{"<device name>":[{"<key>":<value>,…,"date":"YY/MM/DD-hh:mm:ss","timestamp":<ms>},…],…}`
- devices MODBUS by ascending index, then IO, TIC1; records in UTC order; keys the variables of
  actions 2, 4, 8, 9 by ascending Index (`Variable.key`, else `Name`), then `date`, `timestamp`;
- values scaled (`CoefA × raw + CoefB`, exact), JSON numbers in plain notation; text values as
  strings, except TIC data of only digits (optional sign), a number; `null` when missing; action 2
  gives `<key>_min`, `<key>_max`, `<key>_mean`;
- a key equal to `date`, `timestamp` or an earlier key of the record gets `_<Index>` (action 2:
  before the suffixes; also when one of its suffixed keys would repeat an earlier key);
- split greedily at `max_payload_kb` × 1024 bytes between records: a record joins the current
  document when the completed document stays within the limit, else starts the next; a record
  too big alone makes a document of its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import pyarrow as pa

from config.model import Action, DefinitionFile, Protocol, Variable
from store.events import (
    CommandResult,
    DeviceAlarm,
    GatewayAlarm,
    JournalItem,
    JsonValue,
    alarm_from_body,
    def_file_name,
    dump_json,
)

from ._records import cells, is_text_variable, recorded_variables, runs
from .context import Dates, ViewConfig, ViewError, definition_for, device_order, timestamp_ms
from .numbers import json_text, scaled_text

_RESERVED: Final = frozenset({"date", "timestamp"})
_TIC_NUMBER: Final = re.compile(r"^[+-]?[0-9]+$")


def _key(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class _Column:
    var: Variable
    keys: tuple[str, ...]     # JSON-quoted keys: one, or min/max/mean for action 2
    text: bool                # a text value (string in JSON), TIC digits excepted
    identity: bool            # CoefA 1, CoefB 0: the raw text is the scaled text


def record_keys(definition: DefinitionFile) -> list[tuple[Variable, tuple[str, ...]]]:
    """Each recorded variable with its key(s), duplicate-key rule applied."""
    used: set[str] = set(_RESERVED)
    result: list[tuple[Variable, tuple[str, ...]]] = []
    for var in recorded_variables(definition):
        base = var.key or var.name
        ranged = var.action is Action.MIN_MAX_MEAN

        def derived(name: str, ranged: bool = ranged) -> tuple[str, ...]:
            return (f"{name}_min", f"{name}_max", f"{name}_mean") if ranged else (name,)

        if base in used or any(k in used for k in derived(base)):
            base = f"{base}_{var.index}"
        keys = derived(base)
        used.update(keys)
        result.append((var, keys))
    return result


def _columns(definition: DefinitionFile) -> list[_Column]:
    return [_Column(var=var, keys=tuple(_key(k) for k in keys),
                    text=(is_text_variable(definition, var)
                          and var.action is not Action.MIN_MAX_MEAN),
                    identity=var.coef_a == 1 and var.coef_b == 0)
            for var, keys in record_keys(definition)]


def _number(raw: str | None, column: _Column) -> str:
    if raw is None:
        return "null"
    if column.identity and "e" not in raw and "E" not in raw:
        return raw  # already §9.3 plain text; most variables are unscaled
    return scaled_text(raw, column.var.coef_a, column.var.coef_b)


def _text_value(text: str | None, column: _Column, protocol: Protocol) -> str:
    if text is None:
        return "null"
    if protocol is Protocol.TIC and _TIC_NUMBER.match(text):
        return scaled_text(text, column.var.coef_a, column.var.coef_b)
    return _key(text)


def _device_records(table: pa.Table, definitions: Mapping[str, DefinitionFile],
                    device_index: str, dates: Dates) -> Iterator[str]:
    """The JSON object of each record of one device, in UTC order."""
    for run in runs(table):
        definition = definition_for(definitions, run.def_id, f"device {device_index}")
        columns = _columns(definition)
        found = cells(run, definition)
        per_record: list[dict[int, tuple[str | None, str | None, str | None, str | None]]] = [
            {} for _ in run.record_ts_ns]
        lows = iter(found.vmin.to_pylist())
        highs = iter(found.vmax.to_pylist())
        for pos, var, main, text, good, ranged in zip(
                run.record_pos.to_pylist(), found.var.to_pylist(), found.main.to_pylist(),
                found.text.to_pylist(), found.good.to_pylist(), found.ranged.to_pylist(),
                strict=True):
            low, high = (next(lows), next(highs)) if ranged else (None, None)
            per_record[pos][var] = (main, low, high, text if good else None)
        for ts_ns, values in zip(run.record_ts_ns, per_record, strict=True):
            fields: list[str] = []
            for column in columns:
                main, low, high, text = values.get(column.var.index, (None, None, None, None))
                if column.var.action is Action.MIN_MAX_MEAN:
                    texts3 = (_number(low, column), _number(high, column),
                              _number(main, column))
                    fields += [f"{k}:{v}" for k, v in zip(column.keys, texts3, strict=True)]
                elif column.text:
                    fields.append(f"{column.keys[0]}:"
                                  f"{_text_value(text, column, definition.protocol)}")
                else:
                    fields.append(f"{column.keys[0]}:{_number(main, column)}")
            fields.append(f'"date":"{dates.record(ts_ns)}"')
            fields.append(f'"timestamp":{timestamp_ms(ts_ns)}')
            yield "{" + ",".join(fields) + "}"


def data_records(records: Mapping[str, pa.Table], definitions: Mapping[str, DefinitionFile],
                 config: ViewConfig) -> Iterator[tuple[str, str]]:
    """(JSON-quoted device name, record object) in document order."""
    dates = Dates(config.time_zone)
    used: set[str] = set()
    for device_index in sorted(records, key=device_order):
        name = config.device_name(device_index)
        if name in used:
            # A removed device's name taken by another device of the window (names are unique
            # per snapshot only): one key per device, never two arrays under one.
            name = f"{name}_{device_index}"
        used.add(name)
        key = _key(name)
        for record in _device_records(records[device_index], definitions, device_index, dates):
            yield key, record


def _document(groups: Sequence[tuple[str, list[str]]]) -> str:
    return "{" + ",".join(f"{name}:[{','.join(recs)}]" for name, recs in groups) + "}"


def split_documents(items: Iterable[tuple[str, str]], limit_bytes: int) -> list[str]:
    """Greedy split of (device key, record) pairs into documents of at most `limit_bytes`."""
    documents: list[str] = []
    groups: list[tuple[str, list[str]]] = []
    size = 2
    for name, record in items:
        record_bytes = len(record.encode())
        if groups and groups[-1][0] == name:
            added = 1 + record_bytes
        else:
            added = (1 if groups else 0) + len(name.encode()) + 3 + record_bytes
        if groups and size + added > limit_bytes:
            documents.append(_document(groups))
            groups, size = [], 2
            added = len(name.encode()) + 3 + record_bytes
        if groups and groups[-1][0] == name:
            groups[-1][1].append(record)
        else:
            groups.append((name, [record]))
        size += added
    if groups:
        documents.append(_document(groups))
    return documents


def data_documents(records: Mapping[str, pa.Table], definitions: Mapping[str, DefinitionFile],
                   config: ViewConfig) -> list[bytes]:
    """The window's data payloads, in order (none when the window has no record)."""
    items = data_records(records, definitions, config)
    return [doc.encode() for doc in split_documents(items, config.max_payload_kb * 1024)]


# --------------------------------------------------------------------------- alarms, results


def alarm_message(item: JournalItem, definitions: Mapping[str, DefinitionFile],
                  config: ViewConfig) -> bytes:
    """One alarm's payload (docs/formats.md §14.3), keys in the manual's order."""
    dates = Dates(config.time_zone)
    body = alarm_from_body(item.body)
    when: dict[str, JsonValue] = {"date": dates.record(item.ts_ns),
                                  "timestamp": timestamp_ms(item.ts_ns)}
    if isinstance(body, GatewayAlarm):
        entry: dict[str, JsonValue] = {"type": body.alarm.upper(), "info": "GATEWAY"}
        if body.subject is not None:
            entry["subject"] = body.subject
        if body.text is not None:
            entry["text"] = body.text
        return dump_json({"alarms": None, "alarmsDevice": [{**entry, **when}]}).encode()
    definition = definition_for(definitions, item.def_id, f"alarm of device {item.device}")
    assert item.def_id is not None
    entry = {"defName": def_file_name(item.def_id), "deviceName": body.name,
             "source": body.source.value, "value": _alarm_value(body, definition),
             "variableIndex": body.var}
    return dump_json({"alarms": [{**entry, **when}], "alarmsDevice": None}).encode()


def _alarm_value(body: DeviceAlarm, definition: DefinitionFile) -> str:
    if body.is_text:
        return body.value
    try:
        var = definition.variable(body.var)
    except KeyError:
        raise ViewError(f"alarm of {body.name}: Index {body.var} is not in "
                        f"{definition.file_name}") from None
    return scaled_text(body.value, var.coef_a, var.coef_b)


def result_message(result: CommandResult) -> bytes:
    """A command result on the result topic: an array of one entry (docs/formats.md §14.4)."""
    return json_text([dict(result.entry())]).encode()
