"""`exporters.views` and `exporters.rendering` import `config`, `store` and themselves only
(docs/architecture.md §2).

The offline re-export (`sdcard`) may import nothing else of ours, and it shares the window
planning and rendering (`exporters.rendering`) and the views with the outbox and `sunpm export`;
a module that pulled in the outbox, a session, a transport or the live gateway would break that
rule. Each module is imported in a fresh interpreter and `sys.modules` inspected after it.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import exporters.rendering
import exporters.views

ROOT = Path(__file__).resolve().parents[3]

#: Our top-level packages; anything else in `sys.modules` is the standard library or a dependency.
OURS = ("fsio", "config", "store", "exporters", "pipeline", "sdcard")

_PROBE = """
import importlib, json, sys
ours = {ours!r}
allowed = {allowed!r}
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


VIEWS = ("fsio", "config", "store", "exporters.views")
RENDERING = (*VIEWS, "exporters.rendering")


def foreign_imports(modules: list[str], allowed: tuple[str, ...] = RENDERING
                    ) -> dict[str, list[str]]:
    """Per module (imported in this order), the modules of ours outside `config`, `store` and
    `exporters.views` its import brought in."""
    code = _PROBE.format(ours=OURS, modules=modules, allowed=allowed)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, list[str]] = json.loads(done.stdout)
    return result


def modules_of(package: object) -> list[str]:
    name = package.__name__  # type: ignore[attr-defined]
    return sorted(f"{name}.{m.name}" for m in pkgutil.iter_modules(package.__path__))  # type: ignore[attr-defined]


def test_views_hold_no_store_reader_and_rendering_holds_the_window_source() -> None:
    views = modules_of(exporters.views)
    for name in ("journaled", "render", "backfill", "events"):
        assert f"exporters.views.{name}" not in views
    assert {"exporters.rendering.source", "exporters.rendering.backfill"} <= set(
        modules_of(exporters.rendering))


def test_no_views_module_imports_outbox_session_transports_or_pipeline() -> None:
    found = foreign_imports(["exporters.views", *modules_of(exporters.views)], VIEWS)
    assert found == {}, f"exporters.views may import config, store and itself only: {found}"


@pytest.mark.parametrize("module", ["exporters.rendering.backfill", "exporters.rendering.source"])
def test_backfill_planning_and_rendering_alone_stay_inside_views_and_rendering(module: str) -> None:
    # Imported first and alone, as `sunpm sd reexport` would.
    assert foreign_imports([module]) == {}


def test_the_probe_sees_a_forbidden_import() -> None:
    # The sources module wires transports: the probe must report them, or it proves nothing.
    found = foreign_imports(["exporters.sources"])
    assert "exporters.transports" in found.get("exporters.sources", [])
