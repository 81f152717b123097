"""The demo's web port from its very first start (docs/web.md, docs/cli.md `sunpm run`).

On a host where 8080 belongs to something else, the installer writes `WEB_Port` into
`DATA/config/CONFIG/SUNPMDEMO_config.ini` before the first `sunpm run`. That folder was taken
for a configuration of the user's: the gateway ran it as it stood (no devices, no server, no
demo plant) instead of creating the demo on that port.
"""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from config import load_site
from pipeline.service.demo import UID

ROOT = Path(__file__).resolve().parents[3]
START_LIMIT_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        into.put(line)


def test_a_web_port_written_before_the_first_start_is_the_demos_from_the_start(
        tmp_path: Path) -> None:
    data = tmp_path / "sunpm-data"
    port = _free_port()
    seed = data / "config" / "CONFIG" / f"{UID}_config.ini"
    seed.parent.mkdir(parents=True)
    seed.write_text(f"WEB_Port={port}\nLOG_Level=debug\n")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--data", str(data)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    said: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, said), daemon=True).start()
    printed: list[str] = []
    try:
        deadline = time.monotonic() + START_LIMIT_S
        while not any(line.startswith("Web UI on ") for line in printed):
            left = deadline - time.monotonic()
            assert left > 0 and proc.poll() is None, "".join(printed)
            try:
                printed.append(said.get(timeout=min(left, 1.0)))
            except queue.Empty:
                continue
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    text = "".join(printed)
    assert f"Web UI on http://127.0.0.1:{port}/" in text, text
    assert f"sunpm demo created in {data}" in text, text
    settings = load_site(data / "config").settings
    # The demo's own configuration, with the keys written before it kept.
    assert settings.web_port == port
    assert settings.log_level == "debug"
    assert settings.servers[0].type == "dir"
    assert (data / "demo.json").is_file()
