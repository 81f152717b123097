"""`tests/` on sys.path (as the test helpers' scripts put it) must never shadow a package of ours.

A folder without `__init__.py` is a namespace package: with `tests/` first on sys.path and the
packages installed in editable mode (found by a meta-path finder, after sys.path), `tests/config`
used to be imported instead of `config`. Test folders are therefore named `test_<package>`.
"""

from __future__ import annotations

import importlib.machinery
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent
ROOT = TESTS.parent
PACKAGES = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())


def test_the_repository_has_the_packages_this_test_guards() -> None:
    assert {"config", "store", "exporters", "pipeline"} <= set(PACKAGES)


def test_tests_folder_offers_nothing_under_a_package_name() -> None:
    shadowing = [name for name in PACKAGES
                 if importlib.machinery.PathFinder.find_spec(name, [str(TESTS)]) is not None]
    assert shadowing == [], f"tests/ shadows {shadowing}: name the folder test_<package>"


def test_a_script_with_tests_first_on_sys_path_imports_the_real_packages() -> None:
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import importlib; "
            "print('\\n'.join(str(importlib.import_module(n).__file__) for n in sys.argv[2:]))")
    done = subprocess.run([sys.executable, "-c", code, str(TESTS), *PACKAGES], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    files = done.stdout.split()
    assert files == [str(ROOT / name / "__init__.py") for name in PACKAGES], done.stdout
