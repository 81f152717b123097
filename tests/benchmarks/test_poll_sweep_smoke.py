"""benchmarks/poll_sweep.py at a tiny size: it runs against devices answering late, reads
everything on every side and reports one line per baseline with wall and CPU seconds."""

from __future__ import annotations

import pytest
from _bench_load import load_benchmark

poll_sweep = load_benchmark("poll_sweep")


def test_poll_sweep_smoke() -> None:
    delay = (0.004, 0.006)
    lines = poll_sweep.run(devices=3, registers=20, n=1, latency_s=delay, naive_devices=2)
    assert [line["baseline"] for line in lines] == [
        "pymodbus, coalesced block reads, all devices concurrent (asyncio.gather)",
        "pymodbus, coalesced block reads, devices one after another",
        "naive: pymodbus, one read per variable, devices one after another"]
    concurrent, sequential, naive = lines
    for line in lines:
        assert line["figure"] == "poll_sweep" and line["unit"] == "s" and line["n"] == 1
        assert line["requests_per_sweep"] == 3
        assert line["ours"] > 0 and line["theirs"] > 0
        assert line["speedup"] == pytest.approx(line["theirs"] / line["ours"], rel=0.05)
        assert line["ours_cpu_s"] > 0 and line["theirs_cpu_s"] > 0
        assert line["peak_rss_mb"] > 0 and line["theirs_peak_rss_mb"] > 0
    assert concurrent["baseline_requests_per_sweep"] == 3
    assert naive["baseline_requests_per_sweep"] == 60
    assert naive["theirs_devices_timed"] == 2 and naive["theirs_scaled_by"] == 1.5
    # The devices answer late: one after another costs at least the sum of the delays, and
    # concurrent sides wait at least for the slowest device.
    delays = poll_sweep.device_delays(3, delay)
    assert sequential["theirs"] >= sum(delays) * 0.99
    assert naive["theirs"] >= 20 * sum(delays) * 0.99
    assert concurrent["ours"] >= max(delays) * 0.99


def test_latency_parsing() -> None:
    assert poll_sweep.parse_latency("5-30") == (0.005, 0.030)
    assert poll_sweep.parse_latency("0") == (0.0, 0.0)
    with pytest.raises(ValueError, match="LOW-HIGH"):
        poll_sweep.parse_latency("30-5")
    delays = poll_sweep.device_delays(254, (0.005, 0.030))
    assert min(delays) >= 0.005 and max(delays) <= 0.030 and len(set(delays)) > 200
