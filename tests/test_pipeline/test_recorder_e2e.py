"""End to end: a pymodbus device on 127.0.0.1, the Modbus TCP driver, the poll loop and a real
store, records read back from its segments."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from poller_runs import polling, wait_whole_second
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import ModbusTcpServer

import config
from config.model import Device, Quality
from pipeline.drivers._base import ReadPlan
from pipeline.drivers.io import IoDriver, SimBackend
from pipeline.drivers.modbus.planner import plan_reads, polled_variables
from pipeline.drivers.modbus.tcp import ModbusTcpDriver
from pipeline.poller import Event, PolledDevice, Poller, PollLink
from pipeline.recorder import ParameterRead, Recorder, ValueChanged
from store import Log, StoreOptions

NS = 1_000_000_000

DEFINITION = b"""modbusTCP;Inverter;ACME;X
Index;Info1;Info2;Info3;Info4;Name;Tag;CoefA;CoefB;Unit;Action
1;3;10;U16;;P;;1;0;W;4
2;3;11;I16;;T;;1;0;C;2
3;3;12;U64;;E;;1;0;Wh;4
4;3;20;U16;;Serial;;1;0;;1
5;3;21;U16;;State;;1;0;;8
"""


pytestmark = pytest.mark.usefixtures("no_task_left_behind")


async def start_server(port: int = 0) -> tuple[ModbusTcpServer, int]:
    image = [0] * 100
    image[10:16] = [2079, (-5) & 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF]
    image[20:22] = [4242, 1]
    context = ModbusServerContext(devices={
        7: ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, image))}, single=False)
    server = ModbusTcpServer(context, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    return server, server.transport.sockets[0].getsockname()[1]


class MemoryLog:
    """The record and journal sinks as plain lists: the same assertions with and without a store."""

    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []
        self.params: list[dict[str, object]] = []

    async def append_records(self, device: str, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)

    async def append_journal(self, kind: str, body: dict[str, object], *, device: str,
                             def_: str, ts_ns: int) -> None:
        self.params.append({"device": device, "def": def_, "body": json.dumps(body)})


@pytest.mark.parametrize("sink", ["memory", "store"])
async def test_polls_of_a_pymodbus_device_become_records(tmp_path: Path, sink: str) -> None:
    defn = config.parse_definition(DEFINITION, "acme_x.csv").value
    server, port = await start_server()
    dev = Device(line=1, index="4", interface=f"127.0.0.1:{port}", name="inv", address=7,
                 acq_period_s=1, timeout_ms=200, def_file="acme_x.csv")
    polled = PolledDevice(
        device=dev, definition=defn, plan=plan_reads(defn),
        parameter_plan=plan_reads(defn, variables=polled_variables(defn, parameters=True)))
    driver = ModbusTcpDriver()
    memory = MemoryLog()
    log = await Log.open(tmp_path / "store", StoreOptions(flush_s=0.05)) if sink == "store" \
        else None
    target = log or memory
    if log is not None:
        assert log.put_definition("acme_x.csv", DEFINITION) == defn.snapshot_id

    async def journal(event: Event) -> None:
        if isinstance(event, ParameterRead):
            await target.append_journal("param", event.journal_body(), device=event.device,
                                        def_=event.def_id, ts_ns=event.ts_ns)

    poller = Poller([PollLink(name=f"127.0.0.1:{port}", driver=driver, devices=(polled,))],
                    recorder=Recorder(), record_sink=target.append_records,
                    event_sink=journal, daq_poll_period_s=1)
    await wait_whole_second()
    async with polling(poller, driver.close, *([log.close] if log is not None else [])) as stop:
        await asyncio.sleep(2.6)
        async with asyncio.timeout(2):           # State changes, written ahead of the polls
            await poller.write("4", defn.variable(5), 2)
        await asyncio.sleep(1.0)
        await server.shutdown()                  # the device goes away: missing values
        await asyncio.sleep(2.0)
        await stop()

    if log is None:
        table = pa.Table.from_batches(memory.batches)
        params = memory.params
        # the store numbers records; here, number them as it would
        seqs = [i + 1 for i, b in enumerate(memory.batches) for _ in range(b.num_rows)]
        table = table.set_column(1, "seq", pa.array(seqs, pa.uint64()))
    else:
        reader = await Log.open(tmp_path / "store", read_only=True)
        try:
            table = reader.records("4")
            params = reader.journal(kinds=["param"]).drop_columns(["ts"]).to_pylist()
        finally:
            await reader.close()
    table = table.set_column(0, "ts", table.column("ts").cast(pa.int64()))
    check(table.to_pylist(), params, defn.snapshot_id)


def check(rows: list[dict[str, Any]], params: list[dict[str, Any]], def_id: str) -> None:
    ends = sorted({r["ts"] for r in rows})
    assert len(ends) >= 4
    # records at whole seconds, one per polled second (a loaded machine may skip a slot as an
    # overrun, which leaves that second without a record), one row per recorded variable
    assert all(e % NS == 0 for e in ends)
    assert (ends[-1] - ends[0]) // NS <= len(ends) + 1
    assert sorted({r["seq"] for r in rows}) == list(range(1, len(ends) + 1))
    assert {r["def"] for r in rows} == {def_id}
    first = {r["var"]: r for r in rows if r["seq"] == 1}
    assert sorted(first) == [1, 2, 3, 5]                  # action 1 is not recorded
    assert first[1]["value"] == 2079.0 and first[1]["quality"] == Quality.GOOD
    assert (first[2]["vmin"], first[2]["vmax"], first[2]["value"]) == (-5.0, -5.0, -5.0)
    assert first[3]["text"] == "18446744073709551615"
    states = [r["value"] for r in sorted(rows, key=lambda r: r["seq"]) if r["var"] == 5]
    assert 1.0 in states and 2.0 in states
    last = {r["var"]: r for r in rows if r["seq"] == len(ends)}
    assert all(r["value"] is None for r in last.values())
    assert {r["quality"] for r in last.values()} <= {Quality.TIMEOUT, Quality.DISCONNECTED}
    assert len(params) == 1
    assert params[0]["device"] == "4" and params[0]["def"] == def_id
    assert '"4":"4242"' in str(params[0]["body"]).replace(" ", "")


IO_DEFINITION = b"""io;WebdynSunPM;Webdyn;ioSunPM
1;1;1;1;;AI1;;1;0;mA;2
5;2;1;1;;DI1;;1;0;;4
6;2;2;2;;DI2;;1;0;;4
9;3;1;;;Relay;;1;0;;8
"""


async def test_io_simulator_polled_and_its_relay_written_ahead_of_polls() -> None:
    defn = config.parse_definition(IO_DEFINITION, "WPM00BDE4_IO.csv").value
    dev = Device(line=1, index="IO", interface="", name="io", address=None, acq_period_s=1,
                 def_file="WPM00BDE4_IO.csv")
    plan = ReadPlan(definition=defn, variables=tuple(v for v in defn.variables
                                                      if v.action.is_polled))
    memory = MemoryLog()
    changes: list[ValueChanged] = []

    async def events(event: Event) -> None:
        if isinstance(event, ValueChanged):
            changes.append(event)

    poller = Poller([PollLink(name="IO", driver=IoDriver(SimBackend()), category="io",
                              devices=(PolledDevice(device=dev, definition=defn, plan=plan),))],
                    recorder=Recorder(), record_sink=memory.append_records, event_sink=events,
                    daq_poll_period_s=1)
    await wait_whole_second()
    async with polling(poller) as stop:
        await asyncio.sleep(1.5)
        async with asyncio.timeout(1):
            await poller.write("IO", defn.variable(9), 1)
        await asyncio.sleep(2.0)
        await stop()
    records = [{r["var"]: r for r in b.to_pylist()} for b in memory.batches]
    assert len(records) >= 2
    relay = [r[9]["value"] for r in records]
    assert relay[0] == 0.0 and relay[-1] == 1.0
    assert [(c.var, c.old, c.new) for c in changes] == [(9, 0, 1)]
    for r in records:
        assert 12 - 6.4 <= r[1]["vmin"] <= r[1]["value"] <= r[1]["vmax"] <= 12 + 6.4
        assert r[5]["value"] in (0.0, 1.0) and r[1]["quality"] == Quality.GOOD
    s0 = [r[6]["value"] for r in records]
    assert s0 == sorted(s0) and s0[0] > 0
