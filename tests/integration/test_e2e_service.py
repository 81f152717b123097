"""`sunpm run` end to end, as a child process: a simulated meter on Modbus TCP and the simulated
I/O, server 1 a real FTP server, server 2 mosquitto; a change of an action-8 variable raises a
device alarm that starts a session at once (ALARM and DATA files on the FTP server, the alarm on
the MQTT alarm topic); a second `sunpm run` on the same store is refused; SIGINT exits 0 within
10 s. Then the demo: `sunpm run` with no configuration delivers a DATA file within 60 s, stops on
SIGINT, resumes the same store and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiomqtt
import httpx
import pytest
from e2e_support import (
    METER_SETUP,
    UID,
    ClockedDevice,
    edit_config,
    edit_daq,
    make_tree,
    meter_expected,
    meter_values,
    parse_data,
    sunpm,
)
from mqtt_clients import subscriber, wait_for
from peers import Broker, make_certs, run_peer
from service_support import STOP_LIMIT_S, bad_log_lines, gunzip_folder, start, wait_until

from config.model import Device
from pipeline.drivers.modbus.simulator import TcpSimulator
from store.events import Channel, CommandResult, journal_items
from store.log import Log
from store.traces import TraceEntry, TraceStore

pytestmark = pytest.mark.usefixtures("no_task_left_behind")

ZONE = "Europe/Paris"
STATUS_REGISTER = 100
METER_ALARM_DEF = (b"modbusTCP;Meter;ACME;M3\n"
                   b"1;4;0;I32_W;;V_L1;;0.1;0;V;4\n"
                   b"2;4;40;I32_W;;P_total;;0.1;0;W;2\n"
                   b"3;4;62;U32_W;;E_import;;0.1;0;kWh;4\n"
                   b"4;3;4354;U16;;Setup;;1;0;;1\n"
                   b"5;3;100;U16;;Status;;1;0;;8\n")


async def configure(tmp_path: Path, modbus_port: int, ftp_port: int, mqtt_port: int) -> Path:
    cfg = tmp_path / "cfg"
    run = await sunpm("config", "init", str(cfg), "--uid", UID)
    assert run.code == 0, run.err
    (cfg / "DEF" / "meter_alarm.csv").write_bytes(METER_ALARM_DEF)

    def devices(rows: tuple[Device, ...]) -> list[Device]:
        return [*rows, Device(line=len(rows) + 2, index="2",
                              interface=f"127.0.0.1:{modbus_port}", name="meter", address=2,
                              acq_period_s=1, timeout_ms=300, parameters="1", category="Meter",
                              model="M3", def_file="meter_alarm.csv")]

    edit_daq(cfg, devices)
    edit_config(cfg, {
        "SERVER_Type": "ftp", "FTP_Host": "127.0.0.1", "FTP_Port": str(ftp_port),
        "FTP_User": "sunpm", "FTP_Password": "secret",
        "SERVER2_Type": "mqtt", "MQTT2_Host": "127.0.0.1", "MQTT2_Port": str(mqtt_port),
        "MQTT2_TopicData": "plant/data", "MQTT2_TopicAlarm": "plant/alarm",
        "MQTT2_TopicCommand": "plant/cmd", "MQTT2_TopicResult": "plant/result",
        "STORE_Path": str(tmp_path / "store"), "STORE_FlushSeconds": "0.2",
        "DAQ_PollPeriod": "1", "NTP_TimeZone": ZONE, "NTP_Server1": "", "NTP_Server2": ""})
    run = await sunpm("config", "validate", str(cfg))
    assert run.code == 0, run.out + run.err
    return cfg


async def test_service_delivers_alarm_and_data_and_stops_cleanly(
        tmp_path: Path, broker: Broker) -> None:
    meter = ClockedDevice(holding={4354: METER_SETUP, STATUS_REGISTER: 3}, moving=meter_values,
                          kind=4)
    sim = TcpSimulator({2: meter})
    port = await sim.start()
    ftp_root = make_tree(tmp_path / "ftp")
    try:
        with run_peer("ftp", ftp_root, make_certs(tmp_path / "certs")) as ftp:
            cfg = await configure(tmp_path, port, ftp.port, broker.plain_port)
            # A command file waiting on server 1: fetched, journaled and run at the first session.
            (ftp_root / "CMD" / f"{UID}_cmd.json").write_text(json.dumps([
                {"rpcName": "sunpm.getParameters", "callerId": "f-1"},
                {"rpcName": "sunpm.status", "callerId": "f-2"},
                {"rpcName": "sunpm.setRelay", "parameters": {"state": 2}, "callerId": "f-3"}]))
            async with subscriber(broker.plain_port, "plant/alarm") as alarms, \
                    subscriber(broker.plain_port, "plant/result", identifier="is-results") \
                    as answers:
                service = await start(["--config", str(cfg), "--data", str(tmp_path / "data")],
                                      tmp_path / "logs")
                try:
                    await wait_until(lambda: "sunpm started" in service.stderr, 20,
                                     "start line", service)
                    # Let a few records be stored, then change the action-8 variable late in a
                    # second (polls run at whole seconds).
                    await asyncio.sleep(3.5 - time.time() % 1 + 0.6)
                    changed_at = int(time.time())
                    meter.holding[STATUS_REGISTER] = 8
                    await wait_until(lambda: bool(gunzip_folder(ftp_root / "ALARM", "*.csv.gz")),
                                     30, "ALARM file on the FTP server", service)
                    await wait_for(alarms, 1, timeout_s=15)
                    assert not (ftp_root / "CMD" / f"{UID}_cmd.json").exists()

                    # Commands on the MQTT command topic, answered on the result topic; a
                    # repeated callerId is answered again without running twice.
                    async with aiomqtt.Client("127.0.0.1", broker.plain_port,
                                              identifier="is-commands") as client:
                        for message in ({"rpcName": "sunpm.getParameters", "callerId": "m-1"},
                                        {"rpcName": "sunpm.fly", "callerId": "m-2"},
                                        [{"rpcName": "sunpm.getParameters"}],
                                        {"rpcName": "sunpm.getParameters", "callerId": "m-1"},
                                        {"rpcName": "sunpm.log", "callerId": "m-3",
                                         "parameters": {"interface": "ethernet",
                                                        "duration": 1}},
                                        {"rpcName": "sunpm.writeVariable", "callerId": "m-4",
                                         "parameters": {"device": "meter", "variable": "Setup",
                                                        "value": 9}},
                                        {"rpcName": "sunpm.writeVariable", "callerId": "m-5",
                                         "parameters": {"device": "2", "variable": "Nope",
                                                        "value": 1}}):
                            await client.publish("plant/cmd", json.dumps(message), qos=1)
                        await wait_for(answers, 7, timeout_s=15)
                    assert meter.holding[4354] == 9     # written on the device
                    # The `log` command's capture (1 s): a few polls' frames flushed.
                    await wait_until(lambda: len(_ethernet_frames(tmp_path)) >= 4, 20,
                                     "4 traced frames", service)

                    # A second gateway on the same store is refused, clearly, at once.
                    second = await start(["--config", str(cfg), "--data",
                                          str(tmp_path / "data2")], tmp_path / "logs",
                                         name="second")
                    async with asyncio.timeout(30):
                        assert await second.proc.wait() == 3
                    assert "another sunpm is already running on this data" in second.stderr, \
                        second.stderr
                finally:
                    code, took = await service.stop(signal.SIGINT)
                # The clean stop's Power OFF went out on the alarm topic before the exit.
                await wait_for(alarms, 2, timeout_s=5)
            assert code == 0, service.stderr[-3000:]
            assert took < STOP_LIMIT_S
    finally:
        await sim.stop()

    stderr = service.stderr
    assert bad_log_lines(stderr) == [], bad_log_lines(stderr)[:5]
    assert [json.loads(p) for _, p in answers] == [
        [{"result": "OK", "callerId": "m-1"}],
        [{"error": "unknown command 'sunpm.fly'", "callerId": "m-2"}],
        [{"error": "plant/cmd: one command object per message, got an array",
          "callerId": None}],
        [{"result": "OK", "callerId": "m-1"}],
        [{"result": "OK", "callerId": "m-3"}],
        [{"result": {"written": {"meter": 9}, "failed": {}}, "callerId": "m-4"}],
        [{"error": "writeVariable: meter: unknown variable 'Nope'", "callerId": "m-5"}]]
    # The `log` command's capture: Modbus TCP frames to the meter in the store's traces.
    frames = _ethernet_frames(tmp_path)
    assert len(frames) >= 4
    assert {f.peer for f in frames} == {f"127.0.0.1:{port}"}
    assert {f.direction for f in frames} == {"=>", "<="}
    assert stderr.count("Command received. name=sunpm.getParameters callerId=m-1") == 1
    assert "Command repeated; its stored answer is sent again. name=sunpm.getParameters " \
        "callerId=m-1" in stderr
    # The command file's answers, journaled for the next ACK file (channel file).
    log = Log.open_read_only(tmp_path / "store")
    try:
        file_results = [CommandResult.from_body(i.body) for i in
                        journal_items(log.journal(kinds=["result"]).sort_by("seq"))]
    finally:
        await log.close()
    assert [r.entry() for r in file_results if r.channel is Channel.FILE] == [
        {"result": "OK", "callerId": "f-1"},
        {"error": "status is not available by file; use sms, local", "callerId": "f-2"},
        {"error": "setRelay: state must be 0 or 1, got 2", "callerId": "f-3"}]
    # status.json, written at the stop: both servers, the files the next sessions would send
    # (the meter's records after the last cut at least), the devices.
    status = json.loads((tmp_path / "data" / "status.json").read_bytes())
    assert status["uid"] == UID and status["timeZone"] == ZONE
    servers = {s["srv"]: s for s in status["servers"]}
    assert (servers[1]["type"], servers[2]["type"]) == ("ftp", "mqtt")
    assert servers[1]["last"].endswith(" OK")
    assert 1 <= servers[1]["backlog"] <= 5
    assert [d["index"] for d in status["devices"]] == ["IO", "2"]
    assert status["devices"][1]["storeBytes"] > 0
    assert " INFO session: server 1 ftp 127.0.0.1:" in stderr
    assert "session started (alarm)" in stderr

    # The ALARM file: the device alarm, dated at the poll that saw the change.
    alarm_texts = gunzip_folder(ftp_root / "ALARM", f"{UID}_AL_*.csv.gz")
    lines = [line for text in alarm_texts.values() for line in text.splitlines()]
    device_lines = [line for line in lines if ";MODBUS;" in line]
    assert len(device_lines) == 1, lines
    stamp, rest = device_lines[0].split(";", 1)
    assert rest == "MODBUS;meter_alarm.csv;meter;5;8.000000"
    raised = datetime.strptime(stamp, "%y/%m/%d-%H:%M:%S").replace(tzinfo=ZoneInfo(ZONE))
    assert changed_at < raised.timestamp() <= changed_at + 2     # the first poll after it
    # MQTT: the same alarm on the alarm topic (docs/formats.md §14.3), then the stop's Power OFF.
    assert [json.loads(p)["alarmsDevice"][0]["type"] for _, p in alarms[1:]] == ["POWER OFF"]
    topic, payload = alarms[0]
    assert topic == "plant/alarm"
    message = json.loads(payload)
    assert message["alarmsDevice"] is None
    (entry,) = message["alarms"]
    assert (entry["defName"], entry["deviceName"], entry["source"], entry["variableIndex"]) == \
        ("meter_alarm.csv", "meter", "MODBUS", 5)
    assert float(entry["value"]) == 8
    assert changed_at <= entry["timestamp"] // 1000 <= changed_at + 2

    # The DATA file of that session: every stored meter record up to its cut, each value as the
    # simulator held it at the poll (a record dated T holds the poll at T - 1).
    texts = gunzip_folder(ftp_root / "DATA", f"{UID}_MODBUS_[0-9]*.csv.gz")
    assert texts
    rows = [(t, fields) for text in texts.values()
            for block in parse_data(text, ZONE) if block.header[0] == "DEVICEINDEX;2"
            for t, fields in block.rows]
    assert len(rows) >= 3
    for t, fields in rows:
        assert fields[:5] == meter_expected(t - 1), (t, fields)
        assert fields[5] == ("8" if t - 1 > changed_at else "3" if t - 1 < changed_at
                             else fields[5])
    times = [t for t, _ in rows]
    assert times == sorted(set(times))                       # each record once
    log = Log.open_read_only(tmp_path / "store")
    try:
        stored = sorted({ts // 1_000_000_000 for ts in
                         log.records("2").column("ts").cast("int64").to_pylist()})
    finally:
        await log.close()
    assert times == [t for t in stored if t <= times[-1]]     # and none missing before the cut


def _ethernet_frames(tmp_path: Path) -> list[TraceEntry]:
    """The frames the store's traces hold for the Ethernet interface (committed ones)."""
    with TraceStore.open(tmp_path / "store", read_only=True) as traces:
        return traces.entries("ethernet")


