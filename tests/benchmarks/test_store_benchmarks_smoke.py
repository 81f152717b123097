"""benchmarks/store_append.py, store_open.py and store_query.py at a tiny size: each runs end to
end, measures both sides and reports its figure in the STYLE.md §10 shape."""

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
    for key in ("ours", "theirs", "speedup"):
        assert isinstance(result[key], (int, float)) and result[key] > 0, key  # type: ignore[operator]


def test_store_append_smoke() -> None:
    result = load_benchmark("store_append").run(devices=4, rows=5, steps=4, theirs_steps=2,
                                                flush_s=0.02, n=1)
    _shape(result, "store_append", "records/s")
    assert result["records_ours"] == 4 * 5 * 3
    # The speedup comes from the unrounded medians; the printed rates are rounded to integers, so
    # recomputing it from them may differ in the last printed digit.
    assert result["speedup"] == pytest.approx(result["ours"] / result["theirs"], abs=0.011)


def test_store_open_smoke() -> None:
    result = load_benchmark("store_open").run(devices=10, device_mb=0.1, seal_bytes=32 * 1024,
                                              variables=5, n=1)
    _shape(result, "store_open", "s")
    assert result["torn_tails_cut"] == 1  # device 10 of 10 carries the planted torn tail


def test_store_query_smoke() -> None:
    result = load_benchmark("store_query").run(devices=2, days=2, period_s=7200, variables=3, n=1)
    _shape(result, "store_query", "s")
    assert result["rows"] == 2 * 2 * 12 * 3


def test_store_benchmark_prints_one_json_line() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "store_query.py"), "--quick"],
                          capture_output=True, text=True, check=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["figure"] == "store_query"
