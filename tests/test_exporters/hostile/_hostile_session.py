"""One server-1 session in a process of its own, so its memory can be measured and bounded.

    python _hostile_session.py SPEC_JSON

SPEC_JSON: `store`, `config` (configuration directory), `cert`, `uid`, `server` (ServerSettings
fields, `type` as text), `timeouts` (`connect_s`, `operation_s`), `cut_s`, `guard_mb` (RLIMIT_AS,
so a runaway session dies instead of the machine). Prints one JSON line: the SessionResult
fields, `session_mb` (what the session added to the process: its peak resident memory minus the
resident memory just before it, the peak reset through /proc/self/clear_refs), `peak_rss_mb`
(the whole process, imports included), `logs` (every sunpm log line), `received` (commands
handed over), `results` (error text or result of every journaled result).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "delivery"))

from delivery_support import DemoSource

from config import check_site_change
from config.model import ServerSettings, ServerType
from exporters.outbox import Outbox
from exporters.session import CollectingHandler, FileServerSession, Trigger
from exporters.transports import FileTransport, Timeouts, open_transport
from store import Log, StoreOptions
from store.delivery import Stream


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


async def run(spec: dict[str, object]) -> dict[str, object]:
    server = dict(spec["server"])  # type: ignore[call-overload]
    server["type"] = ServerType(server["type"])
    settings = ServerSettings(slot=1, **server)
    store_dir = Path(str(spec["store"]))
    log = await Log.open(store_dir, StoreOptions(flush_s=0.05))
    try:
        transport = open_transport(settings, Path(str(spec["cert"])),
                                   timeouts=Timeouts(**spec["timeouts"]))  # type: ignore[arg-type]
        assert isinstance(transport, FileTransport)
        uid = str(spec["uid"])
        outbox = Outbox(server=1, log=log, source=DemoSource(log, uid),
                        directory=store_dir / "outbox" / "1", streams=(Stream.ALARM, Stream.DATA))
        handler = CollectingHandler(log)
        session = FileServerSession(settings=settings, uid=uid, transport=transport,
                                    outbox=outbox, log=log, config_dir=Path(str(spec["config"])),
                                    validate=lambda d, c: check_site_change(d, c, uid), commands=handler)
        base_kb = _status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
        result = await session.run(Trigger.SCHEDULE, started=datetime.fromtimestamp(
            int(spec["cut_s"]), UTC))  # type: ignore[call-overload]
        session_kb = _status_kb("VmHWM") - base_kb
        bodies = log.journal(kinds=["result"]).sort_by("seq").column("body").to_pylist()
        results = [json.loads(body) for body in bodies]
    finally:
        await log.close()
    return {"ok": result.ok, "reason": result.reason, "retriable": result.retriable,
            "files": result.files, "commands": result.commands,
            "received": [c.rpc_name for c in handler.received], "session_mb": session_kb / 1024,
            "results": [r.get("error", r.get("result")) for r in results]}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def main() -> None:
    spec = json.loads(sys.argv[1])
    guard = int(spec["guard_mb"]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (guard, guard))
    lines = _Lines()
    logging.getLogger("sunpm").addHandler(lines)
    logging.getLogger("sunpm").setLevel(logging.INFO)
    out = asyncio.run(run(spec))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["logs"] = lines.lines
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
