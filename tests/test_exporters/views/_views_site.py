"""The site of docs/formats.md §9.5, as inputs of the views: definitions, daq rows, records.

Definitions are parsed from their spec text by `config.parse_definition`, so the fixtures read
like the spec.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import pyarrow as pa

from config import parse_definition
from config.model import DefinitionFile, Device
from exporters.views.context import ViewConfig
from store.schema import JOURNAL_SCHEMA, RECORDS_SCHEMA

#: The `golden` fixture (conftest.py): `golden(name, text)` compares with tests/golden/views/<name>.
Golden = Callable[[str, str | bytes], None]

UID = "WPM00BDE4"
PARIS = "Europe/Paris"

INV_SMALL = """modbusTCP;Inverter;ACME;Solar_Inverter
1;3;40004_32;String;;1_Mn;;1;0;;1
2;3;40072;U16;103_A_SF;103_A;;1;0;A;4
3;3;40076;I16;;103_A_SF;;1;0;;1
4;3;40084;I16;103_W_SF;103_W;;1;0;W;2
5;3;40085;I16;;103_W_SF;;1;0;;1
6;3;40094;U32;103_WH_SF;103_WH;;1;0;Wh;4
7;3;40096;I16;;103_WH_SF;;1;0;;1
8;3;40108;U16;;103_St;;1;0;;8
"""

METER_SMALL = """modbusRTU;Meter;ACME;M3
1;4;0;I32_W;;V_L1;;0.1;0;V;4
2;4;40;I32_W;;P_total;;0.1;0;W;2
3;4;62;U32_W;;E_import;;0.1;0;kWh;4
4;3;4354;U16;;Setup;;1;0;;0
"""

IO_DEF = """io;WebdynSunPM;Webdyn;ioSunPM
1;1;1;1;;AI1;;1;0;mA;4
2;1;2;2;;AI2;;1;0;V;2
3;1;3;1;;AI3;;1;0;mA;0
4;1;4;1;;AI4;;1;0;mA;0
5;2;1;1;;DI1;;1;0;;8
6;2;2;2;;S0_1;;1;0;Wh;4
7;2;3;1;;DI3;;1;0;;0
8;3;1;;;Relay;;1;0;;4
"""

TIC_DEF = """tic;Meter;Enedis;Linky
1;ADCO;;;;ADCO;;1;0;;1
2;OPTARIF;;;;OPTARIF;;1;0;;1
3;ISOUSC;;;;ISOUSC;;1;0;A;1
4;BASE;;;;BASE;;1;0;Wh;4
5;PTEC;;;;PTEC;;1;0;;8
6;IINST;;;;IINST;;1;0;A;4
7;IMAX;;;;IMAX;;1;0;A;0
8;PAPP;;;;PAPP;;1;0;VA;2
9;HHPHC;;;;HHPHC;;1;0;;0
10;MOTDETAT;;;;MOTDETAT;;1;0;;0
"""


def definition(text: str, file_name: str, *, warnings: int = 0) -> DefinitionFile:
    """The definition file `text` as the config parser reads it, with `warnings` warnings."""
    parsed = parse_definition(text.encode(), file_name)
    assert parsed.value is not None and len(parsed.warnings) == warnings, parsed.warnings
    return parsed.value


INV = definition(INV_SMALL, "inv_small.csv")
METER = definition(METER_SMALL, "meter_small.csv")
IO = definition(IO_DEF, "WPM00BDE4_IO.csv")
TIC = definition(TIC_DEF, "WPM00BDE4_TIC_LINKY.csv")
DEFINITIONS = {d.snapshot_id: d for d in (INV, METER, IO, TIC)}

DEVICES = (
    Device(line=9, index="IO", interface="", name="Io", address=None, def_file=IO.file_name),
    Device(line=10, index="TIC1", interface="", name="Linky", address=None,
           serial_number="041676011381", parameters="1200", def_file=TIC.file_name),
    Device(line=11, index="1", interface="192.168.10.23:502", name="inv_a", address=126,
           timeout_ms=5000, parameters="1", def_file=INV.file_name),
    Device(line=12, index="2", interface="SERIAL2", name="meter_1", address=3,
           def_file=METER.file_name),
)


def config(**changes: object) -> ViewConfig:
    return dataclasses.replace(ViewConfig(uid=UID, time_zone=PARIS, devices=DEVICES), **changes)


def ns(text: str) -> int:
    """UTC nanoseconds of `2021-02-05 08:50:00` (UTC), milliseconds allowed."""
    moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


# A cell: a number (value), a str (text; TIC data also sets `value` when numeric), a tuple
# (min, max, mean) for action 2, or None (missing, quality 1 timeout).
Cell = float | int | str | tuple[float, float, float] | None


def records(definition_file: DefinitionFile, rows: Sequence[tuple[str, Mapping[int, Cell]]],
            first_seq: int = 0) -> pa.Table:
    columns: dict[str, list[object]] = {n: [] for n in RECORDS_SCHEMA.names}
    for seq, (when, cells) in enumerate(rows, start=first_seq):
        for var, cell in cells.items():
            value = vmin = vmax = text = None
            if isinstance(cell, tuple):
                vmin, vmax, value = (float(x) for x in cell)
            elif isinstance(cell, str):
                text = cell
                value = float(cell) if cell.lstrip("+-").isdigit() else None
            elif cell is not None:
                value = float(cell)
            columns["ts"].append(ns(when))
            columns["seq"].append(seq)
            columns["var"].append(var)
            columns["value"].append(value)
            columns["vmin"].append(vmin)
            columns["vmax"].append(vmax)
            columns["text"].append(text)
            columns["quality"].append(1 if cell is None else 0)
            columns["def"].append(definition_file.snapshot_id)
    return pa.Table.from_pydict(columns, schema=RECORDS_SCHEMA)


def window_records() -> dict[str, pa.Table]:
    """The records of the window [08:45, 09:15) UTC of §9.5."""
    missing: dict[int, Cell] = {2: None, 4: None, 6: None, 8: None}
    return {
        "1": records(INV, [
            ("2021-02-05 08:50:00", {2: 8.12, 4: (2041, 2102, 2078.8), 6: 1234567, 8: 4}),
            ("2021-02-05 09:00:00", missing),
            ("2021-02-05 09:10:00", {2: 7.99, 4: (1998, 2032, 2015.5), 6: 1234602, 8: 4}),
        ]),
        "2": records(METER, [
            ("2021-02-05 08:50:00", {1: 2305, 2: (-1520, -1480, -1500), 3: 987654}),
            ("2021-02-05 09:00:00", {1: 2311, 2: (-1530, -1490, -1512.5), 3: 987679}),
            ("2021-02-05 09:10:00", {1: 2308, 2: (-1525, -1470, -1498.25), 3: 987704}),
        ]),
        "IO": records(IO, [
            ("2021-02-05 08:50:00", {1: 12.25, 2: (4.1, 4.38, 4.2514), 5: 0, 6: 10452, 8: 0}),
            ("2021-02-05 09:00:00", {1: 12.3, 2: (4.02, 4.4, 4.1875), 5: 0, 6: 10467, 8: 1}),
            ("2021-02-05 09:10:00", {1: 11.98, 2: (3.97, 4.21, 4.09), 5: 0, 6: 10481, 8: 1}),
        ]),
        "TIC1": records(TIC, [
            ("2021-02-05 08:50:00", {4: "012345678", 5: "TH..", 6: "004", 8: (640, 1250, 931.25)}),
            ("2021-02-05 09:00:00", {4: "012345838", 5: "TH..", 6: "005", 8: (870, 1310, 1102.5)}),
            ("2021-02-05 09:10:00", {4: "012346020", 5: "TH..", 6: "004", 8: (610, 1190, 905)}),
        ]),
    }


def journal(rows: Sequence[tuple[str, str, str | None, str | None, str]]) -> pa.Table:
    """Journal rows (time, kind, device, def id, body), seq from 0 in the given order."""
    columns: dict[str, list[object]] = {n: [] for n in JOURNAL_SCHEMA.names}
    for seq, (when, kind, device, def_id, body) in enumerate(rows):
        columns["ts"].append(ns(when))
        columns["seq"].append(seq)
        columns["kind"].append(kind)
        columns["device"].append(device)
        columns["def"].append(def_id)
        columns["body"].append(body)
    return pa.Table.from_pydict(columns, schema=JOURNAL_SCHEMA)
