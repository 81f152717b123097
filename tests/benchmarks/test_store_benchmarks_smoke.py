"""benchmarks/store_append.py, store_open.py and store_query.py at a tiny size: each runs end to
end, measures both sides and reports its figures in the docs/style.md §10 shape."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _bench_load import ROOT, load_benchmark


def _shape(result: dict[str, object], figure: str, unit: str) -> None:
    assert result["figure"] == figure
    assert result["unit"] == unit
    assert isinstance(result["baseline"], str) and result["baseline"]
    for key in ("ours", "theirs", "speedup", "peak_rss_mb", "theirs_peak_rss_mb"):
        assert isinstance(result[key], (int, float)) and result[key] > 0, key  # type: ignore[operator]


def test_store_append_smoke() -> None:
    group, per_batch = load_benchmark("store_append").run(
        devices=4, rows=5, steps=4, per_batch_steps=2, flush_s=0.02, n=1)
    for line in (group, per_batch):
        _shape(line, "store_append", "records/s")
        assert line["records_ours"] == 4 * 5 * 3
        # The speedup comes from the unrounded medians; the printed rates are rounded to
        # integers, so recomputing it from them may differ in the last printed digit.
        assert line["speedup"] == pytest.approx(line["ours"] / line["theirs"], abs=0.011)
    assert "group commit" in group["baseline"] and group["records_theirs"] == 4 * 5 * 3
    assert group["target_speedup"] == 2.0
    assert sum(group["theirs_commits"]) >= 1
    assert "one INSERT per arriving batch" in per_batch["baseline"]
    assert per_batch["records_theirs"] == 4 * 5 * 2


def test_store_open_smoke() -> None:
    result = load_benchmark("store_open").run(devices=10, device_mb=0.1, seal_bytes=32 * 1024,
                                              variables=5, n=3)
    _shape(result, "store_open", "s")
    assert result["torn_tails_cut"] == 1  # device 10 of 10 carries the planted torn tail
    assert len(result["ours_s"]) == len(result["theirs_s"]) == 3


def test_store_query_smoke(monkeypatch: pytest.MonkeyPatch) -> None:
    store_query = load_benchmark("store_query")
    # The cold path runs, but a smoke test does not empty the page cache of a shared box.
    monkeypatch.setattr(store_query, "drop_page_cache", lambda: "smoke test")
    cold, warm = store_query.run(devices=2, days=2, period_s=7200, variables=3, n=1)
    for line in (cold, warm):
        _shape(line, "store_query", "s")
        assert line["rows"] == 2 * 2 * 12 * 3
        assert 0 < line["ours_peak_anon_mb"] <= line["peak_rss_mb"]
    assert cold["page_cache"] == "not dropped (smoke test)" and warm["page_cache"] == "warm"


def test_store_query_devices_hold_distinct_data(tmp_path: object) -> None:
    store_query = load_benchmark("store_query")
    a, _ = store_query._day_records(1, 0, 3600, 4)
    b, _ = store_query._day_records(2, 0, 3600, 4)
    assert a.column("value") != b.column("value")


def test_store_benchmark_prints_its_json_lines() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "store_query.py"), "--quick",
                           "--no-cold"], capture_output=True, text=True, check=True, timeout=120)
    lines = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert [(line["figure"], line["page_cache"]) for line in lines] == [("store_query", "warm")]
