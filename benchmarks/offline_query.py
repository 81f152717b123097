"""Offline analysis of a card dump: `sunpm sd sql` against pandas over daily CSV.gz files.

30 days x 100 devices x 100 variables at a 600 s period (43.2 M values), laid out as a live
gateway leaves its store (store_query.py's layout: per device 29 sealed days as IPC files and
today's open segment). Two questions, as an analyst asks them of a pulled card: the daily
energy per device (max - min of the energy counter, variable 1) and the hourly mean power
(variable 2) per device.

Ours: `sunpm sd sql DUMP "..." --format csv`, one process per question, timed from the command's
start to its exit (interpreter, imports, read-only open, lazy scan, query, CSV out). Baseline:
pandas, one process per question too, reading the same values from one CSV.gz per day (columns
time, device, v1..v100; `usecols` keeps only what the question needs) and grouping. Both
sides' answers are compared. Each side's peak RSS is its process's high-water mark (`VmHWM`,
read by the process itself: `ru_maxrss` would start from this script's size, which Linux
carries into a child across exec).

Each line has a `_served` twin: the same `sunpm sd sql` command answered by a running
`sunpm sd serve DUMP` (started once, `ours_start_s`), timed from the asking process's start to
its exit, the question asked before (the first time is `ours_first_s`); its `peak_rss_mb` is the
server's, the asking process's is `client_peak_rss_mb`.

A third line is the floor of any process-per-question tool in Python: the same rows loaded
once into a native DuckDB database file, sorted by variable (what an analyst who converts a
dump before querying it would build; its one-time load is printed as `theirs_load_s`), queried
by a fresh `python` that imports duckdb, asks the question and writes CSV.

    python benchmarks/offline_query.py [--quick]
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import emit, figure_line
from store_query import _day_records, build_store

ROOT = Path(__file__).resolve().parents[1]

QUERIES = {
    "daily_energy": """
        SELECT device, strftime(date_trunc('day', time), '%Y-%m-%d') AS day,
               max(raw) - min(raw) AS energy
        FROM records WHERE var = 1 GROUP BY ALL ORDER BY ALL""",
    "hourly_power": """
        SELECT device, strftime(date_trunc('hour', time), '%Y-%m-%d %H') AS hour,
               avg(raw) AS power
        FROM records WHERE var = 2 GROUP BY ALL ORDER BY ALL""",
}

PANDAS = r"""
import glob, sys
import pandas as pd
folder, question = sys.argv[1], sys.argv[2]
column = "v1" if question == "daily_energy" else "v2"
frames = [pd.read_csv(path, usecols=["time", "device", column]) for path in
          sorted(glob.glob(folder + "/*.csv.gz"))]
data = pd.concat(frames, ignore_index=True)
time = pd.to_datetime(data["time"], utc=True)
if question == "daily_energy":
    data["day"] = time.dt.strftime("%Y-%m-%d")
    out = data.groupby(["device", "day"])[column].agg(lambda s: s.max() - s.min())
else:
    data["hour"] = time.dt.strftime("%Y-%m-%d %H")
    out = data.groupby(["device", "hour"])[column].mean()
