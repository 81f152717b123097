"""DATA and `_P_` files: the examples of docs/formats.md §9.5 byte for byte, and block rules."""

from __future__ import annotations

import gzip
import random
import zlib

import pyarrow as pa
import pytest
from _views_site import (
    DEFINITIONS,
    INV,
    IO,
    METER,
    METER_SMALL,
    TIC,
    Cell,
    Golden,
    config,
    definition,
    journal,
    ns,
    records,
    window_records,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from exporters.views.context import Interface, ViewError
from exporters.views.data import data_file, data_text, param_file, param_text
from exporters.views.gz import HEADER
from exporters.views.names import data_file_name
from exporters.views.numbers import format_float32, format_float64
from store.events import ParamRead, journal_items

END = ns("2021-02-05 09:15:00")


@pytest.mark.parametrize("interface", list(Interface))
def test_data_files_of_the_spec_example(interface: Interface, golden: Golden) -> None:
    name = data_file_name("WPM00BDE4", interface, END)
    data = data_file(interface, window_records(), DEFINITIONS, config())
    assert data is not None
    assert data[:10] == HEADER
    golden(name.removesuffix(".gz"), gzip.decompress(data))


def test_euro_date_format_starts_rows_day_first(golden: Golden) -> None:
    text = data_text(Interface.MODBUS, window_records(), DEFINITIONS,
                     config(euro_date_format=True))
    golden("WPM00BDE4_MODBUS_210205_091500.euro.csv", text)


def test_header_option_0_drops_the_column_header(golden: Golden) -> None:
    text = data_text(Interface.MODBUS, window_records(), DEFINITIONS, config(header_option=False))
    golden("WPM00BDE4_MODBUS_210205_091500.noheader.csv", text)


def test_same_window_gives_the_same_bytes_whatever_the_row_order() -> None:
    first = data_file(Interface.MODBUS, window_records(), DEFINITIONS, config())
    shuffled = {k: t.take(pa.array(list(reversed(range(t.num_rows)))))
                for k, t in window_records().items()}
    assert data_file(Interface.MODBUS, shuffled, DEFINITIONS, config()) == first


def test_no_record_of_the_interface_gives_no_file() -> None:
    only_io = {"IO": window_records()["IO"]}
    assert data_file(Interface.MODBUS, only_io, DEFINITIONS, config()) is None
    assert data_file(Interface.TIC, {}, DEFINITIONS, config()) is None


def _params() -> list[tuple[str, str, str | None, str | None, str]]:
    inv = ParamRead(values={1: "ACME", 3: "-2", 5: "0", 7: "0"}).to_body()
    tic = ParamRead(values={1: "041676011381", 2: "BASE", 3: "30"}).to_body()
    return [
        ("2021-02-05 09:00:20.412", "param", "1", INV.snapshot_id, inv),
        ("2021-02-05 09:05:00", "log", None, None,
         '{"level":"INFO","category":"system","message":"x"}'),
        ("2021-02-05 09:12:07.100", "param", "TIC1", TIC.snapshot_id, tic),
        ("2021-02-05 09:12:07.730", "param", "1", INV.snapshot_id, inv),
    ]


@pytest.mark.parametrize("interface", [Interface.MODBUS, Interface.TIC])
def test_param_files_of_the_spec_example(interface: Interface, golden: Golden) -> None:
    items = journal_items(journal(_params()))
    data = param_file(interface, items, DEFINITIONS, config())
    assert data is not None
    golden(data_file_name("WPM00BDE4", interface, END, parameters=True).removesuffix(".gz"),
           gzip.decompress(data))


def test_no_parameter_read_gives_no_param_file() -> None:
    items = journal_items(journal(_params()))
    assert param_file(Interface.IO, items, DEFINITIONS, config()) is None


def test_param_missing_value_is_an_empty_field() -> None:
    body = ParamRead(values={1: "ACME", 3: None, 5: "0", 7: "0"}, quality={3: 1}).to_body()
    items = journal_items(journal([("2021-02-05 09:00:20", "param", "1", INV.snapshot_id, body)]))
    text = param_text(Interface.MODBUS, items, DEFINITIONS, config())
    assert text.splitlines()[-1] == "21/02/05-10:00:20;ACME;;0;0"


def test_rows_follow_utc_order_when_dst_ends() -> None:
    # 2021-10-31 Europe/Paris: 01:00 UTC is 02:00 CET, after 00:50 UTC = 02:50 CEST.
    table = records(METER, [
        ("2021-10-31 00:40:00", {1: 1}),
        ("2021-10-31 00:50:00", {1: 2}),
        ("2021-10-31 01:00:00", {1: 3}),
        ("2021-10-31 01:10:00", {1: 4}),
    ])
    text = data_text(Interface.MODBUS, {"2": table}, DEFINITIONS, config())
    assert text.splitlines()[3:] == [
        "21/10/31-02:40:00;1;;;;", "21/10/31-02:50:00;2;;;;",
        "21/10/31-02:00:00;3;;;;", "21/10/31-02:10:00;4;;;;"]


def test_renamed_definition_starts_a_new_block_other_edits_continue_it() -> None:
    renamed = definition(METER_SMALL, "meter_v2.csv")
    edited = definition(METER_SMALL.replace("kWh", "MWh"), "meter_small.csv")
    definitions = {**DEFINITIONS, renamed.snapshot_id: renamed, edited.snapshot_id: edited}
    table = pa.concat_tables([
        records(METER, [("2021-02-05 08:50:00", {1: 1})], first_seq=0),
        records(edited, [("2021-02-05 09:00:00", {1: 2})], first_seq=1),
        records(renamed, [("2021-02-05 09:10:00", {1: 3})], first_seq=2),
    ])
    text = data_text(Interface.MODBUS, {"2": table}, definitions, config())
    assert text.splitlines() == [
        "DEVICEINDEX;2", "modbusRTU;meter_small.csv", "3;1;2;3",
        "21/02/05-09:50:00;1;;;;", "21/02/05-10:00:00;2;;;;",
        "DEVICEINDEX;2", "modbusRTU;meter_v2.csv", "3;1;2;3",
        "21/02/05-10:10:00;3;;;;"]


def test_changed_column_list_starts_a_new_block() -> None:
    more = definition(METER_SMALL.replace("Setup;;1;0;;0", "Setup;;1;0;;4"), "meter_small.csv")
    definitions = {**DEFINITIONS, more.snapshot_id: more}
    table = pa.concat_tables([
        records(METER, [("2021-02-05 08:50:00", {1: 1})], first_seq=0),
        records(more, [("2021-02-05 09:00:00", {1: 2, 4: 7})], first_seq=1),
    ])
    lines = data_text(Interface.MODBUS, {"2": table}, definitions, config()).splitlines()
    assert lines[4:] == ["DEVICEINDEX;2", "modbusRTU;meter_small.csv", "4;1;2;3;4",
                         "21/02/05-10:00:00;2;;;;;7"]


def test_text_values_replace_separators_and_exact_decimals_print_verbatim() -> None:
    table = records(INV, [("2021-02-05 08:50:00", {1: "AC;ME\nX", 6: 5})])
    # U32 with an exact decimal in `text` (as the store keeps values floats cannot print back).
    table = table.set_column(6, "text", pa.array([None, "12345678901234567.89"], pa.string()))
    definitions = dict(DEFINITIONS)
    lines = data_text(Interface.MODBUS, {"1": table}, definitions, config()).splitlines()
    assert lines[-1] == "21/02/05-09:50:00;;;;;12345678901234567.89;"
    items = journal_items(journal([("2021-02-05 09:00:20", "param", "1", INV.snapshot_id,
                                    ParamRead(values={1: "AC;ME\r\nX"}).to_body())]))
    assert param_text(Interface.MODBUS, items, definitions, config()).splitlines()[-1] \
        == "21/02/05-10:00:20;AC ME  X;;;"


def test_f32_prints_the_shortest_float32_text() -> None:
    f32 = definition("modbusTCP;X;Y;Z\n1;3;0;F32;;P;;1;0;;4\n2;3;2;F32;;Q;;1;0;;2\n", "f.csv")
    table = records(f32, [("2021-02-05 08:50:00",
                           {1: 1.100000023841858, 2: (0.1, 1e-07, 0.1 + 0.2)})])
    table = table.set_column(4, "vmin", pa.array([None, 0.10000000149011612], pa.float64()))
    text = data_text(Interface.MODBUS, {"3": table}, {f32.snapshot_id: f32}, config())
    # min and max are F32 raw values; the mean is a float64 (docs/formats.md §9.3).
    assert text.splitlines()[-1] == "21/02/05-09:50:00;1.1;0.1;0.0000001;0.30000000000000004"


def test_missing_definition_snapshot_is_a_view_error() -> None:
    with pytest.raises(ViewError, match=r"definition snapshot .* is missing"):
        data_text(Interface.IO, {"IO": window_records()["IO"]}, {}, config())


def test_a_meter_in_no_configuration_gets_an_empty_serial_number_not_a_failed_window() -> None:
    # Its last configuration gone with the journal's quota, a failed window failed at every
    # session and held everything after it.
    text = data_text(Interface.TIC, {"TIC1": window_records()["TIC1"]}, DEFINITIONS,
                     config(devices=()))
    assert text.splitlines()[0] == "SNTIC;;001"


def test_bad_quality_is_printed_as_missing_even_with_a_value() -> None:
    table = records(IO, [("2021-02-05 08:50:00", {1: 12.25, 6: 3})])
    table = table.set_column(7, "quality", pa.array([0, 4], pa.uint8()))
    lines = data_text(Interface.IO, {"IO": table}, DEFINITIONS, config()).splitlines()
    assert lines[-1] == "21/02/05-09:50:00;12.25;;;;;;"


def test_gzip_is_one_member_zlib_can_read() -> None:
    data = data_file(Interface.IO, window_records(), DEFINITIONS, config())
    assert data is not None
    text = zlib.decompress(data, 31)
    assert text.startswith(b"TypeIO;")


def test_param_read_of_a_definition_without_parameters_prints_nothing() -> None:
    body = ParamRead(values={}).to_body()
    items = journal_items(journal([("2021-02-05 09:00:20", "param", "IO", IO.snapshot_id, body)]))
    assert param_file(Interface.IO, items, DEFINITIONS, config()) is None


def test_row_of_an_unlisted_variable_never_takes_the_place_of_a_missing_one() -> None:
    # Setup (Index 4, action 0) has a row, E_import (Index 3) none: as many rows as cells.
    table = records(METER, [("2021-02-05 08:50:00", {1: 2305, 2: (-1, 1, 0), 4: 77})])
    lines = data_text(Interface.MODBUS, {"2": table}, DEFINITIONS, config()).splitlines()
    assert lines[-1] == "21/02/05-09:50:00;2305;-1;1;0;"
    table = records(METER, [("2021-02-05 08:50:00", {1: 2305, 3: 5, 4: 77})])
    lines = data_text(Interface.MODBUS, {"2": table}, DEFINITIONS, config()).splitlines()
    assert lines[-1] == "21/02/05-09:50:00;2305;;;;5"


MIXED = definition(
    "modbusTCP;X;Y;Z\n1;3;0;U16;;A;;1;0;;4\n2;3;1;F32;;B;;1;0;;2\n3;3;3;I16;;C;;1;0;;8\n"
    "4;3;4;U16;;D;;1;0;;0\n5;3;5;F32;;E;;1;0;;4\n6;3;7;I32;;F;;1;0;;2\n", "mixed.csv")

f32s = st.floats(width=32, allow_nan=False, allow_infinity=False)
f64s = st.floats(allow_nan=False, allow_infinity=False)
cell_of = {1: f64s, 2: st.tuples(f32s, f32s, f64s), 3: f64s, 4: f64s, 5: f32s,
           6: st.tuples(f64s, f64s, f64s)}
# A record is its rows: at least one (a variable may lack its row).
record_cells = st.fixed_dictionaries({}, optional={k: st.one_of(st.none(), s)
                                                   for k, s in cell_of.items()}).filter(bool)


def _reference_fields(cells: dict[int, Cell]) -> list[str]:
    """The fields a record must print, by the scalar rules alone (no Arrow)."""
    fields: list[str] = []
    for index in (1, 2, 3, 5, 6):
        cell = cells.get(index)
        fmt = format_float32 if index in (2, 5) else format_float64
        if index in (2, 6):
            if isinstance(cell, tuple):
                fields += [fmt(cell[0]), fmt(cell[1]), format_float64(cell[2])]
            else:
                fields += ["", "", ""]
        else:
            fields.append("" if cell is None else fmt(float(cell)))  # type: ignore[arg-type]
    return fields


@settings(max_examples=60, deadline=None)
@given(st.lists(record_cells, min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_columnar_rows_equal_the_scalar_reference(cells: list[dict[int, Cell]],
                                                  order: random.Random) -> None:
    rows = [(f"2021-02-05 {8 + k // 6:02d}:{k % 6 * 10:02d}:00", c) for k, c in enumerate(cells)]
    table = records(MIXED, rows)
    table = table.take(pa.array(order.sample(range(table.num_rows), table.num_rows), pa.int64()))
    lines = data_text(Interface.MODBUS, {"4": table}, {MIXED.snapshot_id: MIXED},
                      config()).splitlines()
    assert lines[:3] == ["DEVICEINDEX;4", "modbusTCP;mixed.csv", "5;1;2;3;5;6"]
    assert [line.split(";")[1:] for line in lines[3:]] == [_reference_fields(c) for c in cells]


def test_a_variable_moved_to_action_2_starts_a_new_block() -> None:
    # Same file name, same Indexes: only V_L1's fields change, one value to `min;max;mean`. In
    # one block the rows would differ in width under one column header (none with
    # HeaderOption=0), and a reader could not tell which fields are which.
    ranged = definition(METER_SMALL.replace("V_L1;;0.1;0;V;4", "V_L1;;0.1;0;V;2"),
                        "meter_small.csv")
    definitions = {**DEFINITIONS, ranged.snapshot_id: ranged}
    table = pa.concat_tables([
        records(METER, [("2021-02-05 08:50:00", {1: 1, 2: (1, 2, 1.5), 3: 4})], first_seq=0),
        records(ranged, [("2021-02-05 09:00:00", {1: (1, 3, 2), 2: (1, 2, 1.5), 3: 5})],
                first_seq=1),
    ])
    assert data_text(Interface.MODBUS, {"2": table}, definitions, config()).splitlines() == [
        "DEVICEINDEX;2", "modbusRTU;meter_small.csv", "3;1;2;3", "21/02/05-09:50:00;1;1;2;1.5;4",
        "DEVICEINDEX;2", "modbusRTU;meter_small.csv", "3;1;2;3",
        "21/02/05-10:00:00;1;3;2;1;2;1.5;5"]
