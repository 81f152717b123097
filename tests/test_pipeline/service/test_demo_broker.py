"""The demo's mosquitto dies with the gateway, however the gateway exits.

A second Ctrl-C or the stop guard ends the process with `os._exit` (docs/cli.md, `sunpm run`),
skipping the clean stop that terminates the broker; the broker must not outlive it, holding a
port and running forever.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None,
                                reason="mosquitto is not installed")

_CHILD = """
import asyncio, os, sys
from pathlib import Path
from pipeline.service.demo import mosquitto

async def main() -> None:
    async with mosquitto(Path(sys.argv[1])) as port:
        print(port, flush=True)
        sys.stdin.readline()
        os._exit(1)  # as _force_exit: no clean stop

asyncio.run(main())
"""


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_broker_stops_when_the_gateway_exits_without_its_clean_stop(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "mosquitto")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[3])
    assert child.stdout is not None and child.stdin is not None
    port = int(child.stdout.readline())
    assert _listening(port)
    child.stdin.write("\n")
    child.stdin.flush()
    assert child.wait(10) == 1
    deadline = time.monotonic() + 5
    while _listening(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _listening(port), "the demo's mosquitto outlived the gateway"
