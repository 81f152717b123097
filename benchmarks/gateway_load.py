"""gateway_load: the whole service under a full plant (docs/architecture.md §7).

Ours: the real `sunpm run` process (poll -> record -> store -> scheduled delivery) polling 254
simulated Modbus TCP devices x 100 U16 holding registers every 10 s (one device per `ip:port`,
every value recorded, action 4), with a session to a local FTP server every minute (var.ini
schedule; DATA files of each window). Baseline: the naive gateway the issue names, one pymodbus
read per variable and one SQLite INSERT per value (committed once a second), which uploads the
values of each minute to the same FTP server as one CSV file. The plant (the project's lean
Modbus TCP simulator, or pymodbus servers with `--plant pymodbus`) and the FTP server (pyftpdlib)
run in other processes, so neither side pays for them.

Each side runs as its own process; after a warm-up (until its first values are stored), its CPU
time (utime + stime of /proc/<pid>/stat) is read at the start and end of a steady window of
`--seconds` (default 180), and its values stored with quality 0 timed inside that window are
counted from its store afterwards. `peak_rss_mb` is the process's high-water mark (VmHWM) at the
window's end. Prints one docs/style.md §10 line:

    python benchmarks/gateway_load.py [--seconds 180] [--devices 254] [--registers 100] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import ftplib
import io
import json
import multiprocessing
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _plant import serve_ftp, serve_pymodbus_plant
from _report import emit, figure_line

from pipeline.drivers.modbus.simulator import serve_fleet

ROOT = Path(__file__).resolve().parents[1]
UID = "WPMBENCH1"
UNIT_ID = 1
TIMEOUT_MS = 3000
FTP_USER, FTP_PASSWORD = "sunpm", "bench"
TREE = ("CONFIG", "DEF", "SCRIPT", "CERT", "DATA", "CMD", "ALARM", "LOG", "BIN")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- peers


# ----------------------------------------------------------------------------- measures


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


def _wait(check: Any, timeout_s: float, what: str, proc: subprocess.Popen[bytes],
          err: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited {proc.returncode}:\n"
                               f"{err.read_text(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} after {timeout_s:g} s:\n"
                               f"{err.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _steady(proc: subprocess.Popen[bytes], seconds: float) -> tuple[float, float, float, float]:
    """CPU seconds of `proc` over a window of `seconds` starting now; the window (wall, UTC
    seconds) and the peak RSS at its end."""
    cpu0, t0 = proc_cpu_s(proc.pid), time.time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the measured process exited {proc.returncode} mid-window")
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    cpu, t1 = proc_cpu_s(proc.pid) - cpu0, time.time()
    return cpu, t0, t1, proc_peak_rss_mb(proc.pid)


# ----------------------------------------------------------------------------- ours


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _configure(cfg: Path, data: Path, ports: list[int], registers: int, period: int,
               ftp_port: int) -> None:
    from config import parse_config_ini, parse_daq, render_config_ini, render_daq
    from config.model import Device

    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "config", "init", str(cfg),
                           "--uid", UID], env=_env(), capture_output=True, text=True,
                          check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"sunpm config init failed: {done.stderr}")
    rows = "".join(f"{r + 1};3;{r};U16;;R{r};;1;0;;4\n" for r in range(registers))
    (cfg / "DEF" / "bench.csv").write_text(f"modbusTCP;Bench;ACME;B{registers}\n{rows}")
    daq_path = cfg / "CONFIG" / f"{UID}_daq.csv"
    daq = parse_daq(daq_path.read_bytes(), daq_path.name).value
    devices = tuple(Device(line=k + 2, index=str(k + 1), interface=f"127.0.0.1:{port}",
                           name=f"inv{k + 1}", address=UNIT_ID, acq_period_s=period,
                           timeout_ms=TIMEOUT_MS, def_file="bench.csv")
                    for k, port in enumerate(ports))
    import dataclasses
    daq_path.write_bytes(render_daq(dataclasses.replace(daq, devices=devices)))
    ini_path = cfg / "CONFIG" / f"{UID}_config.ini"
    ini = parse_config_ini(ini_path.read_bytes(), ini_path.name).value
    for key, value in {"SERVER_Type": "ftp", "FTP_Host": "127.0.0.1", "FTP_Port": str(ftp_port),
                       "FTP_User": FTP_USER, "FTP_Password": FTP_PASSWORD,
                       "STORE_Path": str(data / "store"), "DAQ_PollPeriod": str(period),
                       "NTP_Server1": "", "NTP_Server2": "",
                       # Its own port: 8080 may be another gateway's (the demo's) on this box.
                       "WEB_Port": str(_free_port())}.items():
        ini = ini.with_value(key, value)
    ini_path.write_bytes(render_config_ini(ini))
    (cfg / "CONFIG" / f"{UID}_var.ini").write_bytes(
        b"SCHEDULE_Params[0]=1|everyday|00:00:00|1|1440\n")
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "config", "validate", str(cfg)],
                          env=_env(), capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark configuration rejected: {done.stdout}{done.stderr}")


def _good_values(store: Path, start_s: float, end_s: float) -> tuple[int, int]:
    """Values with quality 0 in records timed inside [start, end), and all records' values."""
    import pyarrow.compute as pc

    from store.log import Log

    async def count() -> tuple[int, int]:
        log = Log.open_read_only(store)
        try:
            good = rows = 0
            for device in log.devices():
                table = log.records(device, start_ns=int(start_s * 1e9), end_ns=int(end_s * 1e9))
                rows += table.num_rows
                good += int(pc.sum(pc.equal(table.column("quality"), 0)).as_py() or 0)
            return good, rows
        finally:
            await log.close()

    return asyncio.run(count())


