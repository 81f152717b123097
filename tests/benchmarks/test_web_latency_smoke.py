"""benchmarks/web_latency.py at a tiny size: the service answers every page, and the figures
come out in the docs/style.md §10 shape."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _bench_load import load_benchmark
from waiting import wait_until_sync

#: A first start says its one-time password, then listens, then says where.
_SERVICE = """import sys
print("Web UI one-time password for 'admin': x (also in initial-password)", flush=True)
sys.stdin.readline()
print("Web UI on http://127.0.0.1:9/", flush=True)
sys.stdin.readline()
"""


def test_web_latency_smoke() -> None:
    bench = load_benchmark("web_latency")
    lines = bench.run(3, 2)
    assert [line["page"] for line in lines] == list(bench.PAGES)
    for line in lines:
        assert line["figure"] == "web_latency" and line["devices"] == 3 and line["n"] == 2
        assert isinstance(line["ours"], float) and line["ours"] > 0
        assert isinstance(line["theirs"], float) and line["theirs"] > 0
        assert isinstance(line["peak_rss_mb"], float) and line["peak_rss_mb"] > 0
        assert int(line["bytes"]) > 0  # type: ignore[call-overload]


def test_the_service_is_ready_when_it_says_it_listens_not_at_its_password(
        tmp_path: Path) -> None:
    wait_serving = load_benchmark("web_latency").wait_serving
    out, err = tmp_path / "service.out", tmp_path / "service.err"
    with out.open("wb") as out_file, err.open("wb") as err_file:
        service = subprocess.Popen([sys.executable, "-c", _SERVICE], stdin=subprocess.PIPE,
                                   stdout=out_file, stderr=err_file)
    assert service.stdin is not None
    try:
        wait_until_sync(lambda: b"password" in out.read_bytes(), 30, what="the password said")
        with pytest.raises(RuntimeError, match="did not say"):
            wait_serving(service, out, err, "http://127.0.0.1:9", 1.0)
        service.stdin.write(b"listening\n")
        service.stdin.flush()
        wait_serving(service, out, err, "http://127.0.0.1:9", 30.0)
    finally:
        service.kill()
        service.wait(10)
        service.stdin.close()
