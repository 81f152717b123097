"""A month of `DEVICES` inverters in a store, then what a gateway's first session asks of it:
the time of the oldest record not yet delivered (`StoreSource.oldest_ns`, DATA). Two steps, each
a process of its own set up as `sunpm run` sets up its process (no pandas, Arrow on the C heap,
two malloc arenas), so the second starts as a gateway restarted on that store does:

    python tests/test_exporters/delivery/oldest_memory_probe.py fill FOLDER DEVICES
    python tests/test_exporters/delivery/oldest_memory_probe.py oldest FOLDER

`oldest` prints one JSON line: the oldest time, the resident size once the store is open and
the peak while the question was answered (MiB, VmHWM reset just before).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

NS = 1_000_000_000
DAYS = 30
PERIOD_S = 10                     # DAQ_AcqPeriod 10 s: 259,200 records a device
VARIABLES = (4, 6, 8, 10, 12, 14, 16)
CHUNK = 4_000                     # records an append
START_NS = 1_780_000_000 * NS


async def fill(folder: Path, devices: int) -> None:
    from probe_support import period_records, submit_days

    from store import Log, StoreOptions

    async with await Log.open(folder, StoreOptions(flush_s=0.05)) as store:
        await submit_days(store, devices, DAYS, PERIOD_S, CHUNK, lambda first, count: (
            period_records("d" * 64 + ":inverter.csv", START_NS, PERIOD_S, VARIABLES, first,
                           count)))


async def oldest(folder: Path) -> None:
    from probe_support import status_mib

    from exporters.rendering.source import SnapshotResolver, StoreSource
    from store import Log, StoreOptions
    from store.delivery import Stream

    unused: Any = None
    async with await Log.open(folder, StoreOptions()) as store:
        source = StoreSource(log=store, server=unused, view_config=unused,
                             parse_definition=unused, snapshots=SnapshotResolver(running=""))
        rest = status_mib("VmRSS:")
        Path("/proc/self/clear_refs").write_text("5")      # VmHWM from here on
        found = await asyncio.to_thread(source.oldest_ns, Stream.DATA)
        peak = status_mib("VmHWM:")
    print(json.dumps({"oldest_ns": found, "rest_mib": rest, "peak_mib": peak}))


def main(step: str, folder: Path, devices: int) -> None:
    from pipeline.cli import run

    run._lean_imports()
    run._fewer_malloc_arenas()
    run._arrow_on_malloc()
    asyncio.run(fill(folder, devices) if step == "fill" else oldest(folder))


if __name__ == "__main__":
    sys.path[:0] = [str(Path(__file__).resolve().parents[3]), str(Path(__file__).resolve().parents[2])]
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
