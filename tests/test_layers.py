"""The package table of docs/architecture.md §2, and the finer rules of the package READMEs, hold.

The contracts live in pyproject.toml (`[tool.importlinter]`) and are checked by import-linter,
which follows indirect chains as well: a room may not reach a forbidden one through a module it
is allowed to import. A copy of the tree with one forbidden import added shows that the check
bites.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("config", "store", "exporters", "pipeline", "sdcard")
_LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # The tree under test first on the path: grimp finds packages through the import system.
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-c", _LINT, "--no-cache", "--no-logo"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def _contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {c["id"]: c for c in config["tool"]["importlinter"]["contracts"]}


def test_the_import_contracts_are_kept() -> None:
    done = _lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 0 broken" in done.stdout, done.stdout


def test_every_room_of_exporters_but_views_is_forbidden_to_sdcard_and_views() -> None:
    rooms = {f"exporters.{p.stem if p.is_file() else p.name}"
             for p in (ROOT / "exporters").iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    rooms.discard("exporters.views")
    contracts = _contracts()
    for contract in ("sdcard-imports-config-store-views", "views-import-no-other-exporters-room"):
        forbidden = set(contracts[contract]["forbidden_modules"])
        assert rooms <= forbidden, (contract, sorted(rooms - forbidden))


def test_every_room_of_pipeline_but_drivers_is_forbidden_to_drivers() -> None:
    rooms = {f"pipeline.{p.stem if p.is_file() else p.name}"
             for p in (ROOT / "pipeline").iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    # The `Clock` a driver is to be given is a leaf of its own.
    rooms -= {"pipeline.drivers", "pipeline.clock"}
    forbidden = set(_contracts()["drivers-import-config-only"]["forbidden_modules"])
    assert rooms <= forbidden, sorted(rooms - forbidden)


def test_a_forbidden_import_breaks_the_contracts(tmp_path: Path) -> None:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.md"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    # The lowest room reaching the highest: config may import nothing of ours.
    (tmp_path / "config" / "_forbidden_probe.py").write_text("import pipeline.poller\n",
                                                               encoding="utf-8")
    done = _lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "config imports nothing of ours BROKEN" in done.stdout, done.stdout
    assert "config._forbidden_probe -> pipeline.poller" in done.stdout, done.stdout
