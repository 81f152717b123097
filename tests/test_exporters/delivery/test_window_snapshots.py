"""A window renders with the configuration snapshot in force at its end; a device that snapshot no
longer lists keeps the daq row of the last snapshot that did (docs/behaviour.md §5.1 step 4): its
TIC serial number in DATA files, its name in MQTT data documents. Real store, real session to a
`dir` server."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from delivery_support import NS, T0, make_tree

from config import load_site
from exporters.outbox import Outbox
from exporters.rendering.source import store_source
from exporters.session import FileServerSession, Trigger
from exporters.transports import DirTransport
from store import Log
from store.delivery import FILE_SERVER_STREAMS, Stream, WindowSpec

UID = "WPMTEST01"
TIC_DEF = b"tic;Meter;Enedis;Linky\n1;ADCO;;;;ADCO;;1;0;;1\n4;BASE;;;;BASE;;1;0;Wh;4\n"
METER_DEF = b"modbusTCP;Meter;ACME;M3\n1;4;0;U16;;V_L1;;0.1;0;V;4\n"
HEAD = (b"index;interface;name;address;acqPeriod(s);timeout(ms);serialNumber;parameters;"
        b"category;model;defFile\n")
BOTH = (HEAD + b"1;127.0.0.1:1502;meter_a;1;600;1000;;;Meter;M3;meter.csv\n"
        b"TIC1;;Linky;;600;;041676011381;1200;;;tic.csv\n")
NONE = HEAD


def write_site(root: Path, server: str, daq: bytes) -> None:
    files = {
        f"CONFIG/{UID}_config.ini": f"{server}NTP_TimeZone=Europe/Paris\n".encode(),
        f"CONFIG/{UID}_daq.csv": daq,
        f"CONFIG/{UID}_var.ini": b"",
        f"CONFIG/{UID}_scl.ini": b"",
        "DEF/tic.csv": TIC_DEF,
        "DEF/meter.csv": METER_DEF,
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def one_record(def_id: str, t_s: int, var: int, value: float, text: str | None) -> pa.RecordBatch:
    return pa.record_batch({
        "ts": pa.array([t_s * NS], pa.timestamp("ns", tz="UTC")),
        "var": pa.array([var], pa.int32()),
        "value": pa.array([value], pa.float64()),
        "vmin": pa.array([None], pa.float64()),
        "vmax": pa.array([None], pa.float64()),
        "text": pa.array([text], pa.string()),
        "quality": pa.array([0], pa.uint8()),
        "def": pa.array([def_id]).dictionary_encode(),
    })


async def record_then_remove(store: Log, cfg: Path, server: str) -> None:
    """Both devices record at T0 + 600 s under the first snapshot; the second, journaled at
    T0 + 700 s, lists neither."""
    write_site(cfg, server, BOTH)
    snapshot = store.put_config(load_site(cfg).files())
    await store.append_journal("config", {"snapshot": snapshot}, ts_ns=T0 * NS, commit_now=True)
    tic = store.put_definition("tic.csv", TIC_DEF)
    meter = store.put_definition("meter.csv", METER_DEF)
    await store.append_records("TIC1", one_record(tic, T0 + 600, 4, 123.0, "000123"))
    await store.append_records("1", one_record(meter, T0 + 600, 1, 2305.0, None))
    await store.commit()
    write_site(cfg, server, NONE)
    snapshot = store.put_config(load_site(cfg).files())
    await store.append_journal("config", {"snapshot": snapshot}, ts_ns=(T0 + 700) * NS,
                               commit_now=True)


async def test_removed_tic_meter_keeps_its_serial_number_in_the_data_file(
        tmp_path: Path, store: Log) -> None:
    server = make_tree(tmp_path / "server")
    cfg = tmp_path / "cfg"
    await record_then_remove(store, cfg, f"SERVER_Type=dir\nDIR_Path={server}\n")
    site = load_site(cfg)
    outbox = Outbox(server=1, log=store, source=store_source(store, site, 1),
                    directory=tmp_path / "outbox", streams=FILE_SERVER_STREAMS)
    session = FileServerSession(settings=site.settings.servers[0], uid=UID,
                                transport=DirTransport(site.settings.servers[0]),
                                outbox=outbox, log=store)

    result = await session.run(Trigger.SCHEDULE,
                               started=datetime.fromtimestamp(T0 + 1200, UTC))

    assert result.ok, result
    tic = server / "DATA" / f"{UID}_TIC_210201_002000.csv.gz"
    assert gzip.decompress(tic.read_bytes()).decode() == (
        "SNTIC;041676011381;001\nTypeTIC;tic.csv\n1;4\n21/02/01-01:10:00;000123\n")


async def test_removed_device_keeps_its_name_in_the_mqtt_data_document(
        tmp_path: Path, store: Log) -> None:
    cfg = tmp_path / "cfg"
    await record_then_remove(store, cfg, "SERVER_Type=mqtt\nMQTT_Host=127.0.0.1\n"
                                         "MQTT_TopicData=plant/data\n")
    source = store_source(store, load_site(cfg), 1)
    end = (T0 + 1200) * NS
    spec = WindowSpec(server=1, stream=Stream.DATA, start_ns=T0 * NS, end_ns=end,
                      membership=store.watermark(), after=None,
                      config=source.config_snapshot(end))

    [document] = source.render(spec)

    assert json.loads(document.data) == {
        "meter_a": [{"V_L1": 230.5, "date": "21/02/01-01:10:00", "timestamp": 1612138200000}],
        "Linky": [{"BASE": 123, "date": "21/02/01-01:10:00", "timestamp": 1612138200000}],
    }
