"""ALARM files `<uid>_AL_<ts>.csv.gz` (docs/formats.md §10) from the window's `alarm` events.

Lines in time order (the journal row's time, then `seq`), sources mixed:

    <datetime>;GATEWAY;<alarm>[;<subject>[;<text>]]
    <datetime>;<IO|MODBUS|TIC>;<defFile>;<deviceName>;<Index>;<value>

`<defFile>` is the name of the event's `def` snapshot, `<deviceName>` the daq name recorded when
the alarm was raised; a number's `<value>` is its exact decimal rounded half-even to six places
(`numbers.alarm_text`), a text value is printed as is (separators replaced, §1.1).

An event that cannot be a line (a device alarm without its definition snapshot, from an older
journal; a damaged body) is left out of every rendering of its window alike, and told to
`aside` when given (docs/spec-notes.md, "Event set aside from a file").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from config.model import DefinitionFile
from store.events import (
    DeviceAlarm,
    EventBodyError,
    GatewayAlarm,
    JournalItem,
    alarm_from_body,
    def_file_name,
)

from .context import Dates, SetAside, ViewConfig, ViewError
from .gz import gzip_bytes
from .numbers import NumberTextError, clean_text
from .numbers import alarm_text as number_alarm_text


def alarm_items(items: Iterable[JournalItem]) -> list[JournalItem]:
    """The window's `alarm` events in the order raised (time, then journal order)."""
    return sorted((i for i in items if i.kind == "alarm"), key=lambda i: (i.ts_ns, i.seq))


def alarm_line(item: JournalItem, dates: Dates, euro: bool = False) -> str:
    body = alarm_from_body(item.body)
    when = dates.record(item.ts_ns, euro)
    if isinstance(body, GatewayAlarm):
        fields = [when, "GATEWAY", body.alarm]
        if body.subject is not None or body.text is not None:
            fields.append(clean_text(body.subject or ""))
        if body.text is not None:
            fields.append(clean_text(body.text))
        return ";".join(fields)
    return ";".join([when, body.source.value, _def_file(item), clean_text(body.name),
                     str(body.var), _value(body)])


def _def_file(item: JournalItem) -> str:
    if item.def_id is None:
        raise ViewError(f"alarm event {item.seq} about a device has no definition snapshot")
    return clean_text(def_file_name(item.def_id))


def _value(body: DeviceAlarm) -> str:
    return clean_text(body.value) if body.is_text else number_alarm_text(body.value)


def alarm_lines(items: Iterable[JournalItem], config: ViewConfig,
                aside: list[SetAside] | None = None) -> Iterator[str]:
    """The ALARM file's lines; it prints raw values and only names the definition file."""
    dates = Dates(config.time_zone)
    for item in alarm_items(items):
        try:
            line = alarm_line(item, dates, config.euro_date_format)
        except (ViewError, EventBodyError, NumberTextError) as err:
            # Rendered again it fails again: kept in, it would stop every file of the stream.
            if aside is not None:
                aside.append((item, err))
            continue
        yield line


def alarm_text(items: Iterable[JournalItem], definitions: Mapping[str, DefinitionFile],
               config: ViewConfig, aside: list[SetAside] | None = None) -> str:
    """The ALARM file's text ("" when the window has no alarm).

    Takes the window's definition snapshots like every view of device events; the file itself
    prints raw values and the snapshot's file name, so it reads none of them.
    """
    del definitions
    return "".join(line + "\n" for line in alarm_lines(items, config, aside))


def alarm_file(items: Iterable[JournalItem], definitions: Mapping[str, DefinitionFile],
               config: ViewConfig) -> bytes | None:
    """The `.csv.gz` bytes, or None when the window has no alarm (no file)."""
    text = alarm_text(items, definitions, config)
    return gzip_bytes(text.encode()) if text else None
