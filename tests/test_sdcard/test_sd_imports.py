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
