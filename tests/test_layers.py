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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fsio", "config", "store", "exporters", "pipeline", "sdcard")
_LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # The tree under test first on the path: grimp finds packages through the import system.
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-c", _LINT, "--no-cache", "--no-logo"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_import_contracts_are_kept() -> None:
    done = _lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 0 broken" in done.stdout, done.stdout


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
