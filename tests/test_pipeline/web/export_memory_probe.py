"""A gateway process of its own, set up as `sunpm run` sets up its process (no pandas, Arrow on
the C heap, two malloc arenas), whose server 1 has been out of reach for a month: it records a
month of `DEVICES` inverters while it runs (as a month of polling would have, in seconds), then
asks its own web UI what an installer's browser asks, `/api/status` (the dashboard: each
server's backlog) and `/api/export` of the month. Prints one JSON line: the export's size, the
resident size before and the peak while both were answered (MiB, VmHWM reset just before).

    python tests/test_pipeline/web/export_memory_probe.py FOLDER DEVICES
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from pathlib import Path

NS = 1_000_000_000
DAYS = 30
PERIOD_S = 10                     # DAQ_AcqPeriod 10 s: 259,200 records a device
VARIABLES = (4, 6, 8, 10, 12, 14, 16)
CHUNK = 4_000                     # records an append


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(folder: Path, devices: int) -> None:
    from pipeline.cli import run

    run._lean_imports()
    run._fewer_malloc_arenas()
    run._arrow_on_malloc()
    import pyarrow as pa
    from web_support import running_gateway

    from store import RECORDS_SCHEMA

    def records(def_id: str, start_ns: int, first: int, count: int) -> pa.RecordBatch:
        rows = count * len(VARIABLES)
        ts = [start_ns + (first + k) * PERIOD_S * NS for k in range(count) for _ in VARIABLES]
        values = [float((first + k) % 997 + v) for k in range(count) for v in VARIABLES]
        return pa.RecordBatch.from_arrays([
            pa.array(ts, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
            pa.array([0] * rows, pa.uint64()),
            pa.array(list(VARIABLES) * count, pa.int32()),
            pa.array(values, pa.float64()),
            pa.nulls(rows, pa.float64()),
            pa.nulls(rows, pa.float64()),
            pa.nulls(rows, pa.string()),
            pa.array([0] * rows, pa.uint8()),
            pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()),
                                           pa.array([def_id])),
        ], schema=RECORDS_SCHEMA)

    unreachable = {"SERVER_Type": "ftp", "FTP_Host": "127.0.0.1",
                   "FTP_Port": str(_closed_port())}
    with running_gateway(folder, inverters=devices, extra=unreachable) as gateway:
        assert gateway.gateway is not None and gateway.loop is not None
        store = gateway.gateway.store
        assert store is not None
        end_ns = time.time_ns() // NS * NS
        start_ns = end_ns - DAYS * 86_400 * NS
        # The devices' own definition snapshot, as the recorder names it.
        def_id = store.put_definition("demo_inverter.csv", (
            gateway.config_dir / "DEF" / "demo_inverter.csv").read_bytes())

        async def fill() -> None:
            acks = []
            per_device = DAYS * 86_400 // PERIOD_S
            for device in range(1, devices + 1):
                for first in range(0, per_device, CHUNK):
                    acks.append(store.submit_records(str(device), records(
                        def_id, start_ns, first, min(CHUNK, per_device - first))))
                    await store.wait_for_room()
            await store.commit()
            assert not any(r.dropped for r in await asyncio.gather(*acks))

        asyncio.run_coroutine_threadsafe(fill(), gateway.loop).result(300)
        with gateway.client() as client:
            Path("/proc/self/clear_refs").write_text("5")      # VmHWM from here on
            rest = _status_mib("VmRSS:")
            status = client.get("/api/status", timeout=120)
            assert status.status_code == 200, status.text
            size = 0
            with client.stream("GET", "/api/export", timeout=300, params={
                    "server": 1,
                    "from": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_ns // NS)),
                    "to": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end_ns // NS))}
                               ) as exported:
                assert exported.status_code == 200, exported.read()
                for chunk in exported.iter_raw(64 * 1024):
                    size += len(chunk)
            peak = _status_mib("VmHWM:")
    backlog = status.json()["servers"][0]["backlog"]
    print(json.dumps({"size": size, "rest_mib": rest, "peak_mib": peak, "backlog": backlog}))


if __name__ == "__main__":
    sys.path[:0] = [str(Path(__file__).resolve().parents[3]), str(Path(__file__).parent)]
    main(Path(sys.argv[1]), int(sys.argv[2]))
