"""acquisition_load: the live path at full rate against a simulated plant (docs/architecture.md §7).

Ours: the Modbus TCP driver, the poll loop, the recorder and the store with default settings
(`STORE_FlushSeconds=1`), in one process as the service runs them, polling one device per
`ip:port`. Baseline: the same plant read by a pymodbus client loop (every device read
concurrently at each slot, one block read each) inserting the values into SQLite with one commit a
second, as common Python gateways do. The plant, pymodbus servers (one per device, `--plant
lean` for the project's own simulator), runs in a third process, so neither side pays for it.

Each side runs in its own child process, under `strace -f -c --seccomp-bpf` when strace is there
(it stops only at the counted syscalls), so its CPU time (getrusage), peak resident memory, fsync
count and block-device bytes are its own. Every value must be recorded: the line says how many
were expected and how many were stored with quality 0. Prints one docs/style.md §10 line per load:

    python benchmarks/acquisition_load.py [--seconds 30] [--quick]

Measures (per load): `ours`/`theirs` CPU-s per 1000 values stored; `fsyncs_per_s` (strace's count
of fsync, fdatasync and syncfs over the run, divided by its seconds; without strace, ours counts
`os.fsync` calls in-process and the baseline's is null); `fsyncs_per_commit` (the whole run's,
segment creation and the close's checkpoint included) and `steady_fsyncs_per_commit` (ours, in
process, from the end of the first commit to the close);
`write_bytes_per_byte_stored`: `write_bytes` of /proc/<pid>/io (what the process's own writes
and fsyncs sent to the block device; the filesystem journal's own writes are not in it) over
the bytes the run left on disk (segments, or the SQLite files).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _plant import serve_pymodbus_plant
from _report import emit, figure_line

from pipeline.drivers.modbus.simulator import serve_fleet

ROOT = Path(__file__).resolve().parents[1]
UNIT_ID = 1
TIMEOUT_MS = 3000
FSYNC_CALLS = ("fsync", "fdatasync", "syncfs")
#: (devices, registers, period s): the two loads of docs/architecture.md §7.
LOADS = ((254, 20, 1), (254, 100, 10))


# ----------------------------------------------------------------------------- measures


def _io_write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no write_bytes")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sys_s() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def _start_at_slot(period: int) -> float:
    """Sleep to just after a wall-clock second; returns the first slot (multiple of period)."""
    now = time.time()
    await asyncio.sleep(1 - now % 1 + 0.05)
    now = time.time()
    return (now // period + 1) * period


def _stop_time(first_slot: float, period: int, seconds: float) -> tuple[float, int]:
    """Stop half a period after a slot; the periods closed by then, per device."""
    periods = max(1, round(seconds / period))
    return first_slot + periods * period + period / 2, periods


# ----------------------------------------------------------------------------- ours


async def _run_ours(ports: list[int], registers: int, period: int, seconds: float,
                    store: Path) -> dict[str, Any]:
    from _defs import u16_block

    from config.model import Device, Quality
    from pipeline.drivers.modbus.planner import plan_reads
    from pipeline.drivers.modbus.tcp import ModbusTcpDriver
    from pipeline.poller import PolledDevice, Poller, PollLink, link_name
    from pipeline.recorder import Recorder
    from store import Log, StoreOptions

    fsyncs = [0]
    real_fsync = os.fsync

    def counting_fsync(fd: Any) -> None:
        fsyncs[0] += 1
        real_fsync(fd)

    os.fsync = counting_fsync
    definition = u16_block(registers)
    plan = plan_reads(definition)
    devices = [Device(line=k + 1, index=str(k + 1), interface=f"127.0.0.1:{port}",
                      name=f"inv{k + 1}", address=UNIT_ID, acq_period_s=period,
                      timeout_ms=TIMEOUT_MS, def_file="bench.csv")
               for k, port in enumerate(ports)]
    driver = ModbusTcpDriver()
    links = [PollLink(name=link_name(d), driver=driver,
                      devices=(PolledDevice(device=d, definition=definition, plan=plan),))
             for d in devices]
    # Warm-up: every connection open before the first slot, as the baseline's are.
    warm = await asyncio.gather(*(driver.read(d, plan) for d in devices))
    if any(q.quality is not Quality.GOOD for r in warm for q in r.values.values()):
        raise RuntimeError("the plant did not answer every device at the warm-up")
    log = await Log.open(store, StoreOptions())
    recorder = Recorder()
    poller = Poller(links, recorder=recorder, record_sink=log.append_records,
                    daq_poll_period_s=period)
    first_slot = await _start_at_slot(period)
    stop_at, periods = _stop_time(first_slot, period, seconds)
    cpu0, sys0, io0, fsync0 = _cpu_s(), _sys_s(), _io_write_bytes(), fsyncs[0]
    wall0 = time.monotonic()
    task = asyncio.create_task(poller.run())
    # Steady state: from the end of the first commit (segments created) to before the close.
    # The store signals no commit: sampling its counter every 10 ms is close enough here.
    while log.commits < 2 and time.time() < stop_at:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    steady_fsyncs0, steady_commits0 = fsyncs[0], log.commits - 1
    await asyncio.sleep(max(0.0, stop_at - time.time()))
    poller.stop()
    await task
    await driver.close()
    commits = log.commits
    steady_fsyncs, steady_commits = fsyncs[0] - steady_fsyncs0, commits - steady_commits0
    await log.close()
    cpu, sys_s, wall = _cpu_s() - cpu0, _sys_s() - sys0, time.monotonic() - wall0
    io, fsync_count = _io_write_bytes() - io0, fsyncs[0] - fsync0
    counters = poller.counters()
    reader = Log.open_read_only(store)
    try:
        stored = 0
        for d in devices:
            table = reader.records(d.index)
            qualities = table.column("quality").to_pylist()
            stored += sum(1 for q in qualities if q == Quality.GOOD)
    finally:
        await reader.close()
    return {"cpu_s": cpu, "sys_s": sys_s, "wall_s": wall,
            "values_expected": len(devices) * registers * periods,
            "values_stored": stored, "write_bytes": io, "bytes_stored": _tree_bytes(store),
            "fsyncs_in_process": fsync_count, "commits": commits,
            "steady_fsyncs_per_commit": round(steady_fsyncs / max(1, steady_commits), 2),
            "overruns": sum(counters.overruns_by_device.values()),
            "records_dropped": counters.records_dropped, "store_waits": counters.store_waits,
            # pandas is no dependency of ours, but pyarrow imports it when it is installed
            "pandas_imported": "pandas" in sys.modules,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ----------------------------------------------------------------------------- the baseline


async def _run_baseline(ports: list[int], registers: int, period: int, seconds: float,
                        store: Path) -> dict[str, Any]:
    from pymodbus.client import AsyncModbusTcpClient

    store.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(store / "values.db")
    db.execute("CREATE TABLE IF NOT EXISTS value_log "
               "(ts INTEGER, device TEXT, reg INTEGER, value REAL, quality INTEGER)")
    db.commit()
    clients = [AsyncModbusTcpClient("127.0.0.1", port=port, timeout=TIMEOUT_MS / 1000,
                                    retries=0) for port in ports]
    await asyncio.gather(*(c.connect() for c in clients))
    commits = [0]
    stopping = asyncio.Event()

    async def read(k: int, client: AsyncModbusTcpClient, ts: int) -> list[tuple[object, ...]]:
        try:
            reply = await client.read_holding_registers(0, count=registers, device_id=UNIT_ID)
        except Exception:  # noqa: BLE001 - a failed read is stored as missing, like a gateway
            return [(ts, str(k + 1), r, None, 1) for r in range(registers)]
        if reply.isError():
            return [(ts, str(k + 1), r, None, 1) for r in range(registers)]
        return [(ts, str(k + 1), r, float(v), 0) for r, v in enumerate(reply.registers)]

    async def poll_loop(first_slot: float) -> None:
        slot = first_slot
        while not stopping.is_set():
            await asyncio.sleep(max(0.0, slot - time.time()))
            if stopping.is_set():
                return
            ts = int(slot * 1e9)
            rows = await asyncio.gather(*(read(k, c, ts) for k, c in enumerate(clients)))
            db.executemany("INSERT INTO value_log VALUES (?, ?, ?, ?, ?)",
                           [row for device_rows in rows for row in device_rows])
            slot += period
            while slot <= time.time():   # an overrun: the slot is skipped
                slot += period

    async def commit_loop() -> None:
        while not stopping.is_set():
            await asyncio.sleep(1.0)
            db.commit()
            commits[0] += 1

    first_slot = await _start_at_slot(period)
    stop_at, periods = _stop_time(first_slot, period, seconds)
    cpu0, sys0, io0, wall0 = _cpu_s(), _sys_s(), _io_write_bytes(), time.monotonic()
    tasks = [asyncio.create_task(poll_loop(first_slot)), asyncio.create_task(commit_loop())]
    await asyncio.sleep(max(0.0, stop_at - time.time()))
    stopping.set()
    await asyncio.gather(*tasks)
    db.commit()
    for client in clients:
        client.close()
    cpu, wall, io = _cpu_s() - cpu0, time.monotonic() - wall0, _io_write_bytes() - io0
    sys_s = _sys_s() - sys0
    # the polls of the periods ours closed: the last slot's poll is an open period there
    stored = db.execute("SELECT count(*) FROM value_log WHERE quality = 0 AND ts < ?",
                        (int((first_slot + periods * period) * 1e9),)).fetchone()[0]
    db.close()
    return {"cpu_s": cpu, "sys_s": sys_s, "wall_s": wall,
            "values_expected": len(ports) * registers * periods,
            "values_stored": stored, "write_bytes": io, "bytes_stored": _tree_bytes(store),
            "commits": commits[0] + 1,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child(args: argparse.Namespace) -> None:
    ports = json.loads(Path(args.ports).read_text())
    run = _run_ours if args.side == "ours" else _run_baseline
    result = asyncio.run(run(ports, args.registers, args.period, args.seconds, Path(args.store)))
    Path(args.out).write_text(json.dumps(result))


# ----------------------------------------------------------------------------- the parent


def _side(side: str, ports: list[int], registers: int, period: int, seconds: float,
          work: Path, use_strace: bool) -> dict[str, Any]:
    (work / "ports.json").write_text(json.dumps(ports))
    out, trace = work / f"{side}.json", work / f"{side}.strace"
    store = work / f"{side}-store"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side,
           "--ports", str(work / "ports.json"), "--registers", str(registers),
           "--period", str(period), "--seconds", str(seconds), "--store", str(store),
           "--out", str(out)]
    if use_strace:
        cmd = ["strace", "-f", "-c", "--seccomp-bpf", "-e", "trace=" + ",".join(FSYNC_CALLS),
               "-o", str(trace), *cmd]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    subprocess.run(cmd, check=True, env=env, timeout=seconds * 4 + 120)
    result: dict[str, Any] = json.loads(out.read_text())
    result["fsyncs"] = _strace_calls(trace.read_text()) if use_strace else None
    shutil.rmtree(store, ignore_errors=True)
    return result


def _strace_calls(summary: str) -> int:
    """Calls of the fsync family in an `strace -c` summary."""
    total = 0
    for line in summary.splitlines():
        fields = line.split()
        if fields and fields[-1] in FSYNC_CALLS and re.fullmatch(r"\d+", fields[3]):
            total += int(fields[3])
    return total


def measure(ports: list[int], devices: int, registers: int, period: int, seconds: float,
            use_strace: bool) -> dict[str, Any]:
    ports = ports[:devices]
    with tempfile.TemporaryDirectory(prefix="acq-load-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        ours = _side("ours", ports, registers, period, seconds, work, use_strace)
        theirs = _side("baseline", ports, registers, period, seconds, work, use_strace)

    def per_1000(side: dict[str, Any]) -> float:
        stored = int(side["values_stored"])
        return float(side["cpu_s"]) * 1000 / max(1, stored)

    def rate(side: dict[str, Any], key: str) -> float | None:
        count = side.get(key)
        return None if count is None else round(float(count) / float(side["wall_s"]), 1)

    ours_fsyncs = ours["fsyncs"] if ours["fsyncs"] is not None else ours["fsyncs_in_process"]
    return figure_line(
        "acquisition_load", "pymodbus client loop + SQLite, one commit a second",
        "CPU-s/1000 values", [per_1000(ours)], [per_1000(theirs)], digits=4,
        devices=devices, registers=registers, period_s=period,
        seconds=round(float(ours["wall_s"]), 1),
        values_expected=ours["values_expected"], values_stored=ours["values_stored"],
        baseline_values_stored=theirs["values_stored"],
        overruns=ours["overruns"], records_dropped=ours["records_dropped"],
        store_waits=ours["store_waits"],
        cpu_s=round(float(ours["cpu_s"]), 2),
        baseline_cpu_s=round(float(theirs["cpu_s"]), 2),
        sys_s=round(float(ours["sys_s"]), 2), baseline_sys_s=round(float(theirs["sys_s"]), 2),
        fsyncs_per_s=rate({**ours, "n": ours_fsyncs}, "n"),
        baseline_fsyncs_per_s=rate(theirs, "fsyncs"),
        fsyncs_per_commit=round(float(ours_fsyncs) / max(1, int(ours["commits"])), 1),
        baseline_fsyncs_per_commit=(None if theirs["fsyncs"] is None else round(
            float(theirs["fsyncs"]) / max(1, int(theirs["commits"])), 1)),
        fsync_source="strace -c" if use_strace else "os.fsync calls counted in-process",
        # os.fsync calls in-process between the end of the first commit and the close (whose
        # checkpoint fsyncs every open segment): the per-commit cost once segments exist.
        steady_fsyncs_per_commit=ours["steady_fsyncs_per_commit"],
        write_bytes_per_byte_stored=round(
            int(ours["write_bytes"]) / max(1, int(ours["bytes_stored"])), 2),
        baseline_write_bytes_per_byte_stored=round(
            int(theirs["write_bytes"]) / max(1, int(theirs["bytes_stored"])), 2),
        bytes_per_value_stored=round(
            int(ours["bytes_stored"]) / max(1, int(ours["values_stored"])), 1),
        baseline_bytes_per_value_stored=round(
            int(theirs["bytes_stored"]) / max(1, int(theirs["values_stored"])), 1),
        write_bytes_source="/proc/<pid>/io write_bytes",
        pandas_imported=ours["pandas_imported"],
        peak_rss_mb=round(float(ours["peak_rss_mb"]), 1),
        theirs_peak_rss_mb=round(float(theirs["peak_rss_mb"]), 1))


def run(loads: tuple[tuple[int, int, int], ...] = LOADS, seconds: float = 30.0, *,
        plant: str = "pymodbus", use_strace: bool | None = None) -> list[dict[str, Any]]:
    if use_strace is None:
        use_strace = shutil.which("strace") is not None
    devices = max(d for d, _, _ in loads)
    registers = max(r for _, r, _ in loads)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * devices + 64)), hard))
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    if plant == "pymodbus":
        server = ctx.Process(target=serve_pymodbus_plant, args=(devices, registers, UNIT_ID, child),
                             name="plant")
    else:
        server = ctx.Process(target=serve_fleet, args=(devices, registers, UNIT_ID, child),
                             name="plant")
    server.start()
    try:
        if not parent.poll(120):
            raise RuntimeError("the simulated plant did not start within 120 s")
        ports: list[int] = parent.recv()
        lines = []
        for d, r, p in loads:
            # a 10 s period needs several periods to be a measure
            line = measure(ports, d, r, p, max(seconds, 3 * p), use_strace)
            line["plant"] = plant
            emit(line)
            lines.append(line)
        return lines
    finally:
        parent.send("stop")
        server.join(10)
        if server.is_alive():
            server.kill()
            server.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="smoke size: 10 devices, 3 s")
    parser.add_argument("--plant", choices=("pymodbus", "lean"), default="pymodbus")
    parser.add_argument("--devices", type=int, nargs="*",
                        help="device counts of the 1 s load (e.g. 10 254: fsyncs per commit)")
    parser.add_argument("--variables", type=int, default=20,
                        help="registers per device of the --devices loads (100: the documented "
                             "maximum plant at the fastest period)")
    parser.add_argument("--no-strace", action="store_true")
    parser.add_argument("--child", choices=("ours", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--registers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--period", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.side = args.child
        _child(args)
        return
    strace = False if args.no_strace else None
    if args.quick:
        run(((10, 20, 1),), 3.0, plant=args.plant, use_strace=strace)
    elif args.devices:
        run(tuple((d, args.variables, 1) for d in args.devices), args.seconds,
            plant=args.plant, use_strace=strace)
    else:
        run(LOADS, args.seconds, plant=args.plant, use_strace=strace)


if __name__ == "__main__":
    main()