def run_ours(work: Path, ports: list[int], registers: int, period: int, seconds: float,
             ftp_root: Path, ftp_port: int) -> dict[str, Any]:
    cfg, data = work / "ours-config", work / "ours-data"
    _configure(cfg, data, ports, registers, period, ftp_port)
    err = work / "ours.err"
    with err.open("wb") as ferr:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config",
                                 str(cfg), "--data", str(data)], stdout=subprocess.DEVNULL,
                                stderr=ferr, env=_env(), cwd=ROOT)
    try:
        _wait(lambda: "sunpm started" in err.read_text(errors="replace"), 120, "start line",
              proc, err)
        # Steady state: past the connections' opening and the first records' commit.
        time.sleep(2 * period + 5)
        cpu, t0, t1, peak = _steady(proc, seconds)
    finally:
        code = _stop(proc)
    log_text = err.read_text(errors="replace")
    good, rows = _good_values(data / "store", t0, t1)
    files = [p for p in (ftp_root / "DATA").glob(f"{UID}_*") if not p.name.endswith(".tmp")]
    return {"cpu_s": cpu, "seconds": t1 - t0, "values": good, "rows": rows,
            "peak_rss_mb": peak, "exit": code, "files_delivered": len(files),
            "sessions_ok": log_text.count("session ended OK"),
            "errors": sum(1 for line in log_text.splitlines() if " ERROR " in line)}


# ----------------------------------------------------------------------------- the baseline


async def _baseline_main(ports: list[int], registers: int, period: int, db_path: Path,
                         ftp_port: int, ready: Path) -> None:
    from pymodbus.client import AsyncModbusTcpClient

    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE IF NOT EXISTS value_log "
               "(ts INTEGER, device TEXT, reg INTEGER, value REAL, quality INTEGER)")
    db.commit()
    clients = [AsyncModbusTcpClient("127.0.0.1", port=port, timeout=TIMEOUT_MS / 1000,
                                    retries=0) for port in ports]
    await asyncio.gather(*(c.connect() for c in clients))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stopping.set)

    async def poll_device(k: int, client: AsyncModbusTcpClient, ts: int) -> None:
        for r in range(registers):
            try:
                reply = await client.read_holding_registers(r, count=1, device_id=UNIT_ID)
                row = (ts, str(k + 1), r, None, 1) if reply.isError() else \
                    (ts, str(k + 1), r, float(reply.registers[0]), 0)
            except Exception:  # noqa: BLE001 - a failed read is stored as missing
                row = (ts, str(k + 1), r, None, 1)
            db.execute("INSERT INTO value_log VALUES (?, ?, ?, ?, ?)", row)

    async def poll_loop() -> None:
        slot = (time.time() // period + 1) * period
        while not stopping.is_set():
            await asyncio.sleep(max(0.0, slot - time.time()))
            ts = int(slot * 1e9)
            await asyncio.gather(*(poll_device(k, c, ts) for k, c in enumerate(clients)))
            ready.touch()
            slot += period
            while slot <= time.time():   # an overrun: the slot is skipped
                slot += period

    async def commit_loop() -> None:
        while not stopping.is_set():
            await asyncio.sleep(1.0)
            db.commit()

    def upload(start_ns: int, end_ns: int) -> None:
        text = io.StringIO()
        writer = csv.writer(text, delimiter=";")
        for row in db.execute("SELECT ts, device, reg, value FROM value_log "
                              "WHERE ts >= ? AND ts < ? ORDER BY device, reg, ts",
                              (start_ns, end_ns)):
            writer.writerow(row)
        with ftplib.FTP() as ftp:
            ftp.connect("127.0.0.1", ftp_port, timeout=30)
            ftp.login(FTP_USER, FTP_PASSWORD)
            ftp.storbinary(f"STOR /DATA/baseline_{end_ns // 10**9}.csv",
                           io.BytesIO(text.getvalue().encode()))

    async def upload_loop() -> None:
        window = (time.time() // 60 + 1) * 60
        while not stopping.is_set():
            try:
                async with asyncio.timeout(max(0.0, window + 1 - time.time())):
                    await stopping.wait()
            except TimeoutError:
                pass
            if stopping.is_set():
                return
            upload(int((window - 60) * 1e9), int(window * 1e9))
            window += 60

    await asyncio.gather(poll_loop(), commit_loop(), upload_loop())
    db.commit()
    for client in clients:
        client.close()
    db.close()


def run_baseline(work: Path, ports: list[int], registers: int, period: int, seconds: float,
                 ftp_port: int) -> dict[str, Any]:
    db, ready, err = work / "baseline.db", work / "baseline.ready", work / "baseline.err"
    (work / "ports.json").write_text(json.dumps(ports))
    with err.open("wb") as ferr:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--baseline-child",
             "--ports", str(work / "ports.json"), "--registers", str(registers),
             "--period", str(period), "--db", str(db), "--ftp-port", str(ftp_port),
             "--ready", str(ready)], stdout=subprocess.DEVNULL, stderr=ferr, env=_env(),
            cwd=ROOT)
    try:
        _wait(ready.exists, 120, "first baseline poll", proc, err)
        time.sleep(2)
        cpu, t0, t1, peak = _steady(proc, seconds)
    finally:
        code = _stop(proc)
    with sqlite3.connect(db) as conn:
        good, rows = conn.execute(
            "SELECT sum(quality = 0), count(*) FROM value_log WHERE ts >= ? AND ts < ?",
            (int(t0 * 1e9), int(t1 * 1e9))).fetchone()
    return {"cpu_s": cpu, "seconds": t1 - t0, "values": int(good or 0), "rows": int(rows or 0),
            "peak_rss_mb": peak, "exit": code}


