"""benchmarks/retention.py at a tiny quota: the store fills it, deletes its oldest segments, and
the line compares the days held with the box's."""

from __future__ import annotations

from _bench_load import load_benchmark


def test_retention_smoke() -> None:
    (line,) = load_benchmark("retention").run((600,), quota=256 * 1024, after_days=1)
    assert line["figure"] == "retention" and line["period_s"] == 600
    assert isinstance(line["days_held"], float) and line["days_held"] > 1
    assert isinstance(line["box_days_held"], float) and line["box_days_held"] > 0
    assert isinstance(line["speedup"], float) and line["speedup"] > 0
    assert 0 < float(line["bytes_on_flash_per_value"]) < 20  # type: ignore[arg-type]
    assert isinstance(line["peak_rss_mb"], float) and line["peak_rss_mb"] > 0