out = out.reset_index()
out = out.sort_values(list(out.columns[:2]))
out.to_csv(sys.stdout, index=False, header=True)
"""


def _csv_days(folder: Path, devices: int, days: int, period_s: int, variables: int) -> None:
    """The same values as the store's, one CSV.gz per UTC day."""
    folder.mkdir()
    for day in range(days):
        parts = []
        for dev in range(1, devices + 1):
            table, _ = _day_records(dev, day, period_s, variables)
            per_record = table.num_rows // variables
            ts = table.column("ts").cast(pa.int64()).to_numpy()[::variables]
            times = pa.array(ts, pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
            values = table.column("value").to_numpy().reshape(per_record, variables)
            block = {"time": times, "device": pa.array([dev] * per_record, pa.int32())}
            block.update({f"v{v + 1}": pa.array(values[:, v]) for v in range(variables)})
            parts.append(pa.table(block))
        whole = pa.concat_tables(parts)
        sink = io.BytesIO()
        pacsv.write_csv(whole, sink)
        with gzip.open(folder / f"day_{day:02d}.csv.gz", "wb", compresslevel=6) as fh:
            fh.write(sink.getvalue())


_PEAK = r"""
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_module(sys.argv[0], run_name="__main__") if not sys.argv[0].endswith(".py") \
        else runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
with open("/proc/self/status") as status:
    peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
print("PEAK_RSS_KB", peak, file=sys.stderr)
sys.exit(code)
"""


PANDAS_DATA_FILES = r"""
import glob, gzip, io, sys
import pandas as pd
folder, question = sys.argv[1], sys.argv[2]
var = 1 if question == "daily_energy" else 2
frames = []
for path in sorted(glob.glob(folder + "/*_MODBUS_*.csv.gz")):
    text = gzip.decompress(open(path, "rb").read()).decode()
    # Device blocks: DEVICEINDEX;<index>, <protocol>;<file>, <n>;<Index_1>;...;<Index_n>, rows.
    for block in text.split("DEVICEINDEX;")[1:]:
        index, _protocol, header, rows = block.split("\n", 3)
        column = header.split(";")[1:].index(str(var)) + 1
        frame = pd.read_csv(io.StringIO(rows), sep=";", header=None, usecols=[0, column])
        frame.columns = ["time", "value"]
        frame["device"] = int(index)
        frames.append(frame)
data = pd.concat(frames, ignore_index=True)
time = pd.to_datetime(data["time"], format="%y/%m/%d-%H:%M:%S", utc=True)
if question == "daily_energy":
    data["key"] = time.dt.strftime("%Y-%m-%d")
    out = data.groupby(["device", "key"])["value"].agg(lambda s: s.max() - s.min())
else:
    data["key"] = time.dt.strftime("%Y-%m-%d %H")
    out = data.groupby(["device", "key"])["value"].mean()
out = out.reset_index().sort_values(["device", "key"])
out.to_csv(sys.stdout, index=False, header=True)
"""


def _data_files(folder: Path, devices: int, days: int, period_s: int, variables: int) -> None:
    """The same values as WebdynSunPM DATA files (docs/formats.md §9.2, time zone UTC, header
    option on): one `<uid>_MODBUS_<ts>.csv.gz` per UTC day, a block per device."""
    folder.mkdir()
    header = ";".join([str(variables), *(str(v + 1) for v in range(variables))])
    for day in range(days):
        parts = []
        for dev in range(1, devices + 1):
            table, _ = _day_records(dev, day, period_s, variables)
            per_record = table.num_rows // variables
            ts = table.column("ts").cast(pa.int64()).to_numpy()[::variables]
            stamps = [time.strftime("%y/%m/%d-%H:%M:%S", time.gmtime(int(t) // 10**9))
                      for t in ts]
            values = table.column("value").to_numpy().reshape(per_record, variables)
            rows = "\n".join(stamp + ";" + ";".join(str(int(v)) for v in row)
                             for stamp, row in zip(stamps, values, strict=True))
            parts.append(f"DEVICEINDEX;{dev}\nmodbusTCP;inverter.csv\n{header}\n{rows}\n")
        end = time.strftime("%y%m%d_%H%M%S", time.gmtime(int(ts[-1]) // 10**9 + 1))
        with gzip.open(folder / f"WPMBENCH1_MODBUS_{end}.csv.gz", "wb", compresslevel=6) as fh:
            fh.write("".join(parts).encode())


NATIVE = r"""
import csv, sys
import duckdb
database, question = sys.argv[1], sys.argv[2]
key = "'%Y-%m-%d'" if question == "daily_energy" else "'%Y-%m-%d %H'"
unit = "day" if question == "daily_energy" else "hour"
answer = "max(value) - min(value)" if question == "daily_energy" else "avg(value)"
var = 1 if question == "daily_energy" else 2
con = duckdb.connect(database, read_only=True)
con.execute("SET TimeZone = 'UTC'")
cursor = con.execute(f"SELECT device::INTEGER, strftime(date_trunc('{unit}', ts), {key}), "
                     f"{answer} FROM records WHERE var = {var} GROUP BY ALL ORDER BY ALL")
out = csv.writer(sys.stdout, lineterminator="\n")
out.writerow(["device", unit, "value"])
while rows := cursor.fetchmany(10_000):
    out.writerows(rows)
"""


def _native_sorted(unsorted: Path, database: Path) -> float:
    """The rows of `unsorted` (build_store's DuckDB file) in a new file, sorted by variable,
    device and time: zone maps then let `WHERE var = k` read that variable's row groups only.
    Returns the load's seconds."""
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect(str(database))
    con.execute("SET enable_progress_bar = false")
    con.execute(f"ATTACH '{unsorted}' AS src (READ_ONLY)")
    con.execute("CREATE TABLE records AS SELECT * FROM src.records ORDER BY var, device, ts")
    con.execute("DETACH src")
    con.close()
    return time.perf_counter() - started


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The children's environment: this tree first on the path, and bytecode cached as an
    installation has it (pip compiles what it installs; `PYTHONDONTWRITEBYTECODE` in the caller's
    environment would have every `sunpm` process compile its modules again, some 10 ms for a
    served question's client and more for a process answering alone)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(extra or {})}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _run_measured(args: list[str], env: dict[str, str] | None = None
                  ) -> tuple[float, float, str]:
    """A child `python ARGS`, its own peak RSS (reported by the child itself)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK, *args], capture_output=True, text=True,
                          check=False, cwd=ROOT, env=_child_env(env))
    elapsed = time.perf_counter() - started
    peaks = [line for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_KB")]
    if done.returncode != 0 or not peaks:
        raise RuntimeError(f"{args[:3]}: exit {done.returncode}: {done.stderr[-2000:]}")
    return elapsed, int(peaks[-1].split()[1]) / 1024, done.stdout


def _rows(csv_text: str) -> list[tuple[str, str, float]]:
    lines = csv_text.strip().splitlines()[1:]
    out = []
    for line in lines:
        fields = line.split(",")
        if len(fields) != 3:
            raise RuntimeError(f"unexpected answer line {line!r} in {csv_text[:300]!r}")
        device, key, value = fields
        out.append((str(int(device)), key, round(float(value), 6)))
    return sorted(out)


def run(devices: int = 100, days: int = 30, period_s: int = 600, variables: int = 100,
        n: int = 3) -> list[dict[str, object]]:
    base = Path(tempfile.mkdtemp(prefix="sunpm-bench-offline-"))
    lines = []
    try:
        dump = base / "store"
        loaded = base / "loaded.duckdb"
        values = build_store(dump, loaded, devices, days, period_s, variables)
        native = base / "native.duckdb"
        native_load_s = _native_sorted(loaded, native)
        loaded.unlink()
        csv_dir = base / "csv"
        _csv_days(csv_dir, devices, days, period_s, variables)
        csv_bytes = sum(p.stat().st_size for p in csv_dir.iterdir())
        store_bytes = sum(p.stat().st_size for p in dump.rglob("*") if p.is_file())
        data_dir = base / "data_files"
        _data_files(data_dir, devices, days, period_s, variables)
        data_bytes = sum(p.stat().st_size for p in data_dir.iterdir())
        baselines = {
            "delivered DATA files (docs/formats.md §9, a block per device), pandas read_csv per "
            "block (usecols) + groupby": (PANDAS_DATA_FILES, data_dir, data_bytes),
            "one wide CSV.gz per day (time, device, v1..v100), pandas read_csv (usecols) + "
            "groupby": (PANDAS, csv_dir, csv_bytes),
            "floor: the same rows loaded once into a native DuckDB file sorted by variable, "
            "duckdb in a fresh python per question": (NATIVE, native, native.stat().st_size),
        }
        server = _Server(dump, base / "run")
        for question, sql in QUERIES.items():
            ours_cmd = ["pipeline.cli", "sd", "sql", str(dump), sql, "--format", "csv"]
            _run_measured([*ours_cmd, "--no-server"])  # warm-up: page cache and bytecode
            ours_s, ours_rss = [], []
            for _ in range(n):
                elapsed, rss, ours_out = _run_measured([*ours_cmd, "--no-server"])
                ours_s.append(elapsed)
                ours_rss.append(rss)
            ours_rows = _rows(ours_out)
            # Through `sunpm sd serve`: the first question of its kind (what the server kept
            # of other questions does not serve it), then the same question again.
            first_s, _, served_out = _run_measured(ours_cmd, server.env)
            served_s, client_rss = [], []
            for _ in range(n):
                elapsed, rss, served_out = _run_measured(ours_cmd, server.env)
                served_s.append(elapsed)
                client_rss.append(rss)
            assert _rows(served_out) == ours_rows
            served = {"first_s": round(first_s, 3), "again_s": served_s,
                      "client_peak_rss_mb": round(max(client_rss), 1)}
            # Record times end their period a nanosecond early (store_query's rows), so each
            # day holds its own records: a row per device and day, or per recorded hour.
            per_day = 86_400 // max(period_s, 3600) if question == "hourly_power" else 1
            assert len(ours_rows) == devices * days * per_day, len(ours_rows)
            for k, (baseline, (code, folder, size)) in enumerate(baselines.items()):
                script = base / f"pandas_{k}.py"
                script.write_text(code)
                theirs_cmd = [str(script), str(folder), question]
                extra = {"theirs_load_s": round(native_load_s, 2)} if code is NATIVE else {}
                _run_measured(theirs_cmd)  # warm-up
                theirs_s, theirs_rss = [], []
                for _ in range(n):
                    elapsed, rss, theirs_out = _run_measured(theirs_cmd)
                    theirs_s.append(elapsed)
                    theirs_rss.append(rss)
                theirs_rows = _rows(theirs_out)
                assert ours_rows == theirs_rows, (baseline, ours_rows[:3], theirs_rows[:3])
                common = {"n": n, "values": values, "devices": devices, "days": days,
                          "variables": variables, "period_s": period_s,
                          "theirs_peak_rss_mb": round(max(theirs_rss), 1),
                          "store_mb": round(store_bytes / 2**20, 1),
                          "input_mb": round(size / 2**20, 1), "answer_rows": len(ours_rows),
                          **extra}
                lines.append(figure_line(
                    f"offline_query_{question}", baseline,
                    "s", ours_s, theirs_s, digits=3, speedup_digits=2,
                    peak_rss_mb=round(max(ours_rss), 1),
                    ours_includes="process start, imports, read-only open, lazy scan, query, "
                                  "CSV out (theirs likewise: a process per question)",
                    **common))
                lines.append(figure_line(
                    f"offline_query_{question}_served", baseline,
                    "s", served["again_s"], theirs_s, digits=3, speedup_digits=2,
                    peak_rss_mb=server.peak_rss_mb(),
                    ours_first_s=served["first_s"],
                    client_peak_rss_mb=served["client_peak_rss_mb"],
                    ours_start_s=server.start_s,
                    ours_includes="`sunpm sd sql` process start to exit, answered by a running "
                                  "`sunpm sd serve` (started once: ours_start_s) asked this "
                                  "question before (the first time: ours_first_s); "
                                  "peak_rss_mb is the server's",
                    **common))
        server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return lines


class _Server:
    """`sunpm sd serve DUMP`, in a runtime folder of its own."""

    def __init__(self, dump: Path, run: Path) -> None:
        run.mkdir(mode=0o700)
        self.env = {"XDG_RUNTIME_DIR": str(run)}
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "sd", "serve", str(dump)],
            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=_child_env(self.env))
        assert self.process.stderr is not None
        ready = self.process.stderr.readline()
        if "open for" not in ready:
            raise RuntimeError(f"sd serve: {ready}")
        self.start_s = round(time.perf_counter() - started, 2)

    def peak_rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
        return round(int(peak) / 1024, 1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.communicate(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny size, for a smoke test")
    args = parser.parse_args()
    lines = run(devices=3, days=3, period_s=3600, variables=5, n=1) if args.quick else run()
    for line in lines:
        emit(line)


if __name__ == "__main__":
    main()
