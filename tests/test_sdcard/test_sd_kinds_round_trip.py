"""A day of an I/O module, a Linky meter and an inverter with a String register, delivered by the
real session to a `dir` server: `sunpm ingest` of the delivered files gives the values `sd
export-parquet` gives from the dump (TIC text and the number it reads as, analog inputs scaled,
min;max;mean triples, text with characters `str.splitlines` breaks at, an F32 as decoded), but
the `;` a file cannot hold (docs/formats.md §1.1: written as a space)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from plant import NS, Plant, ingested_and_exported, open_gateway

from exporters.session import Trigger
from pipeline.drivers.modbus.codec import shortest_f32

T0 = 1_612_137_600  # 2021-02-01 00:00 UTC
DEFS = {
    "io.csv": b"io;WebdynSunPM;Webdyn;ioSunPM\n1;1;1;1;;AI1;;0.001;0;mA;4\n"
              b"2;1;2;2;;AI2;;1;0;V;2\n6;2;2;2;;S0_1;;1;0;Wh;4\n",
    "tic.csv": b"tic;Meter;Enedis;Linky\n1;ADCO;;;;ADCO;;1;0;;4\n4;BASE;;;;BASE;;1;0;Wh;4\n"
               b"5;PTEC;;;;PTEC;;1;0;;8\n8;PAPP;;;;PAPP;;1;0;VA;2\n",
    "text.csv": b"modbusTCP;Inverter;ACME;T\n1;3;1_8;String;;Label;;1;0;;4\n"
                b"2;3;9;U16;;W;;0.1;0;W;2\n3;3;10;F32;;T;;1;0;C;4\n",
}
DAQ = (b"index;interface;name;address;acqPeriod(s);timeout(ms);serialNumber;parameters;"
       b"category;model;defFile\n"
       b"IO;;Io;;600;;;;WebdynSunPM;ioSunPM;io.csv\n"
       b"TIC1;;Linky;;600;;041676011381;;Meter;Linky;tic.csv\n"
       b"3;127.0.0.1:1502;inv;1;600;1000;;;Inverter;T;text.csv\n")
TEXTS = ["a;b", "form\x0cfeed\u2028sep", None, "123", "  x  ", "1.50"]

Row = tuple[int, int, float | None, float | None, float | None, str | None]


def _batch(def_id: str, rows: list[Row]) -> pa.RecordBatch:
    ts, var, value, vmin, vmax, text = (list(c) for c in zip(*rows, strict=True))
    return pa.record_batch({
        "ts": pa.array([t * NS for t in ts], pa.timestamp("ns", tz="UTC")),
        "var": pa.array(var, pa.int32()),
        "value": pa.array(value, pa.float64()),
        "vmin": pa.array(vmin, pa.float64()),
        "vmax": pa.array(vmax, pa.float64()),
        "text": pa.array(text, pa.string()),
        "quality": pa.array([0] * len(rows), pa.uint8()),
        "def": pa.array([def_id] * len(rows)).dictionary_encode(),
    })


async def _build(root: Path) -> Plant:
    async with open_gateway(root, T0, daq=DAQ, defs=DEFS) as gateway:
        rows: dict[str, list[Row]] = {"IO": [], "TIC1": [], "3": []}
        for k in range(1, 145):
            t = T0 + 600 * k
            rows["IO"] += [(t, 1, 4000.0 + k, None, None, None),
                           (t, 2, 12.5 + k, 10.0, 15.0 + k, None),
                           (t, 6, 3.0 * k, None, None, None)]
            rows["TIC1"] += [(t, 1, 41676011381.0, None, None, "041676011381"),
                             (t, 4, 12345678.0 + k, None, None, f"{12345678 + k:09d}"),
                             (t, 5, None, None, None, "TH.."),
                             (t, 8, 930.0 + k, 640.0, 1250.0, None)]
            rows["3"] += [(t, 1, None, None, None, TEXTS[k % len(TEXTS)]),
                          (t, 2, 2301.0 + k, 2290.0, 2310.0 + k, None),
                          (t, 3, shortest_f32(1.1 * k), None, None, None)]
        definition = {"IO": "io.csv", "TIC1": "tic.csv", "3": "text.csv"}
        log = gateway.log
        await asyncio.gather(*[
            log.append_records(dev, _batch(gateway.def_ids[definition[dev]], dev_rows))
            for dev, dev_rows in rows.items()])
        await log.commit()
        result = await gateway.session.run(
            Trigger.SCHEDULE, started=datetime.fromtimestamp(T0 + 86_401, UTC))
        assert result.ok, result
    return gateway.dumped(T0, T0 + 86_400)


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Plant:
    return asyncio.run(_build(tmp_path_factory.mktemp("kinds")))


def test_ingest_of_io_tic_and_text_files_equals_export_parquet_of_the_dump(
        day: Plant, tmp_path: Path) -> None:
    from_files, from_dump = ingested_and_exported(
        day, tmp_path, "device, epoch_ns(time), var, name, unit, raw, scaled, min, max, text")
    assert len(from_dump) == 144 * (3 + 4 + 3)
    assert {r[0] for r in from_dump} == {"IO", "TIC1", "3"}
    assert from_files == [(*r[:9], r[9].replace(";", " ") if r[9] else r[9])
                          for r in from_dump]
    texts = {r[9] for r in from_dump if r[0] == "3" and r[2] == 1}
    assert texts == set(TEXTS)
    tic_index = next(r for r in from_files if r[0] == "TIC1" and r[2] == 4)
    assert tic_index[5:] == (12345679.0, 12345679.0, None, None, "012345679")
