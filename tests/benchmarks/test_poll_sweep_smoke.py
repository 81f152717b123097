"""benchmarks/poll_sweep.py at a tiny size: it runs, reads everything and reports its figures."""

from __future__ import annotations

from _bench_load import load_benchmark


def test_poll_sweep_smoke() -> None:
    result = load_benchmark("poll_sweep").run(devices=3, registers=20, n=1)
    assert result["figure"] == "poll_sweep"
    assert result["requests_per_sweep"] == 3
    assert result["baseline_requests_per_sweep"] == 60
    assert isinstance(result["speedup"], float) and result["speedup"] > 0
    assert isinstance(result["gateway_rss_mb"], float) and result["gateway_rss_mb"] > 0
