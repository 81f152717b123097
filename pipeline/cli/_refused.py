"""An import finder that refuses a package, for commands that keep a library's optional imports
out of their process (pyarrow and DuckDB take pandas, pyarrow takes numpy, whenever they are
installed; both take a failed import as the package not installed)."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType


class RefusedImport:
    """On `sys.meta_path`: `import <package>` (and its submodules) fails as if not installed."""

    def __init__(self, package: str, by: str) -> None:
        self.package = package
        self.by = by

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if name == self.package or name.startswith(self.package + "."):
            raise ModuleNotFoundError(f"{name} is not loaded by {self.by}", name=name)
        return None
