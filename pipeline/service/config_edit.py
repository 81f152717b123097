"""Local configuration changes made by the gateway itself (web UI, API): checked whole, written
all or nothing.

    change = {"CONFIG/<uid>_daq.csv": new bytes, "DEF/new.csv": bytes}
    apply_change(config_dir, uid, change, create_only={"DEF/new.csv"})

The running configuration with the change laid over it is validated by `config` in a copy of the
configuration folder; any error rejects the whole change (`ChangeRejected`, every problem with
its file, line and field) and nothing is written. An accepted change is written with
`exporters.session.apply_config_files` (staged `.new` files and a roll-forward marker), so a power
cut leaves the old set or the new one. `create_only` paths must not exist yet: the change never
overwrites them. The gateway's configuration watch then applies it as any local change
(docs/behaviour.md §4.1).

One change at a time per folder (`config_lock`, also held by the web UI's configuration and
device forms), so two requests never read the same daq.csv and both write their version.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Collection, Mapping
from pathlib import Path

from config import Problem, Severity, check_site_change
from config.errors import SunpmError
from exporters.session.config_apply import apply_config_files

__all__ = ["ChangeRejected", "apply_change", "check_change", "config_lock"]

_LOCKS: dict[Path, asyncio.Lock] = {}


class ChangeRejected(SunpmError):
    """A change that would make the configuration invalid, or overwrite a file."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def config_lock(config_dir: Path) -> asyncio.Lock:
    """The lock every local change of `config_dir` holds from reading to writing."""
    return _LOCKS.setdefault(config_dir.resolve(), asyncio.Lock())


def check_change(config_dir: Path, uid: str, change: Mapping[str, bytes],
                 create_only: Collection[str] = ()) -> list[Problem]:
    """Every problem of the configuration with `change` applied (warnings included); blocking."""
    problems: list[Problem] = []
    for rel in sorted(create_only):
        if (config_dir / rel).exists():
            folder, _, name = rel.rpartition("/")
            problems.append(Problem(file=name, line=None, field="file",
                                    message=f"already exists in /{folder}; not overwritten",
                                    severity=Severity.ERROR))
    return problems + check_site_change(config_dir, change, uid)


def apply_change(config_dir: Path, uid: str, change: Mapping[str, bytes],
                 create_only: Collection[str] = (), *,
                 folder_lock: threading.Lock | None = None) -> list[Problem]:
    """Validate and write `change`; its warnings. Raises `ChangeRejected`; blocking.

    `folder_lock` is the running gateway's (`Gateway.config_lock`): held while the files are
    renamed into place, so the gateway never loads a change half applied."""
    problems = check_change(config_dir, uid, change, create_only)
    errors = [p for p in problems if p.severity is Severity.ERROR]
    if errors:
        raise ChangeRejected(errors)
    if change:
        with folder_lock or contextlib.nullcontext():
            apply_config_files(config_dir, change)
    return problems
