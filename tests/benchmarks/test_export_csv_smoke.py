"""Smoke test of benchmarks/export_csv.py at a tiny size: it runs and prints its two JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_export_csv_benchmark_prints_one_line_per_baseline() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "export_csv.py"), "--devices", "2",
         "--variables", "12", "--period", "3600", "--runs", "1"],
        capture_output=True, text=True, timeout=120, check=True, cwd=ROOT)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["baseline"] for line in lines] == [
        "stdlib csv + gzip writer of the same text", "raw gzip (zlib level 6) of the same text"]
    for line in lines:
        assert line["figure"] == "export_csv" and line["unit"] == "s" and line["n"] == 1
        assert line["ours"] > 0 and line["theirs"] > 0
        assert line["speedup"] == pytest.approx(line["theirs"] / line["ours"], rel=0.02, abs=0.002)
        assert line["records"] == 2 * 12 * 24
