"""A re-export with `config`, `store`, `fsio`, `exporters.views` and `exporters.rendering` only
gives the delivered bytes.

What the offline card re-export (`sdcard`, docs/architecture.md §2) will do: open the store
read-only, replay the delivery state, plan and render the range. It runs in a fresh interpreter that
never imports the outbox, a session, a transport or `pipeline`, and must write every delivered file
byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from delivery_support import DAY, NS, T0
from test_export import deliver_three_days, tree_files

ROOT = Path(__file__).resolve().parents[3]

_REEXPORT = """
import asyncio, json, sys
from pathlib import Path

from config import load_site
from exporters.rendering.backfill import plan_backfill, render_backfill
from exporters.rendering.source import store_source
from store import Log
from store.delivery import FILE_SERVER_STREAMS, DeliveryState

store_dir, cfg, out, start_ns, end_ns = sys.argv[1:6]

async def main() -> int:
    log = await Log.open(Path(store_dir), read_only=True)
    try:
        source = store_source(log, load_site(Path(cfg)), 1)
        state = DeliveryState.from_table(log.journal(kinds=["state", "window", "delivered"]))
        plan = plan_backfill(state, source, server=1, streams=FILE_SERVER_STREAMS,
                             start_ns=int(start_ns), end_ns=int(end_ns))
        written = 0
        for files in render_backfill(source, plan):
            for f in files:
                path = Path(out) / f.rendered.directory.strip("/") / f.rendered.name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(f.rendered.data)
                written += 1
        return written
    finally:
        await log.close()

written = asyncio.run(main())
ours = ("fsio", "config", "store", "exporters", "pipeline", "sdcard")
foreign = sorted(m for m in sys.modules
                 if m.partition(".")[0] in ours and m != "exporters"
                 and not m.startswith(("fsio", "config", "store", "exporters.views",
                                       "exporters.rendering")))
print(json.dumps({"written": written, "foreign": foreign}))
"""


def test_offline_reexport_through_views_alone_writes_the_delivered_files(tmp_path: Path) -> None:
    server, store_dir, cfg = asyncio.run(deliver_three_days(tmp_path))
    delivered = tree_files(server)
    out = tmp_path / "offline"
    # The range of the delivered windows exactly: nothing new to cut.
    done = subprocess.run(
        [sys.executable, "-c", _REEXPORT, str(store_dir), str(cfg), str(out), str(T0 * NS),
         str((T0 + 3 * DAY - 1200) * NS)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["foreign"] == []
    assert report["written"] == len(delivered) > 0
    assert tree_files(out) == delivered
