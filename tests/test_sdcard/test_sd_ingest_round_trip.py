"""Render -> ingest -> the same values: DATA files made by the views (docs/formats.md §9) of any
values of every type, missing ones, text with any character, in a zone whose clocks go back
(the repeated hour), with and without the column header and in both date orders, read back by
`sunpm ingest` give each record's time, raw value, min, max and text."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from config import parse_definition
from config.model import Device
from exporters.views.context import Interface, ViewConfig
from exporters.views.data import data_file
from exporters.views.numbers import clean_text
from pipeline.drivers.modbus.codec import shortest_f32
from sdcard.ingest import ingest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test_exporters" / "views"))
from _views_site import Cell, records

UID = "WPMRT0001"
DEF_TEXT = ("modbusTCP;Inverter;ACME;RT\n"
            "1;3;1;U16;;u16;;1;0;;4\n"
            "2;3;2;I32;;i32;;0.1;0;;4\n"
            "3;3;4;U64;;u64;;1;0;;4\n"
            "4;3;8;F32;;f32;;1;0;;4\n"
            "5;3;10;F64;;f64;;1;0;;2\n"
            "6;3;14_16;String;;text;;1;0;;4\n"
            "7;3;22;IP;;ip;;1;0;;8\n")
DEFINITION = parse_definition(DEF_TEXT.encode(), "rt.csv").value
TEXT_VARS = {6, 7}
#: 2021-10-31 00:30 UTC: Paris goes from 03:00 back to 02:00 at 01:00 UTC, inside the rows.
START_S = 1_635_640_200


finite = st.floats(allow_nan=False, allow_infinity=False)
CELLS: dict[int, st.SearchStrategy[Cell]] = {
    1: st.integers(0, 65535),
    2: st.integers(-(2**31), 2**31 - 1),
    3: st.integers(0, 2**53),
    4: st.floats(allow_nan=False, allow_infinity=False, width=32).map(shortest_f32),  # as decoded
    5: st.tuples(finite, finite, finite).map(lambda t: (min(t), max(t), sorted(t)[1])),
    6: st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    7: st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
}
row = st.fixed_dictionaries({k: st.none() | v for k, v in CELLS.items()})


def _expected(cell: Cell, var: int) -> tuple[float | None, float | None, float | None,
                                              str | None]:
    """(raw, min, max, text) the dataset holds for a cell of the file."""
    if cell is None:
        return None, None, None, None
    if var in TEXT_VARS:
        assert isinstance(cell, str)
        text = clean_text(cell)
        return None, None, None, text or None   # an empty field is missing (§9.3)
    if isinstance(cell, tuple):
        low, high, mean = cell
        return mean, low, high, None
    assert not isinstance(cell, str)
    return float(cell), None, None, None


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rows=st.lists(row, min_size=1, max_size=4),
       gaps=st.lists(st.integers(1, 2400), min_size=4, max_size=4),
       tail=st.integers(1, 7200),
       zone=st.sampled_from(["UTC", "Europe/Paris", "America/Sao_Paulo"]),
       euro=st.booleans(), header=st.booleans())
# A row in the first 02:40 (CEST) of a window ending at 02:10 UTC, after the second one.
@example(rows=[{1: 5, 2: None, 3: None, 4: None, 5: None, 6: None, 7: None}],
         gaps=[600, 1, 1, 1], tail=5400, zone="Europe/Paris", euro=False,
         header=True)
def test_data_files_read_back_the_values_they_were_made_of(
        rows: list[dict[int, Cell]], gaps: list[int], tail: int, zone: str, euro: bool,
        header: bool) -> None:
    # The window [START_S, last row + tail): its end may lie an hour or more after the rows,
    # past both passes of the repeated hour; the file of the window before ends at its start.
    times = [START_S + sum(gaps[:k + 1]) for k in range(len(rows))]
    whens = [datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S") for t in times]
    # Text goes in as a text (the fixture reads digits as a TIC number: not for a String).
    numbers = [{k: (None if k in TEXT_VARS else v) for k, v in r.items()} for r in rows]
    table = records(DEFINITION, list(zip(whens, numbers, strict=True)))
    texts = [r[var] for r in rows for var in r]   # the order `records` writes rows in
    table = table.set_column(table.schema.get_field_index("text"), "text",
                             pa.array([t if isinstance(t, str) else None for t in texts],
                                      pa.string()))
    table = table.set_column(table.schema.get_field_index("quality"), "quality",
                             pa.array([1 if t is None else 0 for t in texts], pa.uint8()))
    device = Device(line=2, index="1", interface="127.0.0.1:502", name="inv",
                    address=1, def_file="rt.csv")
    config = ViewConfig(uid=UID, time_zone=zone, header_option=header, euro_date_format=euro,
                        devices=(device,))
    data = data_file(Interface.MODBUS, {"1": table}, {DEFINITION.snapshot_id: DEFINITION},
                     config)
    assert data is not None
    before = data_file(Interface.MODBUS, {"1": records(DEFINITION, [(
        datetime.fromtimestamp(START_S - 600, UTC).strftime("%Y-%m-%d %H:%M:%S"), {1: 1})])},
        {DEFINITION.snapshot_id: DEFINITION}, config)
    assert before is not None
    with TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        for sub in ("DATA", "DEF", "CONFIG"):
            (tree / sub).mkdir(parents=True)
        (tree / "DEF" / "rt.csv").write_text(DEF_TEXT)
        (tree / "CONFIG" / f"{UID}_config.ini").write_text(
            f"NTP_TimeZone={zone}\nFTP_EuroDateFormat={int(euro)}\n")
        for data_ts, body in ((START_S, before), (times[-1] + tail, data)):
            end = datetime.fromtimestamp(data_ts, UTC).strftime("%y%m%d_%H%M%S")
            (tree / "DATA" / f"{UID}_MODBUS_{end}.csv.gz").write_bytes(body)
        result = ingest(tree, Path(tmp) / "out")
        assert result.findings == []
        got = {}
        for path in (Path(tmp) / "out").glob("uid=*/device=1/date=*/*.parquet"):
            for r in pq.read_table(path).to_pylist():
                if r["time"].timestamp() < START_S:
                    continue
                got[(int(r["time"].timestamp()), r["var"])] = (r["raw"], r["min"], r["max"],
                                                                r["text"])
    expected = {(t, var): _expected(cell, var)
                for t, r in zip(times, rows, strict=True) for var, cell in r.items()}
    assert got.keys() == expected.keys()
    assert got == expected
