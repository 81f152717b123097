"""`exporters.views` imports `config`, `store` and itself only (docs/architecture.md §2).

The offline re-export (`sdcard`) may import nothing else of ours, and it shares the window
planning and rendering of the views package with the outbox and `sunpm export`; a view module
that pulled in the outbox, a session, a transport or the live gateway would break that rule.
Each module is imported in a fresh interpreter and `sys.modules` inspected after it.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import exporters.views

ROOT = Path(__file__).resolve().parents[3]

#: Our top-level packages; anything else in `sys.modules` is the standard library or a dependency.
OURS = ("config", "store", "exporters", "pipeline", "sdcard")

_PROBE = """
import importlib, json, sys
ours = {ours!r}
allowed = ("config", "store", "exporters.views")
def foreign():
    out = []
    for name in sys.modules:
        top = name.partition(".")[0]
        if top not in ours or name == "exporters":
            continue
        if any(name == a or name.startswith(a + ".") for a in allowed):
            continue
        out.append(name)
    return sorted(out)
found = {{}}
for module in {modules!r}:
    before = set(foreign())
    importlib.import_module(module)
    new = sorted(set(foreign()) - before)
    if new:
        found[module] = new
print(json.dumps(found))
"""


def foreign_imports(modules: list[str]) -> dict[str, list[str]]:
    """Per module (imported in this order), the modules of ours outside `config`, `store` and
    `exporters.views` its import brought in."""
    code = _PROBE.format(ours=OURS, modules=modules)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, list[str]] = json.loads(done.stdout)
    return result


def views_modules() -> list[str]:
    return sorted(f"exporters.views.{m.name}"
                  for m in pkgutil.iter_modules(exporters.views.__path__))


def test_views_package_lists_the_window_modules() -> None:
    modules = views_modules()
    for name in ("windows", "journaled", "render", "backfill", "names"):
        assert f"exporters.views.{name}" in modules


def test_no_views_module_imports_outbox_session_transports_or_pipeline() -> None:
    found = foreign_imports(["exporters.views", *views_modules()])
    assert found == {}, f"exporters.views may import config, store and itself only: {found}"


@pytest.mark.parametrize("module", ["exporters.views.backfill", "exporters.views.render"])
def test_backfill_planning_and_rendering_alone_stay_inside_views(module: str) -> None:
    # Imported first and alone, as `sunpm sd reexport` would.
    assert foreign_imports([module]) == {}


def test_the_probe_sees_a_forbidden_import() -> None:
    # The sources module wires transports: the probe must report them, or it proves nothing.
    found = foreign_imports(["exporters.sources"])
    assert "exporters.transports" in found.get("exporters.sources", [])


#: Names that moved into `exporters.views`, by the old module that still re-exports them.
MOVED = {
    "exporters.outbox": {
        "exporters.views.windows": ["DAY_NS", "FILE_SERVER_STREAMS", "MQTT_STREAMS", "NS_PER_S",
                                    "BuiltWindow", "Membership", "OutboxFile", "PreviousWindow",
                                    "Rendered", "Stream", "WindowSource", "WindowSpec", "cut_of",
                                    "delivered_body", "event_delivered_body", "ns_to_datetime",
                                    "split_range"],
        "exporters.views.journaled": ["EXTRA_KEY", "OUTBOX_REDUCERS", "DeliveryState",
                                      "StreamDelivery", "delivery_state_of", "reduce_outbox"],
    },
    "exporters.sources": {
        "exporters.views.render": ["INTERFACES", "NS", "SiteViews", "SnapshotResolver",
                                   "SourceError", "StoreReader", "StoreSource",
                                   "gzip_with_text_sha", "membership_of", "store_source"],
        "exporters.views.windows": ["bounds_of"],
    },
    "exporters.backfill": {
        "exporters.views.backfill": ["BackfillError", "BackfillFile", "BackfillWindow",
                                     "RecordReader", "missing_records", "plan_backfill",
                                     "render_backfill"],
        "exporters.views.windows": ["split_backfill"],
    },
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_modules_re_export_the_moved_names_as_the_same_objects(old: str) -> None:
    old_module = importlib.import_module(old)
    for new, names in MOVED[old].items():
        new_module = importlib.import_module(new)
        for name in names:
            assert getattr(old_module, name) is getattr(new_module, name), f"{old}.{name}"