# ----------------------------------------------------------------------------- the parent


def run(devices: int = 254, registers: int = 100, period: int = 10, seconds: float = 180.0, *,
        plant: str = "lean") -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * devices + 256)), hard))
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="gateway-load-",
                                     dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        ftp_root = work / "ftp"
        for name in TREE:
            (ftp_root / name).mkdir(parents=True)
        plant_pipe, plant_child = ctx.Pipe()
        ftp_pipe, ftp_child = ctx.Pipe()
        plant_proc = ctx.Process(target=serve_fleet if plant == "lean" else serve_pymodbus_plant,
                                 args=(devices, registers, UNIT_ID, plant_child), name="plant")
        ftp_proc = ctx.Process(target=serve_ftp, args=(str(ftp_root), FTP_USER, FTP_PASSWORD,
                                                       ftp_child), name="ftp")
        plant_proc.start()
        ftp_proc.start()
        try:
            if not plant_pipe.poll(120) or not ftp_pipe.poll(30):
                raise RuntimeError("the simulated plant or the FTP server did not start")
            ports: list[int] = plant_pipe.recv()
            ftp_port: int = ftp_pipe.recv()
            ours = run_ours(work, ports, registers, period, seconds, ftp_root, ftp_port)
            theirs = run_baseline(work, ports, registers, period, seconds, ftp_port)
        finally:
            for pipe, proc in ((plant_pipe, plant_proc), (ftp_pipe, ftp_proc)):
                with contextlib.suppress(OSError):
                    pipe.send("stop")
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
                    proc.join()

    def per_1000(side: dict[str, Any]) -> float:
        return float(side["cpu_s"]) * 1000 / max(1, int(side["values"]))

    expected = devices * registers * seconds / period
    line = figure_line(
        "gateway_load", "pymodbus read per variable + SQLite INSERT per value, CSV to FTP "
        "each minute", "CPU-s/1000 values", [per_1000(ours)], [per_1000(theirs)], digits=4,
        peak_rss_mb=float(ours["peak_rss_mb"]),
        theirs_peak_rss_mb=float(theirs["peak_rss_mb"]),
        devices=devices, registers=registers, period_s=period, plant=plant,
        seconds=round(float(ours["seconds"]), 1),
        values_expected_about=round(expected),
        values_stored=ours["values"], baseline_values_stored=theirs["values"],
        cpu_s=round(float(ours["cpu_s"]), 2), baseline_cpu_s=round(float(theirs["cpu_s"]), 2),
        cpu_share=round(float(ours["cpu_s"]) / float(ours["seconds"]), 3),
        baseline_cpu_share=round(float(theirs["cpu_s"]) / float(theirs["seconds"]), 3),
        files_delivered=ours["files_delivered"], sessions_ok=ours["sessions_ok"],
        error_lines=ours["errors"], exit_code=ours["exit"],
        target="<= 0.012 CPU-s/1000 values, < 150 MB")
    emit(line)
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--devices", type=int, default=254)
    parser.add_argument("--registers", type=int, default=100)
    parser.add_argument("--period", type=int, default=10)
    parser.add_argument("--plant", choices=("pymodbus", "lean"), default="lean")
    parser.add_argument("--quick", action="store_true", help="smoke size: 5 devices x 20, 20 s")
    parser.add_argument("--baseline-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--ftp-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_child:
        ports = json.loads(Path(args.ports).read_text())
        asyncio.run(_baseline_main(ports, args.registers, args.period, Path(args.db),
                                   args.ftp_port, Path(args.ready)))
        return
    if args.quick:
        run(5, 20, 2, 20.0, plant=args.plant)
    else:
        run(args.devices, args.registers, args.period, args.seconds, plant=args.plant)


if __name__ == "__main__":
    main()
