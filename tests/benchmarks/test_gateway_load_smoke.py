"""benchmarks/gateway_load.py at a tiny size: the real `sunpm run` and the naive baseline both
record every value of the steady window, the service logs no error and stops with exit 0, and
the figure line carries CPU per 1000 values and both sides' peak RSS."""

from __future__ import annotations

import pytest
from _bench_load import load_benchmark

pytestmark = pytest.mark.slow


def test_gateway_load_smoke() -> None:
    line = load_benchmark("gateway_load").run(4, 10, 2, 16.0)
    assert line["figure"] == "gateway_load" and line["devices"] == 4
    # 16 s at a 2 s period over 4 x 10 values: 320 values, give or take a period at each end.
    expected = 4 * 10 * 16 // 2
    for key in ("values_stored", "baseline_values_stored"):
        assert expected - 80 <= int(line[key]) <= expected + 80, line  # type: ignore[call-overload]
    assert line["exit_code"] == 0 and line["error_lines"] == 0
    assert isinstance(line["ours"], float) and line["ours"] > 0
    assert isinstance(line["speedup"], float) and line["speedup"] > 0
    assert isinstance(line["peak_rss_mb"], float) and 20 < line["peak_rss_mb"] < 1000
    assert isinstance(line["theirs_peak_rss_mb"], float) and line["theirs_peak_rss_mb"] > 0
