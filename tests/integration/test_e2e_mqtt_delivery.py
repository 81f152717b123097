"""A site whose server 1 is an MQTT broker (mosquitto on loopback): the meter polled into a real
store, the data window published by `MqttSession` through the store's views, and every record of
the JSON checked against the registers, scaled by CoefA (docs/formats.md §14.2)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from e2e_support import (
    METER_DEF,
    METER_SETUP,
    UID,
    ClockedDevice,
    edit_config,
    edit_daq,
    journal_sink,
    meter_numbers,
    meter_values,
    poll_links,
    sunpm,
)
from mqtt_clients import subscriber, wait_for
from peers import Broker
from poller_runs import polling, wait_whole_second

from config import load_site
from config.model import Device
from exporters.outbox import Outbox
from exporters.rendering.source import store_source
from exporters.session import MqttSession, Trigger
from exporters.transports import MessageTransport, open_transport
from pipeline.drivers.modbus.simulator import TcpSimulator
from pipeline.drivers.modbus.tcp import ModbusTcpDriver
from pipeline.poller import Poller
from pipeline.recorder import Recorder
from store import Log, StoreOptions
from store.delivery import Stream

ZONE = "Europe/Paris"
TOPIC = "plant/data"
TENTH = Decimal("0.1")


def meter_record(t: int, stopped: bool) -> dict[str, object]:
    """The JSON record dated `t` (the poll at t - 1): scaled values, null when missing."""
    v, p, e = meter_numbers(t - 1)
    values = [None] * 5 if stopped else [Decimal(n) * TENTH for n in (v, p, p, p, e)]
    date = datetime.fromtimestamp(t, ZoneInfo(ZONE)).strftime("%y/%m/%d-%H:%M:%S")
    return dict(zip(("V_L1", "P_total_min", "P_total_max", "P_total_mean", "E_import"), values,
                    strict=True)) | {"date": date, "timestamp": t * 1000}


async def test_meter_records_published_as_scaled_json(tmp_path: Path, broker: Broker) -> None:
    meter = ClockedDevice(holding={4354: METER_SETUP}, moving=meter_values, kind=4)
    sim = TcpSimulator({2: meter})
    port = await sim.start()
    try:
        cfg = tmp_path / "cfg"
        run = await sunpm("config", "init", str(cfg), "--uid", UID)
        assert run.code == 0, run.err
        (cfg / "DEF" / "meter_small.csv").write_bytes(METER_DEF)
        edit_daq(cfg, lambda rows: [*rows, Device(
            line=len(rows) + 2, index="2", interface=f"127.0.0.1:{port}", name="meter_1",
            address=2, acq_period_s=1, timeout_ms=150, parameters="1", category="Meter",
            model="M3", def_file="meter_small.csv")])
        edit_config(cfg, {"SERVER_Type": "mqtt", "MQTT_Host": "127.0.0.1",
                          "MQTT_Port": str(broker.plain_port), "MQTT_TopicData": TOPIC,
                          "STORE_Path": str(tmp_path / "store"), "STORE_FlushSeconds": "0.05",
                          "DAQ_PollPeriod": "1", "NTP_TimeZone": ZONE})
        run = await sunpm("config", "validate", str(cfg))
        assert run.code == 0, run.out + run.err
        site = load_site(cfg)

        flips: dict[str, int] = {}
        log = await Log.open(tmp_path / "store", StoreOptions(flush_s=0.05))
        try:
            driver = ModbusTcpDriver()
            poller = Poller(poll_links(site, log, lambda d: driver), recorder=Recorder(),
                            record_sink=log.append_records, event_sink=journal_sink(log),
                            daq_poll_period_s=1)
            await wait_whole_second()
            async with polling(poller, driver.close) as stop:
                await asyncio.sleep(1.7)         # the meter misses the polls of two seconds
                flips["stop"] = int(time.time())
                del sim.units[2]
                await asyncio.sleep(2.0)
                flips["start"] = int(time.time())
                sim.units[2] = meter
                await asyncio.sleep(1.8)
                await stop()
            settings = site.settings.servers[0]
            transport = open_transport(settings, cfg / "CERT")
            assert isinstance(transport, MessageTransport)
            outbox = Outbox(server=1, log=log, source=store_source(log, site, 1),
                            directory=tmp_path / "store" / "outbox" / "1",
                            streams=(Stream.DATA,))
            session = MqttSession(settings=settings, transport=transport, outbox=outbox, log=log)
            async with subscriber(broker.plain_port, TOPIC) as got:
                result = await session.run(Trigger.SCHEDULE,
                                           started=datetime.now(UTC) + timedelta(seconds=1))
                assert result.ok, result.reason
                await wait_for(got, 1)
                await asyncio.sleep(0.3)
            times = sorted({t // 1_000_000_000 for t in
                            log.records("2").column("ts").cast("int64").to_pylist()})
        finally:
            await log.close()
    finally:
        await sim.stop()

    assert len(got) == 1                               # one window, one document
    assert got[0][0] == TOPIC
    text = got[0][1].decode()
    assert re.search(r"[0-9][eE][+-]?[0-9]", text) is None     # plain notation
    document = json.loads(text, parse_float=Decimal)
    assert list(document) == ["meter_1"]
    stopped = set(range(flips["stop"] + 1, flips["start"] + 1))
    edges = {flips["stop"], flips["start"]}
    assert stopped - edges and len(times) >= 4
    got_records = document["meter_1"]
    assert [r["timestamp"] for r in got_records] == [t * 1000 for t in times]
    for t, record in zip(times, got_records, strict=True):
        if t - 1 in edges:
            # A switch late in a poll on a loaded machine: each value is its own or null.
            want = meter_record(t, False)
            assert all(v is None or v == want[k] for k, v in record.items()), t
        else:
            assert record == meter_record(t, t - 1 in stopped), t
    assert any(all(v is None for k, v in r.items() if k not in ("date", "timestamp"))
               for r in got_records)