async def test_demo_delivers_data_within_60_s_and_resumes(tmp_path: Path) -> None:
    data = tmp_path / "sunpm-data"
    # `--web-port 0`: the box's 8080 is not the test's to take.
    service = await start(["--web-port", "0"], tmp_path / "logs", cwd=tmp_path)
    try:
        took = await wait_until(lambda: bool(list((data / "server" / "DATA").glob(
            "SUNPMDEMO_MODBUS_[0-9]*.csv.gz"))), 60, "demo DATA file", service)
        # `sunpm cmd` through the local socket, which only its owner may open.
        assert (data / "sunpm.sock").stat().st_mode & 0o777 == 0o600
        run = await sunpm("cmd", "status", "--data", str(data))
        assert run.code == 0, run.err
        status = json.loads(run.out)["result"]
        assert status["uid"] == "SUNPMDEMO"
        assert [d["index"] for d in status["devices"]] == ["IO", "TIC1", "1", "2", "3"]
        # The web UI: its address and one-time password on the console, never in the log.
        found = re.search(r"Web UI on (http://127\.0\.0\.1:\d+/)", service.stdout)
        assert found is not None, service.stdout
        password = (data / "initial-password").read_text().strip()
        assert password in service.stdout and password not in service.stderr
        async with httpx.AsyncClient(base_url=found.group(1)) as client:
            assert (await client.get("/api/status")).status_code == 401
            login = await client.post("/api/login", json={"user": "admin",
                                                           "password": password})
            assert login.status_code == 200, login.text
            web_status = (await client.get("/api/status")).json()
            assert web_status["uid"] == "SUNPMDEMO"
            assert "inverter_1" in (await client.get("/devices")).text
        run = await sunpm("cmd", "connect", "server=1", "--data", str(data))
        assert (run.code, json.loads(run.out)) == (0, {"result": "OK", "callerId": None})
        await wait_until(service.logged("session started (command)"), 10, "the connect session",
                         service)
        run = await sunpm("cmd", "setRelay", "state=3", "--data", str(data), "--caller-id", "x")
        assert (run.code, json.loads(run.out)) == (
            1, {"error": "setRelay: state must be 0 or 1, got 3", "callerId": "x"})
    finally:
        code, stop_s = await service.stop(signal.SIGINT)
    assert code == 0 and stop_s < STOP_LIMIT_S, service.stderr[-3000:]
    assert took < 60
    assert f"sunpm demo created in {data}" in service.stdout
    assert f"land in {data / 'server'}/" in service.stdout
    first = gunzip_folder(data / "server" / "DATA", "SUNPMDEMO_MODBUS_[0-9]*.csv.gz")
    blocks = [b for text in first.values() for b in parse_data(text, "UTC")]
    assert {b.header[0] for b in blocks} == {"DEVICEINDEX;1", "DEVICEINDEX;2", "DEVICEINDEX;3"}
    assert bad_log_lines(service.stderr) == []

    log = Log.open_read_only(data / "store")
    try:
        before = log.watermark()
    finally:
        await log.close()
    again = await start(["--web-port", "0"], tmp_path / "logs", name="again", cwd=tmp_path)
    try:
        await wait_until(lambda: "sunpm started" in again.stderr, 30, "second start", again)
        # `reboot`: a clean stop, then the same process starts again on the same store.
        run = await sunpm("cmd", "reboot", "--data", str(data))
        assert (run.code, json.loads(run.out)) == (0, {"result": "OK", "callerId": None})
        await wait_until(lambda: again.stderr.count("sunpm started") == 2, 30, "the restart",
                         again)
        assert "INFO system: Restarting" in again.stderr
        # The demo records every 10 s: 21 s close at least one whole period whatever the phase
        # of the restart (a period the restart cut short is not recorded).
        await asyncio.sleep(21)
    finally:
        code, stop_s = await again.stop(signal.SIGTERM)     # as systemd stops it
    assert code == 0 and stop_s < STOP_LIMIT_S, again.stderr[-3000:]
    assert again.stdout.count(f"sunpm demo resumed in {data}") == 2
    assert not (data / "sunpm.sock").exists()
    run = await sunpm("cmd", "status", "--data", str(data))
    assert run.code == 2 and "cannot reach the gateway" in run.err
    assert "SIGTERM received; stopping" in again.stderr
    log = Log.open_read_only(data / "store")
    try:
        after = log.watermark()
    finally:
        await log.close()
    # The same store goes on: record numbers continue from where the first run stopped.
    for device in ("1", "2", "3", "IO", "TIC1"):
        assert after.devices[device] > before.devices[device] > 0, device
