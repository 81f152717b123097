"""`sdcard` imports `fsio`, `config`, `store`, `exporters.views` and `exporters.rendering` only
(docs/architecture.md §2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, pkgutil, importlib, sys
import sdcard
for info in pkgutil.iter_modules(sdcard.__path__):
    importlib.import_module(f"sdcard.{info.name}")
ours = ("fsio", "config", "store", "exporters", "pipeline", "sdcard")
print(json.dumps(sorted(m for m in sys.modules if m.partition(".")[0] in ours)))
"""


def test_sdcard_imports_config_store_views_and_rendering_only() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    modules = json.loads(done.stdout)
    assert "sdcard.mirror" in modules and "sdcard.ingest" in modules
    foreign = [m for m in modules if not m.startswith(("fsio", "config", "store",
                                                       "exporters.views", "exporters.rendering",
                                                       "sdcard"))
               and m != "exporters"]
    assert foreign == []


_RUN = """
import json, runpy, sys
sys.argv = ["sunpm", "sd", "sql", sys.argv[1], "SELECT count(*) AS n FROM records",
            "--format", "csv"]
try:
    runpy.run_module("pipeline.cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": sorted(m for m in sys.modules if "." not in m)}))
"""


def test_sd_sql_loads_neither_the_other_commands_nor_pandas_nor_numpy(tmp_path: Path) -> None:
    # Start-up is most of a small query's time: the command's own family only (no drivers,
    # transports or exporters), and pandas, which pyarrow and DuckDB load only to recognise
    # DataFrames, and numpy, which pyarrow loads when installed, refused in a process of its
    # own.
    (tmp_path / "devices").mkdir()
    (tmp_path / "journal").mkdir()
    done = subprocess.run([sys.executable, "-c", _RUN, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    answer, _, last = done.stdout.rstrip().rpartition("\n")
    ran = json.loads(last)
    assert ran["code"] == 0, done.stderr
    assert answer == "n\n0"
    assert {"pandas", "numpy", "pymodbus", "aiohttp", "asyncssh", "polars", "exporters"} \
        .isdisjoint(ran["loaded"])
    assert {"duckdb", "pyarrow", "store", "sdcard"} <= set(ran["loaded"])
