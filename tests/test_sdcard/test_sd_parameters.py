"""Parameter reads (journal `param` events, the `_P_` files) reach the fleet dataset from a dump
as from the files: `sd export-parquet` of a dump equals `ingest` of what it delivers (the export
left them out, so a dataset built from cards lacked every serial number and scale factor)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import duckdb
from plant import METER_DEF, NS, T0, day_batch, sunpm

from config import load_site
from store import Log, StoreOptions
from store.events import ParamRead

UID = "WPMPRM001"
# The plant's meter (records of variables 1 to 4) with two parameters.
INV_DEF = METER_DEF + (b"5;3;40004_16;String;;Mn;;1;0;;1\n"
                       b"6;3;40070;I16;;SF;;1;0;;1\n")


def _config(root: Path, server: Path) -> Path:
    files = {f"CONFIG/{UID}_config.ini": (f"SERVER_Type=dir\nDIR_Path={server}\n"
                                          "NTP_TimeZone=Europe/Paris\n").encode(),
             f"CONFIG/{UID}_daq.csv": (
                 b"index;interface;name;address;acqPeriod(s);timeout(ms);serialNumber;"
                 b"parameters;category;model;defFile\n"
                 b"1;127.0.0.1:1502;inv_a;1;600;1000;;;Inverter;X;inv.csv\n"),
             f"CONFIG/{UID}_var.ini": b"", f"CONFIG/{UID}_scl.ini": b"",
             "DEF/inv.csv": INV_DEF}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


async def _record(store: Path, config: Path) -> None:
    async with await Log.open(store, StoreOptions(flush_s=0.05)) as log:
        def_id = log.put_definition("inv.csv", INV_DEF)
        snapshot = log.put_config(load_site(config).files())
        await log.append_journal("config", {"snapshot": snapshot}, ts_ns=T0 * NS)
        await log.append_records("1", day_batch("1", def_id, [T0 + 600, T0 + 1200]))
        for offset, values in ((123_456_789_012, {5: "ACME;X", 6: "-2"}),
                               (4_000_000_000_000, {5: "ACME", 6: None})):
            await log.append_journal("param", ParamRead(values=values).to_fields(),
                                     device="1", def_=def_id, ts_ns=T0 * NS + offset)
        await log.commit()


def test_parameter_reads_reach_the_dataset_from_a_dump_as_from_its_files(
        tmp_path: Path) -> None:
    server, store = tmp_path / "server", tmp_path / "store"
    config = _config(tmp_path / "cfg", server)
    asyncio.run(_record(store, config))
    tree = tmp_path / "tree"
    ran = sunpm("sd", "reexport", store, "--server", "1", "--from", "2021-02-01", "--to",
                "2021-02-02", "--out", tree)
    assert ran.code == 0, ran.err
    assert [p.name for p in (tree / "DATA").iterdir() if "_P_" in p.name]
    for sub in ("CONFIG", "DEF"):
        shutil.copytree(config / sub, tree / sub)
    assert sunpm("ingest", tree, tmp_path / "ingested").code == 0
    assert sunpm("sd", "export-parquet", store, tmp_path / "exported").code == 0

    query = ("SELECT strftime(time, '%H:%M:%S.%f'), var, name, unit, raw, scaled, min, max, "
             "text, definition, def FROM read_parquet('{}/uid=*/device=*/date=*/*.parquet') "
             "ORDER BY ALL")
    exported = duckdb.sql(query.format(tmp_path / "exported")).fetchall()
    assert exported == duckdb.sql(query.format(tmp_path / "ingested")).fetchall()
    params = [(*r[:6], r[8]) for r in exported if r[1] in (5, 6)]
    # Dated to the second, as the `_P_` file dates it; a text as cleaned there; a number read.
    assert params == [("00:02:03.000000", 5, "Mn", "", None, None, "ACME X"),
                      ("00:02:03.000000", 6, "SF", "", -2.0, -2.0, None),
                      ("01:06:40.000000", 5, "Mn", "", None, None, "ACME"),
                      ("01:06:40.000000", 6, "SF", "", None, None, None)]
    assert len(exported) == len(params) + 2 * 4  # and the two records' four variables
