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


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(folder: Path, devices: int) -> None:
    from pipeline.cli import run

    run._lean_imports()
    run._fewer_malloc_arenas()
    run._arrow_on_malloc()
    from probe_support import period_records, status_mib, submit_days
    from web_support import running_gateway

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

        asyncio.run_coroutine_threadsafe(submit_days(
            store, devices, DAYS, PERIOD_S, CHUNK, lambda first, count: period_records(
                def_id, start_ns, PERIOD_S, VARIABLES, first, count)), gateway.loop).result(300)
        with gateway.client() as client:
            Path("/proc/self/clear_refs").write_text("5")      # VmHWM from here on
            rest = status_mib("VmRSS:")
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
            peak = status_mib("VmHWM:")
    backlog = status.json()["servers"][0]["backlog"]
    print(json.dumps({"size": size, "rest_mib": rest, "peak_mib": peak, "backlog": backlog}))


if __name__ == "__main__":
    sys.path[:0] = [str(Path(__file__).resolve().parents[3]), str(Path(__file__).resolve().parents[2]),
                    str(Path(__file__).parent)]
    main(Path(sys.argv[1]), int(sys.argv[2]))
