"""web_latency: how fast the web UI answers while the gateway polls 254 devices
(docs/behaviour.md §10, target: every page under 200 ms on the 2-core box).

Ours: `sunpm run` as a process, the real service with its web UI, polling 254 Modbus TCP devices
of 20 holding registers every second (the first load of docs/architecture.md §7), the plant
(`serve_fleet`, the project's lean simulator) in a third process. Device 1 starts with a week
of records (a sealed file of the store, 20 variables every 60 s), so its charts read 500 buckets
as a gateway in service would. A logged-in client in this process asks each page and API call
once (warm-up), then in turn, `--requests` times each, 100 ms apart, and keeps the wall time of
every answer (status 200 checked). Baseline: the same pages of the same service polling one
device (with the same week of history), so the line tells what the load costs.

    python benchmarks/web_latency.py [--devices 254] [--requests 30] [--quick]

Prints one docs/style.md §10 line per page: `ours`/`theirs` the median answer in ms, `p95_ms`,
`max_ms`, `server_ms` (the median time inside the service, its `Server-Timing`: the rest is
waiting for its event loop, busy polling, or for the CPU), `bytes`, the machine's `load_avg`,
the poll `overruns` of the run, and `peak_rss_mb` the service's own peak resident memory
(VmHWM) while it served under the load.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
from _defs import u16_block
from _records import records_batch
from _report import emit, figure_line

from config import parse_config_ini, render_config_ini, render_daq, render_definition
from config.defaults import default_files
from config.model import Daq, Device
from pipeline.drivers.modbus.simulator import serve_fleet
from store import RECORDS_SCHEMA, StoreOptions
from store._segment import FILE_SUFFIX, UNCOMPRESSED_KEY, write_ipc_file

ROOT = Path(__file__).resolve().parents[1]
UID = "WEBBENCH1"
REGISTERS = 20
TARGET_MS = 200.0
NS = 1_000_000_000
START_LIMIT_S = 60.0
#: Device 1's history before the run: a week of records at its 60 s period, as a sealed file of
#: the store, so that its charts read what a gateway in service has (not the run's few minutes).
HISTORY_DAYS = 7
PAGES = ("/", "/devices", "/devices/1", "/devices/new", "/devices/1/edit", "/configuration",
         "/api/status", "/api/dashboard", "/api/devices", "/api/devices/1/values",
         "/api/devices/1/history?var=1&span=1h", "/api/devices/1/history?var=1&span=24h",
         "/api/devices/1/history?var=1&span=7d",
         "/discovery", "/diagnostics", "/scripts", "/system", "/api/config", "/api/discovery",
         "/api/traces", "/api/scripts")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_site(config_dir: Path, ports: list[int], web_port: int) -> None:
    files = default_files(UID)
    name = f"CONFIG/{UID}_config.ini"
    cfg = parse_config_ini(files[name], name).value
    for key, value in {"DAQ_PollPeriod": "1", "NTP_Server1": "", "NTP_Server2": "",
                       "WEB_Port": str(web_port)}.items():
        cfg = cfg.with_value(key, value)
    files[name] = render_config_ini(cfg)
    definition = u16_block(REGISTERS)
    devices = [Device(line=1 + k, index=str(k), interface=f"127.0.0.1:{port}", name=f"dev_{k}",
                      address=1, acq_period_s=60, timeout_ms=3000, category="Bench",
                      model="U16", def_file=definition.file_name)
               for k, port in enumerate(ports, start=1)]
    files[f"CONFIG/{UID}_daq.csv"] = render_daq(Daq(devices=tuple(devices),
                                                    blocks=frozenset({"devices"})))
    files[f"DEF/{definition.file_name}"] = render_definition(definition)
    for rel, data in files.items():
        (config_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (config_dir / rel).write_bytes(data)


def prefill_history(store_dir: Path, period_s: int = 60) -> int:
    """Device 1's last `HISTORY_DAYS` days, every variable every `period_s`, as one sealed IPC
    file of the store (zstd, as the store's compaction writes it); the rows written."""
    records = HISTORY_DAYS * 86_400 // period_s
    end_ns = (time.time_ns() // (period_s * NS)) * period_s * NS - 2 * period_s * NS
    record = np.arange(records, dtype=np.int64)
    ts = np.repeat(end_ns - (records - record) * period_s * NS, REGISTERS)
    seq = np.repeat(record + 1, REGISTERS).astype(np.uint64)
    var = np.tile(np.arange(1, REGISTERS + 1, dtype=np.int32), records)
    value = (np.repeat(record, REGISTERS) * var % 65_536).astype(np.float64)
    table = pa.Table.from_batches([records_batch(ts, seq, var, value)])
    meta = dict(RECORDS_SCHEMA.metadata or {})
    meta[UNCOMPRESSED_KEY] = str(table.nbytes).encode()
    folder = store_dir / "devices" / "1"
    folder.mkdir(parents=True)
    write_ipc_file(folder / f"1{FILE_SUFFIX}", table, RECORDS_SCHEMA.with_metadata(meta),
                   compress=StoreOptions().compress_sealed)
    return table.num_rows


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_serving(service: subprocess.Popen[bytes], out: Path, err: Path, url: str,
                 limit_s: float) -> None:
    """Until the service says its web UI listens on `url` (it says so once its socket listens).
    Its one-time password, said before, also begins with "Web UI on": waiting for that alone
    connected before the socket listened on a loaded box."""
    said = f"Web UI on {url}/\n".encode()
    deadline = time.monotonic() + limit_s
    while said not in out.read_bytes():
        if time.monotonic() > deadline or service.poll() is not None:
            raise RuntimeError(f"the service did not say {said!r}:\n" +
                               err.read_text()[-2000:])
        time.sleep(0.05)


def measure(devices: int, requests: int, folder: Path) -> dict[str, Any]:
    """Per page the answer times (ms) and sizes, with the service polling `devices`."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    plant = ctx.Process(target=serve_fleet, args=(devices, REGISTERS, 1, child), daemon=True)
    plant.start()
    service: subprocess.Popen[bytes] | None = None
    try:
        ports: list[int] = parent.recv()
        web_port = _free_port()
        write_site(folder / "config", ports, web_port)
        prefill_history(folder / "data" / "store")
        out = (folder / "service.out").open("wb")
        err = (folder / "service.err").open("wb")
        service = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "run", "--config", str(folder / "config"),
             "--data", str(folder / "data"), "--log-level", "warning"],
            stdout=out, stderr=err, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
        url = f"http://127.0.0.1:{web_port}"
        password_file = folder / "data" / "initial-password"
        wait_serving(service, folder / "service.out", folder / "service.err", url,
                     START_LIMIT_S)
        with httpx.Client(base_url=url, timeout=30.0) as client:
            answer = client.post("/api/login", json={"user": "admin",
                                                     "password": password_file.read_text().strip()})
            answer.raise_for_status()
            # Every device polled and recorded once before the clock starts.
            deadline = time.monotonic() + START_LIMIT_S
            while time.monotonic() < deadline:
                rows = client.get("/api/devices").json()["devices"]
                if sum(bool(client.get(f"/api/devices/{k}/values").json()["values"])
                       for k in (1, devices)) == 2 and len(rows) == devices:
                    break
                time.sleep(1.0)
            for page in PAGES:       # warm-up: first uses fill caches (time zones, templates)
                client.get(page).raise_for_status()
            times: dict[str, list[float]] = {page: [] for page in PAGES}
            inside: dict[str, list[float]] = {page: [] for page in PAGES}
            sizes: dict[str, int] = {}
            for _ in range(requests):
                for page in PAGES:
                    start = time.perf_counter()
                    answer = client.get(page)
                    times[page].append((time.perf_counter() - start) * 1000)
                    timing = answer.headers.get("Server-Timing", "app;dur=0")
                    inside[page].append(float(timing.partition("dur=")[2] or 0))
                    if answer.status_code != 200:
                        raise RuntimeError(f"{page}: {answer.status_code} {answer.text[:200]}")
                    sizes[page] = len(answer.content)
                    time.sleep(0.1)
            overruns = sum(int(d["overruns"]) for d in client.get("/api/devices").json()["devices"])
        peak = _vm_hwm_mb(service.pid)
        load = os.getloadavg()[0]
        return {"times": times, "inside": inside, "sizes": sizes, "peak_rss_mb": peak,
                "overruns": overruns, "load": load}
    finally:
        if service is not None and service.poll() is None:
            service.send_signal(signal.SIGINT)
            try:
                service.wait(20)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()
        parent.send("stop")
        plant.join(10)
        if plant.is_alive():
            plant.kill()


def run(devices: int, requests: int) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="sunpm-web-bench-") as scratch:
        loaded = measure(devices, requests, Path(scratch) / "loaded")
        idle = measure(1, requests, Path(scratch) / "idle")
    lines = []
    for page in PAGES:
        ours, theirs = loaded["times"][page], idle["times"][page]
        ordered = sorted(ours)
        lines.append(figure_line(
            "web_latency", f"the same page, the service polling 1 device ({page})", "ms",
            ours, theirs, peak_rss_mb=loaded["peak_rss_mb"],
            theirs_peak_rss_mb=idle["peak_rss_mb"], digits=1, page=page, devices=devices,
            n=len(ours), p95_ms=round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 1),
            max_ms=round(max(ours), 1), mean_ms=round(statistics.fmean(ours), 1),
            server_ms=round(statistics.median(loaded["inside"][page]), 1),
            bytes=loaded["sizes"][page], target_ms=TARGET_MS, load_avg=round(loaded["load"], 1),
            under_target=max(ours) < TARGET_MS, overruns=loaded["overruns"]))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=254)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="smoke sizes (10 devices, 3 each)")
    args = parser.parse_args()
    devices, requests = (10, 3) if args.quick else (args.devices, args.requests)
    for line in run(devices, requests):
        emit(line)


if __name__ == "__main__":
    main()
