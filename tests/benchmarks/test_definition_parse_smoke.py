"""Smoke test of benchmarks/definition_parse.py at its quick size: it runs, the baseline builds
the same variables as ours (else it exits non-zero), and it prints one line per baseline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_definition_parse_benchmark_prints_one_line_per_baseline() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "definition_parse.py"),
                           "--quick"], capture_output=True, text=True, timeout=120, check=True,
                          cwd=ROOT)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["baseline"] for line in lines] == [
        "stdlib csv + the same rules (first problem only)",
        "stdlib csv alone: split and trimmed, nothing checked"]
    for line in lines:
        assert line["figure"] == "definition_parse" and line["unit"] == "s"
        # At this size the rounded times are too coarse to recompute the speedup from.
        assert line["rows"] == 1000 and line["n"] == 1 and line["speedup"] > 0

