"""Crash test of `sunpm run`: SIGKILLed at random moments while polling and uploading to a real
FTP server, then restarted. After the last restart catches up, every record the store
acknowledged before the last window's end is on the server exactly once (a file in flight at a
kill is sent again under its own name, so the server never holds a record in two files), every
file on the server is complete, and each unclean stop gave one Power OFF dated at its last
heartbeat.

Each restart comes at least 11 s after the killed run's last heartbeat, so every outage is long
enough for a Power OFF (docs/behaviour.md §8); that restart's Power OFF starts an alarm session at
once, which is what the next kill may cut. `SUNPM_CRASH_KILLS` sets the number of kills (default
20, the acceptance figure: about 4 min on the 2-core box), `SUNPM_CRASH_SEED` the random seed.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from e2e_support import (
    METER_SETUP,
    UID,
    ClockedDevice,
    edit_config,
    edit_daq,
    make_tree,
    meter_values,
    parse_data,
    sunpm,
)
from peers import make_certs, run_peer
from service_support import STOP_LIMIT_S, gunzip_folder, start, wait_until

from config.model import Device
from pipeline.drivers.modbus.simulator import TcpSimulator
from store.log import Log

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_task_left_behind")]

NS = 1_000_000_000
KILLS = int(os.environ.get("SUNPM_CRASH_KILLS", "20"))
SEED = int(os.environ.get("SUNPM_CRASH_SEED", str(int(time.time()))))
METER_DEF = (b"modbusTCP;Meter;ACME;M3\n"
             b"1;4;0;I32_W;;V_L1;;0.1;0;V;4\n"
             b"2;4;40;I32_W;;P_total;;0.1;0;W;2\n"
             b"3;4;62;U32_W;;E_import;;0.1;0;kWh;4\n")


async def configure(tmp_path: Path, modbus_port: int, ftp_port: int) -> Path:
    cfg = tmp_path / "cfg"
    assert (await sunpm("config", "init", str(cfg), "--uid", UID)).code == 0
    (cfg / "DEF" / "meter.csv").write_bytes(METER_DEF)
    edit_daq(cfg, lambda rows: [*rows, Device(
        line=len(rows) + 2, index="2", interface=f"127.0.0.1:{modbus_port}", name="meter",
        address=2, acq_period_s=1, timeout_ms=300, parameters="1", category="Meter",
        model="M3", def_file="meter.csv")])
    edit_config(cfg, {"SERVER_Type": "ftp", "FTP_Host": "127.0.0.1", "FTP_Port": str(ftp_port),
                      "FTP_User": "sunpm", "FTP_Password": "secret",
                      "STORE_Path": str(tmp_path / "store"), "STORE_FlushSeconds": "0.2",
                      "DAQ_PollPeriod": "1", "NTP_Server1": "", "NTP_Server2": ""})
    # A session every minute as well as the alarm sessions of each restart.
    (cfg / "CONFIG" / f"{UID}_var.ini").write_bytes(
        b"SCHEDULE_Params[0]=1|everyday|00:00:00|1|1440\n")
    run = await sunpm("config", "validate", str(cfg))
    assert run.code == 0, run.out + run.err
    return cfg


async def last_heartbeat(store: Path) -> int:
    log = Log.open_read_only(store)
    try:
        ts = log.journal(kinds=["heartbeat"]).column("ts").cast("int64").to_pylist()
    finally:
        await log.close()
    assert ts, "a killed run left no heartbeat"
    return int(max(ts))


async def stored_records(store: Path, device: str) -> list[int]:
    log = Log.open_read_only(store)
    try:
        ts = log.records(device).column("ts").cast("int64").to_pylist()
    finally:
        await log.close()
    return sorted({t // NS for t in ts})


def window_end(name: str) -> int:
    stamp = name.removesuffix(".csv.gz").rsplit("_", 2)
    return int(datetime.strptime(f"{stamp[-2]}_{stamp[-1]}", "%y%m%d_%H%M%S")
               .replace(tzinfo=UTC).timestamp())


async def test_sigkill_loop_loses_nothing_and_sends_nothing_twice(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    print(f"SUNPM_CRASH_SEED={SEED} SUNPM_CRASH_KILLS={KILLS}")
    sim = TcpSimulator({2: ClockedDevice(holding={4354: METER_SETUP}, moving=meter_values,
                                         kind=4)})
    port = await sim.start()
    ftp_root = make_tree(tmp_path / "ftp")
    store = tmp_path / "store"
    heartbeats: list[int] = []
    mid_session = 0
    try:
        # A slow server (1 kB/s) keeps each upload in flight long enough to be cut.
        with run_peer("ftp", ftp_root, make_certs(tmp_path / "certs"), rate_bps=1000) as ftp:
            cfg = await configure(tmp_path, port, ftp.port)
            args = ["--config", str(cfg), "--data", str(tmp_path / "data")]
            for k in range(KILLS):
                service = await start(args, tmp_path / "logs", name=f"run{k}")
                await wait_until(service.logged("sunpm started"), 30, "start line", service)
                if k % 2 and k > 0:
                    # Every other restart is killed inside its alarm session (the uploads).
                    await wait_until(service.logged("session started"), 30, "the alarm session",
                                     service)
                    await asyncio.sleep(rng.uniform(0.0, 1.0))
                else:
                    await asyncio.sleep(rng.uniform(3.0, 10.0))
                await service.kill()
                err = service.stderr
                if "session started" in err and "session ended" not in err:
                    mid_session += 1
                heartbeat = await last_heartbeat(store)
                heartbeats.append(heartbeat)
                # The next start must find an outage of at least 10 s.
                await asyncio.sleep(max(0.0, (heartbeat + 11 * NS - time.time_ns()) / NS))
            final = await start(args, tmp_path / "logs", name="final")
            try:
                await wait_until(lambda: "session ended OK" in final.stderr, 60,
                                 "a successful session after the last restart", final)
            finally:
                code, took = await final.stop(signal.SIGINT)
            assert code == 0 and took < STOP_LIMIT_S, final.stderr[-3000:]
    finally:
        await sim.stop()

    print(f"kills inside a session: {mid_session} of {KILLS}")
    assert KILLS < 4 or mid_session >= 1
    # Every file on the server is complete (gzip checks its CRC and length) and no `.tmp` or
    # partial file is left under a final name.
    data = gunzip_folder(ftp_root / "DATA", f"{UID}_MODBUS_[0-9]*.csv.gz")
    assert data
    rows: list[tuple[int, str]] = []
    for name, text in data.items():
        for block in parse_data(text, "UTC"):
            if block.header[0] == "DEVICEINDEX;2":
                rows.extend((t, name) for t, _ in block.rows)
    times = [t for t, _ in rows]
    duplicates = sorted({t for t in times if times.count(t) > 1})
    assert duplicates == [], [(t, [n for u, n in rows if u == t]) for t in duplicates[:3]]
    last_end = max(window_end(name) for name in data)
    recorded = await stored_records(store, "2")
    expected = [t for t in recorded if t < last_end]
    assert len(expected) >= KILLS
    assert sorted(times) == expected, (sorted(set(expected) - set(times))[:10],
                                       sorted(set(times) - set(expected))[:10])

    # One Power OFF per unclean stop, dated at that run's last heartbeat (distinct heartbeats:
    # a run killed before its first heartbeat shares the previous run's, already reported).
    alarms = gunzip_folder(ftp_root / "ALARM", f"{UID}_AL_*.csv.gz")
    power_off = [line.split(";", 1)[0] for text in alarms.values()
                 for line in text.splitlines() if line.endswith(";GATEWAY;Power OFF")]
    stamps = sorted(int(datetime.strptime(s, "%y/%m/%d-%H:%M:%S").replace(tzinfo=UTC)
                        .timestamp()) for s in power_off)
    assert stamps == sorted({h // NS for h in heartbeats}), (stamps, heartbeats)
