"""benchmarks/poll_sweep.py at a tiny size: it runs, reads everything and reports its figures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "poll_sweep.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("poll_sweep_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_poll_sweep_smoke() -> None:
    result = load().run(devices=3, registers=20, n=1)
    assert result["figure"] == "poll_sweep"
    assert result["requests_per_sweep"] == 3
    assert result["baseline_requests_per_sweep"] == 60
    assert isinstance(result["speedup"], float) and result["speedup"] > 0
    assert isinstance(result["gateway_rss_mb"], float) and result["gateway_rss_mb"] > 0
